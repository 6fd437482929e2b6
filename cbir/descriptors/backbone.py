"""`backbone`: frozen features of any registered backbone (cbir.nn.backbones), pooled,
with no training: e.g. ImageNet EfficientNet-Lite0 from its packaged weights."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.network import run_batched
from cbir.files import sha256_file
from cbir.nn.backbones import backbone_entry, backbone_weights_file, loaded_backbone
from cbir.nn.cnn import normalise, to_tensor
from cbir.nn.cuda_graphs import graphed
from cbir.nn.device import for_inference, resolve_device
from cbir.nn.onnx_runtime import OnnxForward, cpu_engine, int8_runtime_check
from cbir.nn.quantize import CALIBRATION_BATCH, calibration_tiles
from cbir.specs import DescriptorSpec

log = logging.getLogger("cbir")

POOLINGS = ("avg", "gem", "avg+max")
#: Test-time views whose pooled features are averaged (see `views`).
TTAS = ("none", "quad", "rot90", "d4")
#: "int8": quantised and run by ONNX Runtime on the CPU (cbir.nn.quantize).
PRECISIONS = ("fp32", "int8")
#: Generalised-mean exponent of `gem` pooling.
GEM_P = 3.0


def _capture(local: threading.local, name: str):  # type: ignore[no-untyped-def]
    """A forward hook keeping a layer's output in `local.captured[name]` (the hook holds
    the thread-local store, not the descriptor: no reference cycle)."""

    def hook(module: torch.nn.Module, args: object, out: torch.Tensor) -> None:
        local.captured[name] = out

    return hook


def pool(fmap: torch.Tensor, pooling: str) -> torch.Tensor:
    """(n, c, h, w) non-negative feature map -> (n, c) ("avg", "gem") or (n, 2c) ("avg+max")."""
    if pooling == "avg":
        return fmap.mean(dim=(2, 3))
    if pooling == "gem":
        return fmap.clamp_min(1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1 / GEM_P)
    return torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=1)


def turned(x: torch.Tensor, k: int) -> torch.Tensor:
    """(n, c, h, w) turned k times by 90 degrees counterclockwise: torch.rot90(x, k,
    (2, 3)) written as flips and transposes, which ONNX exports (aten::rot90 it does not)."""
    for _ in range(k % 4):
        x = x.flip(3).transpose(2, 3)
    return x


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/90-degree rotations of (n, 3, h, w) square images."""
    rots = [turned(x, r) for r in range(4)]
    return rots + [r.flip(3) for r in rots]


