"""Which magnifications a query searches (all or one), and seed 000's scale comparator:
P(same magnification) of a query against each indexed magnification."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from cbir.errors import QueryError

if TYPE_CHECKING:
    from cbir.search.collection import Collection

#: Query tiles compared with each magnification's reference tiles.
QUERY_TILES = 4


log = logging.getLogger("cbir")


class ScaleSelector:
    """Resolves `--scale` for an opened bundle; loads the comparator on first use (on
    `device`) for `of_tiles`."""

    def __init__(self, col: Collection, device: str | None = "auto") -> None:
        self.col = col
        self.device = device
        self._model = None
        self._refs: dict[float, np.ndarray] | None = None
        self._ref_features = None
        self._learned = True  # the comparator's training verdict

    def select(self, scale: str) -> set[float] | None:
        """Magnifications to search (None: all) for `--scale` "all" or one magnification
        ("20x"). "auto" is refused: it searched no faster than "all" at the same found
        rate, since every magnification's hits come from one index (README)."""
        mags = self.col.magnifications
        text = scale.strip().lower()
        if text == "all":
            return None
        if text == "auto":
            raise QueryError(
                "--scale auto was removed (no faster than --scale all at the same found "
                "rate); use all or one magnification like 20x"
            )
        try:
            wanted = float(np.float32(float(text.rstrip("x"))))  # as stored (float32)
        except ValueError:
            raise QueryError(
                f"--scale {scale!r}: expected all or a magnification like 20x"
            ) from None
        if wanted not in mags:
            listed = ", ".join(f"{m:g}x" for m in mags)
            raise QueryError(f"--scale {scale}: not indexed in this bundle ({listed})")
        return {wanted}

    def of_tiles(self, tiles: np.ndarray) -> dict[str, float] | None:
        """The comparator's P(same magnification) of a query's (m, n, t, t, 3) tiles per
        indexed magnification ({"20x": p}); None when it did not learn (a verdict of its
        training), since chance-level numbers would mislead."""
        self._comparator()
        if not self._learned:
            log.warning("%s: the scale comparator did not learn", self.col.bundle.root)
            return None
        probs = self.probabilities(tiles)
        return {f"{m:g}x": round(p, 4) for m, p in sorted(probs.items())}

    def probabilities(self, tiles: np.ndarray) -> dict[float, float]:
        """Mean P(same scale) of the query tiles against each magnification's references."""
        import torch

        from cbir.nn.scale import pair_tensor

        model, device = self._comparator()
        refs = self._references()
        t = tiles.shape[2]
        flat = tiles.reshape(-1, t, t, 3)
        pick = np.unique(np.linspace(0, len(flat) - 1, min(QUERY_TILES, len(flat))).astype(int))
        q = flat[pick]
        out = {}
        with torch.inference_mode():
            if model.arch == "siamese":  # reference features are computed once per index
                fq = model.embed(pair_tensor(q, q, model.input_size)[:, :3].to(device))
                for mag, fr in self._reference_features(model, device).items():
                    fa = fq.repeat_interleave(len(fr), dim=0)
                    fb = fr.repeat(len(fq), 1)
                    out[mag] = float(torch.sigmoid(model.compare(fa, fb)).mean())
                return out
            for mag, ref in refs.items():
                a = np.repeat(q, len(ref), axis=0)
                b = np.tile(ref, (len(q), 1, 1, 1))
                logits = model(pair_tensor(a, b, model.input_size).to(device))
                out[mag] = float(torch.sigmoid(logits).mean())
        return out

    def _reference_features(self, model, device):  # type: ignore[no-untyped-def]
        """{mag: (r, c) features} of the reference tiles, computed on first use."""
        if self._ref_features is None:
            from cbir.nn.scale import pair_tensor

            self._ref_features = {
                mag: model.embed(pair_tensor(ref, ref, model.input_size)[:, :3].to(device))
                for mag, ref in self._references().items()
            }
        return self._ref_features

    def _references(self) -> dict[float, np.ndarray]:
        if self._refs is None:
            indexed = set(self.col.magnifications)
            refs = self.col.bundle.meta.reference_tiles()
            self._refs = {m: r for m, r in refs.items() if m in indexed}
            if not self._refs:
                raise QueryError(
                    f"{self.col.bundle.root}: bundle keeps no reference tiles "
                    "for the scale comparator (rebuild it with this cbir)"
                )
        return self._refs

    def _comparator(self):  # type: ignore[no-untyped-def]
        if self._model is None:
            path = self.col.bundle.scale_weights
            if path is None:
                raise QueryError(
                    f"{self.col.bundle.root}: no scale comparator in this bundle "
                    "(build it with --scale-weights from cbir train scale)"
                )
            from cbir.nn.device import resolve_device
            from cbir.nn.scale import ScaleComparator
            from cbir.nn.weights import load_weights

            spec, state = load_weights(path, "scale")
            self._learned = spec.get("verdict", {}).get("learned", True) is not False
            model = ScaleComparator(
                int(spec["width"]),
                input_size=int(spec["input_size"]),
                arch=str(spec.get("arch", "stacked")),
            )
            model.load_state_dict(state)
            device = resolve_device(self.device)
            self._model = (model.to(device).eval(), device)
        return self._model
