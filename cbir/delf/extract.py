"""DELF local feature extraction: image pyramid -> dense features + attention ->
receptive-field boxes -> NMS -> the top features by attention.

Keypoints are box centres in the input image's pixels; descriptors are the raw trunk
features, L2-normalised (PCA to 40-d comes after, fitted on the collection: `LocalPCA`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cbir.delf.nms import box_nms
from cbir.files import sha256_file
from cbir.nn.receptive import box_centres, receptive_boxes

if TYPE_CHECKING:  # torch is imported by the functions that run the network
    from cbir.nn.delf import DelfNet

#: The DELF pyramid: scales sqrt(2) apart from 1/4 to 2.
DEFAULT_SCALES = (0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0)
#: Local ids are (tile id << LOCAL_ID_BITS) | feature index, so a tile holds at most this.
LOCAL_ID_BITS = 10
MAX_FEATURES_LIMIT = 1 << LOCAL_ID_BITS


@dataclass
class LocalFeatures:
    """n local features of one image, highest attention first."""

    descriptors: np.ndarray  # (n, c) float32, L2-normalised
    xy: np.ndarray  # (n, 2) float32 keypoints (box centres), image pixels
    scales: np.ndarray  # (n,) float32 pyramid scale each feature came from
    attention: np.ndarray  # (n,) float32
    projected: bool = False  # descriptors already PCA-projected (LocalStage.project)

    def __len__(self) -> int:
        return len(self.xy)

    @classmethod
    def empty(cls, dim: int) -> LocalFeatures:
        z = np.zeros(0, np.float32)
        return cls(np.zeros((0, dim), np.float32), np.zeros((0, 2), np.float32), z, z.copy())

    def take(self, idx: np.ndarray) -> LocalFeatures:
        return LocalFeatures(
            self.descriptors[idx],
            self.xy[idx],
            self.scales[idx],
            self.attention[idx],
            self.projected,
        )


def load_delf(weights: str | Path | None, trunk: str = "resnet50") -> tuple[DelfNet, str | None]:
    """The network of a `cbir train delf` file, or seeded random weights for `trunk`;
    returns it with the file's sha256 (None without a file)."""
    from cbir.nn.delf import DelfNet, seeded_delf
    from cbir.nn.weights import WeightsError, load_weights

    if weights is None:
        return seeded_delf(trunk), None
    spec, state = load_weights(weights, "delf")
    net = DelfNet(str(spec["trunk"]), int(spec.get("hidden", 512)))
    sub = {k: v for k, v in state.items() if k.startswith(("trunk.", "attention."))}
    try:
        net.load_state_dict(sub)
    except RuntimeError as exc:
        raise WeightsError(f"{weights}: weights do not fit the DELF network ({exc})") from exc
    return net, sha256_file(Path(weights))


