"""Index recipes: `indexes/<name>.toml`, validated by pydantic, chosen by name."""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from cbir.errors import RecipeError, validation_line

DEFAULT_MAGNIFICATIONS = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TilingConfig(_Frozen):
    tile_size: int = Field(224, ge=16, le=65535)  # the LMDB grid header stores it in 16 bits
    #: Magnifications to tile at; a slide gets those it has without upsampling.
    magnifications: tuple[float, ...] = DEFAULT_MAGNIFICATIONS
    #: A tile is indexed when at least this fraction of it is tissue (0 indexes every tile).
    min_tissue_fraction: float = Field(0.5, ge=0.0, le=1.0)
    #: Output pixels between tile origins; below tile_size tiles overlap, so a crop at
    #: any offset has an indexed tile within stride / 2 px (None: tile_size). Must divide
    #: tile_size: (tile_size / stride)^2 times the tiles, index size and build time.
    stride: int | None = Field(None, ge=8)

    @field_validator("stride")
    @classmethod
    def _stride(cls, value: int | None, info: ValidationInfo) -> int | None:
        tile = info.data.get("tile_size", 224)
        if value is not None and (value > tile or tile % value):
            raise ValueError(f"stride {value} must divide the tile size {tile}")
        return None if value == tile else value

    @field_validator("magnifications")
    @classmethod
    def _magnifications(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        """Finite, positive, sorted, unique, and exactly representable in float32 (LMDB
        keys and tile records store them so; a stored value must compare equal)."""
        if not value:
            raise ValueError("at least one magnification is needed")
        for m in value:
            if not math.isfinite(m) or m <= 0:
                raise ValueError(f"magnification {m} must be a finite number > 0")
        return tuple(sorted({float(np.float32(m)) for m in value}))


class ComponentConfig(_Frozen):
    name: str
    params: dict[str, Any] = {}


class IndexConfig(_Frozen):
    #: Faiss binary factory string of the exact index used below `ivf_threshold` tiles.
    exact_factory: str = "BFlat"
    #: From this many tiles on, the index is an IndexBinaryIVF trained on the collection.
    ivf_threshold: int = Field(100_000, ge=1)
    #: IVF lists; None picks 4 * sqrt(n) rounded to a power of two, in [64, 65536].
    nlist: int | None = Field(None, ge=1)
    nprobe: int = Field(32, ge=1)
    #: Faiss factory string of the float index of float recipes ("Flat", "HNSW32,Flat").
    float_factory: str = "Flat"
    #: HNSW search breadth (float indexes built with HNSW).
    ef_search: int = Field(128, ge=1)
    #: Segments a bundle keeps: past this, `add` merges its smallest (`cbir compact`: all).
    max_segments: int = Field(16, ge=2)
    #: A segment with more than this share of its tiles removed is merged at the next add.
    max_dead_fraction: float = Field(0.5, gt=0.0, le=1.0)


class SearchConfig(_Frozen):
    k: int = Field(10, ge=1)
    #: Nearest tiles per query tile that seed region candidates (seed 000's "shares a code").
    region_seeds: int = Field(32, ge=1)
    #: Codes tied with the last seed are seeds too, up to this many per query tile.
    region_max_seeds: int = Field(128, ge=1)
    #: A candidate sub-grid needs at least this fraction of indexed (tissue) cells.
    region_min_valid: float = Field(0.5, gt=0.0, le=1.0)
    #: Two-step search of binary recipes: the top `rerank` by Hamming are reranked by
    #: squared L2 on the stored descriptors (Lin et al. 2015); None searches codes only.
    rerank: int | None = Field(None, ge=1)
    #: Verify (and rank) hits by local-feature RANSAC by default (needs `local`).
    verify: bool = False
    #: Query expansion of tile queries (recipes of unit float vectors): search again with
    #: the query plus its `expand` nearest tiles weighted by cosine^expand_alpha (0: off).
    expand: int = Field(0, ge=0)
    expand_alpha: float = Field(3.0, ge=0.0)


class LocalConfig(_Frozen):
    """Local features with geometric verification (seed 003, DELF)."""

    #: Local feature extractor (registry `cbir.delf.stage.LOCAL_EXTRACTORS`).
    name: str = "delf"
    #: Extractor parameters: trunk (without weights), scales, iou, max_features, batch_size.
    params: dict[str, Any] = {}
    #: PCA dimension of the stored descriptors (fitted on the collection; then L2 norm).
    pca_dim: int = Field(40, ge=1)
    #: Faiss factory string of the index over all local descriptors. An IVF factory
    #: stores codes only (cbir.index.local; {nlist}: `nlist`, else 4 sqrt(training rows)
    #: as a power of two; PQ becomes SQ8 below 9,984 training rows); "Flat" or
    #: "HNSW32,Flat" store float32 rows.
    float_factory: str = "IVF{nlist},PQ20"
    #: IVF lists of the local index; None: from the rows it is trained on.
    nlist: int | None = Field(None, ge=1)
    ef_search: int = Field(64, ge=1)
    nprobe: int = Field(16, ge=1)
    #: Nearest indexed descriptors looked up per query descriptor.
    neighbours: int = Field(10, ge=1)
    #: A match needs L2 distance <= this between unit descriptors (DELF: 0.8).
    max_distance: float = Field(0.8, gt=0.0)
    #: Candidates verified per query: tiles with the most votes, or coarse hits.
    candidates: int = Field(50, ge=1)
    #: "votes": candidates come from the local index; "global": from the recipe's own search.
    candidates_from: Literal["votes", "global"] = "global"
    #: RANSAC (affine, 3-point samples): inlier threshold in candidate pixels, trials.
    residual_px: float = Field(20.0, gt=0.0)
    max_trials: int = Field(1000, ge=1)
    #: A verified hit needs at least this many inliers.
    min_inliers: int = Field(5, ge=3)

    def index_config(self) -> IndexConfig:
        return IndexConfig(
            float_factory=self.float_factory, ef_search=self.ef_search, nprobe=self.nprobe
        )


class Recipe(_Frozen):
    name: str
    description: str = ""
    tiling: TilingConfig = TilingConfig()
    descriptor: ComponentConfig
    encoder: ComponentConfig
    index: IndexConfig = IndexConfig()
    search: SearchConfig = SearchConfig()
    #: Local features for `--verify` (None: the bundle has none unless built with them).
    local: LocalConfig | None = None


def recipe_dirs() -> list[Path]:
    """Where named recipes live: the repository's indexes/, then the installed copy."""
    dirs = [Path(__file__).resolve().parent.parent / "indexes"]
    packaged = resources.files("cbir") / "_recipes"
    if packaged.is_dir():
        dirs.append(Path(str(packaged)))
    return [d for d in dirs if d.is_dir()]


def list_recipes() -> list[str]:
    return sorted({p.stem for d in recipe_dirs() for p in d.glob("*.toml")})


def load_recipe(name_or_path: str) -> Recipe:
    """A recipe by name (`stats-lsh32`) or by path to a .toml file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        found = [d / f"{name_or_path}.toml" for d in recipe_dirs()]
        found = [p for p in found if p.is_file()]
        if not found:
            raise RecipeError(
                f"unknown recipe {name_or_path!r}; valid names: {', '.join(list_recipes())}"
            )
        path = found[0]
    try:
        data = tomllib.loads(path.read_text())
        return Recipe.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, ValidationError):
            first = validation_line(exc)
        raise RecipeError(f"{path}: invalid recipe ({first})") from exc