def rotated_quadrants(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, s, s) square images -> the same with their quadrants (top-left, top-right,
    bottom-left, bottom-right; s // 2 px each) rotated in place by 0, 90, 180 and 270
    degrees: every orientation in one view, at the cost of one."""
    h = x.shape[3] // 2
    out = x.clone()
    for k, (r, c) in enumerate(((0, 0), (0, h), (h, 0), (h, h))):
        out[:, :, r : r + h, c : c + h] = turned(x[:, :, r : r + h, c : c + h], k)
    return out


def views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views of (n, 3, s, s) square images whose pooled features are averaged:
    "none" x; "quad" its `rotated_quadrants` (1x the cost); "rot90" x and x rotated by
    90 degrees (2x; rotating by 180 degrees or flipping gains less); "d4" its 8
    flips/rotations (8x)."""
    if tta == "d4":
        return dihedral(x)
    if tta == "rot90":
        return [x, turned(x, 1)]
    if tta == "quad":
        return [rotated_quadrants(x)]
    return [x]


@register_descriptor("backbone", learned=True)
class BackboneDescriptor:
    """Tiles -> pooled feature maps of a frozen backbone, (n, dim) float32.

    weights: a checkpoint in the backbone's layout (`--weights`); None takes the packaged
    pretrained file (EfficientNet-Lite0/1/2) or the seeded random initialisation.
    layers: names of sub-modules (e.g. "_blocks.7") whose outputs are pooled too, finest
    first; the last feature map comes last unless `final` is False. Each pooled block is
    L2-normalised and the concatenation divided by sqrt(blocks), so descriptors are unit
    vectors (spec params "blocks": the dims, "unit_norm": True).
    tta (histology has no up or down): "d4" the mean over the 8 flips/rotations of each
    tile, 8x the cost; "rot90" over the tile and its 90-degree rotation, 2x; "quad" one
    tile whose quadrants are rotated by 0/90/180/270 degrees, 1x (see `views`).
    precision: "fp32", or "int8": the network quantised (cbir.nn.quantize) and run by ONNX
    Runtime on the CPU whatever `device` is, about 3x faster there; index and queries
    then share that model (needs cbir's `fast` extra)."""

    def __init__(
        self,
        tile_size: int = 224,
        backbone: str = "efficientnet_lite0",
        weights: str | None = None,
        pooling: str = "avg",
        tta: str = "none",
        layers: tuple[str, ...] | list[str] = (),
        final: bool = True,
        batch_size: int = 32,
        device: str | None = "auto",
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        if tta not in TTAS:
            raise ValueError(f"tta {tta!r}; valid: {', '.join(TTAS)}")
        torch.manual_seed(0)
        self.device = resolve_device(device)
        path = backbone_weights_file(backbone, weights)
        self.net = for_inference(loaded_backbone(backbone, path, self.device), self.device)
        self.normalization = backbone_entry(backbone).normalization
        self.pooling, self.tta, self.batch_size = pooling, tta, batch_size
        self.precision = precision
        self.layers, self.final = list(layers), final
        if not self.layers and not final:
            raise ValueError("nothing to describe: no layers and final = false")
        self._local = threading.local()  # hooks fill a dict per thread: the indexer
        # describes batches from several threads with one descriptor
        modules = dict(self.net.named_modules())
        for name in self.layers:
            if name not in modules:
                raise ValueError(f"backbone {backbone!r} has no layer {name!r}")
            modules[name].register_forward_hook(_capture(self._local, name))
        blocks = self._block_dims(tile_size)
        # through a weak reference: the descriptor (and the graphs' GPU memory) stays
        # freeable by reference counting
        me, norm = weakref.ref(self), self.normalization
        self.graphs = graphed(lambda x: me()._forward(normalise(x, norm)), self.device)  # type: ignore[union-attr]
        self.spec = DescriptorSpec(
            name="backbone",
            dim=sum(blocks),
            tile_size=tile_size,
            params={
                "backbone": backbone,
                "pooling": pooling,
                "tta": tta,
                "layers": self.layers,
                "final": final,
                "blocks": blocks,
                "unit_norm": True,
                "weights_sha256": sha256_file(Path(path)) if path else "random-init-seed-0",
                **({"precision": precision} if precision != "fp32" else {}),
            },
        )
        #: OpenVINO or ONNX Runtime on the CPU (cbir.nn.onnx_runtime.cpu_engine), else
        #: None: PyTorch.
        self.onnx = self._onnx(tile_size)

    @property
    def runs_at(self) -> str | None:
        """ "bfloat16" when OpenVINO runs the network at bfloat16 (cbir.nn.precision),
        else None: the process's precision (cbir.nn.device.autocast_dtype)."""
        return "bfloat16" if self.onnx is not None and self.onnx.precision == "bf16" else None

    def _onnx(self, tile_size: int) -> OnnxForward | None:
        """This descriptor's `_forward` exported to ONNX and run by the runtime
        `cpu_engine` picks (OpenVINO or ONNX Runtime, on the CPU); None (PyTorch) when it
        picks none or the export fails. An int8 descriptor always runs in ONNX Runtime
        (on the CPU), or is refused."""
        int8 = self.precision == "int8"
        engine = ("onnx", "int8") if int8 else cpu_engine(self.device)
        if int8:
            int8_runtime_check()
        elif engine is None:
            return None
        me = weakref.ref(self)

        class Forward(torch.nn.Module):
            def __init__(self, net: torch.nn.Module) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return me()._forward(x)  # type: ignore[union-attr]

        what = json.dumps({**self.spec.params, "tile_size": tile_size}, sort_keys=True)
        key = "backbone-" + hashlib.sha256(what.encode()).hexdigest()[:24]
        example = torch.zeros(2, 3, tile_size, tile_size)
        norm = self.normalization

        def calibration() -> list[np.ndarray]:
            tiles = calibration_tiles(tile_size)
            return [
                to_tensor(tiles[i : i + CALIBRATION_BATCH], norm).numpy()
                for i in range(0, len(tiles), CALIBRATION_BATCH)
            ]

        try:
            return OnnxForward(
                Forward(self.net.cpu() if int8 else self.net),
                example,
                key,
                int8=calibration if int8 else None,
                engine=engine[0],
                precision=engine[1],
            )
        except Exception as exc:  # an op ONNX cannot express: PyTorch describes
            if int8:
                raise RuntimeError(f"int8 descriptor {key}: {exc}") from exc
            log.warning("ONNX Runtime unavailable for %s (%s); using PyTorch", key, exc)
            return None

    def _block_dims(self, tile_size: int) -> list[int]:
        with torch.inference_mode():
            probe = torch.zeros(1, 3, tile_size, tile_size, device=self.device)
            self._local.captured = {}
            self.net.feature_map(probe)
            for name, out in self._local.captured.items():
                if out.ndim != 4:
                    raise ValueError(
                        f"layer {name!r} gives a {tuple(out.shape)} output, not a feature map"
                    )
            return [int(p.shape[1]) for p in self._pooled(probe)]

    def _pooled(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(n, 3, h, w) -> each block's pooled features, L2-normalised."""
        self._local.captured = captured = {}
        final = self.net.feature_map(x)
        maps = [captured[name] for name in self.layers] + ([final] if self.final else [])
        return [F.normalize(pool(m, self.pooling), dim=1) for m in maps]

    def _features(self, b: np.ndarray) -> torch.Tensor:
        return self._forward(to_tensor(b, self.normalization, self.device))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, t, t) normalised tiles on the device -> (n, dim) unit vectors."""
        blocks = [
            F.normalize(torch.stack(parts).mean(0), dim=1)
            for parts in zip(*(self._pooled(v) for v in views(x, self.tta)), strict=True)
        ]
        return torch.cat(blocks, dim=1) / len(blocks) ** 0.5

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, dim) float32."""
        if self.onnx is not None:
            out = [
                self.onnx(to_tensor(tiles[i : i + self.batch_size], self.normalization).numpy())
                for i in range(0, len(tiles), self.batch_size)
            ]
            return np.concatenate(out) if out else np.zeros((0, self.spec.dim), np.float32)
        return run_batched(
            tiles, self.batch_size, self.spec.dim, self._features, self.device, self.graphs
        )