class DelfExtractor:
    """Local features of images or tiles with a DELF network (`cbir train delf` weights, or
    seeded random ones for `trunk` when there is no file)."""

    def __init__(
        self,
        weights: str | Path | None = None,
        trunk: str = "resnet50",
        scales: tuple[float, ...] | list[float] = DEFAULT_SCALES,
        iou: float = 0.8,
        max_features: int = 1000,
        batch_size: int = 8,
        max_side: int = 2048,
        device: str | None = "auto",
    ) -> None:
        if not 1 <= max_features <= MAX_FEATURES_LIMIT:
            raise ValueError(f"max_features must be in 1..{MAX_FEATURES_LIMIT}, got {max_features}")
        if not scales or any(not (s > 0 and math.isfinite(s)) for s in scales):
            raise ValueError(f"scales must be finite numbers > 0, got {list(scales)}")
        if not 0 < iou <= 1:
            raise ValueError(f"iou must be in (0, 1], got {iou}")
        from cbir.nn.device import for_inference, resolve_device

        self.net, self.weights_sha256 = load_delf(weights, trunk)
        self.device = resolve_device(device)
        for_inference(self.net, self.device)
        self.scales = tuple(sorted(float(s) for s in scales))
        self.iou = float(iou)
        self.max_features = int(max_features)
        self.batch_size = int(batch_size)
        self.max_side = int(max_side)

    @property
    def dim(self) -> int:
        return self.net.info.channels

    @property
    def spec(self) -> dict[str, object]:
        """What determines the features (stored in a bundle's manifest)."""
        return {
            "trunk": self.net.trunk_name,
            "dim": self.dim,
            "scales": list(self.scales),
            "iou": self.iou,
            "max_features": self.max_features,
            "weights_sha256": self.weights_sha256,
        }

    def extract(self, image: np.ndarray) -> LocalFeatures:
        """(h, w, 3) uint8 -> its local features."""
        return self.extract_batch(image[None])[0]

    def extract_batch(self, images: np.ndarray) -> list[LocalFeatures]:
        """(b, h, w, 3) uint8 images of one size -> local features of each."""
        return self.extract_batch_pooled(images, pooled=False)[0]

    def extract_batch_pooled(
        self, images: np.ndarray, pooled: bool = True
    ) -> tuple[list[LocalFeatures], np.ndarray | None]:
        """Local features of each image and, with `pooled`, the network's global
        descriptor of each (what `DelfNet.global_descriptor` gives: attention-pooled
        unit features at scale 1) from the same forward pass: (b, c) float32, or None
        when scale 1 is not one this extractor runs at these images' size."""
        from torch.nn import functional as F

        from cbir.delf.pooling import pooled_global
        from cbir.nn.cnn import to_tensor
        from cbir.nn.device import inference

        b, h, w = images.shape[:3]
        globals_: list[np.ndarray] = []
        if b == 0:
            return [], None
        per_image: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(b)]
        x_all = to_tensor(images, self.net.info.normalization)
        rf = self.net.info.receptive_field
        # scales whose image fits max_side; none fits: one scale shrinking it to max_side
        usable = [s for s in self.scales if max(h, w) * s <= self.max_side] or [
            self.max_side / max(h, w)
        ]
        with inference(self.device):
            for s in usable:
                hh, ww = max(16, round(h * s)), max(16, round(w * s))
                for i in range(0, b, self.batch_size):
                    xb = x_all[i : i + self.batch_size].to(self.device)
                    if (hh, ww) != (h, w):
                        xb = F.interpolate(
                            xb,
                            size=(hh, ww),
                            mode="bilinear",
                            align_corners=False,
                            antialias=hh < h,
                        )
                    f, a = self.net(xb)
                    f, a = F.normalize(f.float(), dim=1), a.float()
                    if pooled and s == 1.0 and (hh, ww) == (h, w):
                        globals_.append(pooled_global(f, a).float().cpu().numpy())
                    rows, cols = f.shape[2:]
                    boxes = receptive_boxes(rows, cols, 1.0, rf.size, rf.stride, rf.padding)
                    boxes = boxes / np.array([ww / w, hh / h, ww / w, hh / h], np.float32)
                    f_np = f.permute(0, 2, 3, 1).reshape(len(xb), rows * cols, -1).cpu().numpy()
                    a_np = a.reshape(len(xb), rows * cols).cpu().numpy()
                    for j in range(len(xb)):
                        per_image[i + j].append((f_np[j], boxes, a_np[j], s))
        g = np.concatenate(globals_).astype(np.float32) if globals_ else None
        return [self._select(parts) for parts in per_image], g

    def _select(self, parts: list[tuple[np.ndarray, ...]]) -> LocalFeatures:
        desc = np.concatenate([p[0] for p in parts]).astype(np.float32)
        boxes = np.concatenate([p[1] for p in parts])
        att = np.concatenate([p[2] for p in parts]).astype(np.float32)
        scl = np.concatenate([np.full(len(p[2]), p[3], np.float32) for p in parts])
        keep = top_nms(boxes, att, self.iou, self.max_features)
        return LocalFeatures(
            desc[keep], box_centres(boxes[keep]).astype(np.float32), scl[keep], att[keep]
        )


def top_nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_keep: int) -> np.ndarray:
    """The first `max_keep` boxes greedy NMS keeps, highest score first, computed on the
    top-scored boxes only: greedy NMS visits boxes in score order, so once `max_keep` are
    kept from a prefix the rest cannot change the result (the prefix doubles until then)."""
    order = np.argsort(-scores, kind="stable")
    pool = min(len(order), 4 * max_keep)
    while True:
        cand = order[:pool]
        kept = cand[box_nms(boxes[cand], scores[cand], iou, max_keep)]
        if len(kept) >= max_keep or pool == len(order):
            return kept
        pool = min(len(order), pool * 2)
