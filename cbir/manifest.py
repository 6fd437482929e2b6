"""The manifest of a bundle: its format, recipe, component specs, counts, the collection
state it was fitted with, its segments and their tombstones; the names of their files.

Format 3 (this cbir writes it):

    idx/manifest.json             Manifest: state, segments (oldest first), tombstones, labels
    idx/state-000001/             collection state, fitted by build-index / rebuild:
        pipeline.npz              encoder state (standardisation, hyperplanes, PCA)
        tiles.empty.fbin          the empty tile index every segment starts from (a trained
                                  IVF quantizer when the collection is large)
        weights.pt, scale.pt      model weights (descriptor, scale comparator), optional
        local.npz, local.pt       local features' PCA and extractor weights, optional
        locals.empty.faiss        the empty local-feature index
    idx/seg-000003/               an immutable segment: the slides of one build / add / merge
        tiles.fbin                Faiss index of its tile codes, ids (slide id << 32) + n
        meta.lmdb/                LMDB: slides, paths, grids, vectors, refs, locals
        locals.faiss              local features, ids (tile id << 10) | row, optional

Format 2 bundles (one generation directory) are read, read-only; `cbir upgrade` converts
them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from cbir.errors import BundleError, BundleMismatchError
from cbir.recipes import Recipe
from cbir.specs import DescriptorSpec, EncoderSpec

FORMAT_VERSION = 3  # 3: segments and tombstones; 2: one generation (read-only)

#: Formats this cbir opens (read-only below FORMAT_VERSION).
READABLE_FORMATS = (2, 3)

#: Opens retried when a concurrent writer replaced the generation being opened.
OPEN_RETRIES = 3

MANIFEST = "manifest.json"

INDEX_FILE = "tiles.fbin"

META_DIR = "meta.lmdb"

STATE_FILE = "pipeline.npz"

WEIGHTS_FILE = "weights.pt"

SCALE_FILE = "scale.pt"

LOCAL_INDEX_FILE = "locals.faiss"

LOCAL_STATE_FILE = "local.npz"

LOCAL_WEIGHTS_FILE = "local.pt"

EMPTY_INDEX_FILE = "tiles.empty.fbin"

EMPTY_LOCAL_INDEX_FILE = "locals.empty.faiss"


class Counts(BaseModel):
    slides: int
    tiles: int


class LocalManifest(BaseModel):
    """The local features of a bundle (`--verify`)."""

    spec: dict[str, Any]  # extractor, PCA dim, weights checksum
    features: int  # rows in the local index
    state_sha256: str
    weights_file: str | None  # WEIGHTS_FILE (shared with the descriptor) or LOCAL_WEIGHTS_FILE
    weights_sha256: str | None


class ArtifactEntry(BaseModel):
    """One per-tile product of a segment (cbir.artifacts): its rows, the files it wrote
    (checksummed with the segment), and what shapes it."""

    rows: int
    files: list[str] = []
    spec: dict[str, Any] = {}


class SegmentEntry(BaseModel):
    """One immutable segment and its tombstones (slides removed since it was written)."""

    name: str  # seg-000003
    slides: int  # slides written into it
    bytes: int  # size of its files
    sha256: dict[str, str]  # checksums of its files (tiles.fbin, meta.lmdb/data.mdb, ...)
    artifacts: dict[str, ArtifactEntry]  # codes, vectors, locals, references
    dead_slides: list[int] = []
    dead_rows: dict[str, int] = {}  # rows of each product the tombstoned slides hold

    def rows(self, name: str) -> int:
        entry = self.artifacts.get(name)
        return 0 if entry is None else entry.rows

    @property
    def tiles(self) -> int:
        """Rows of its tile index."""
        return self.rows("codes")

    @property
    def dead_tiles(self) -> int:
        return self.dead_rows.get("codes", 0)

    @property
    def live_tiles(self) -> int:
        return self.tiles - self.dead_tiles


class Manifest(BaseModel):
    """What a bundle is: format, recipe, component specs, collection state, segments,
    tombstones, labels and counts. `generation` counts publishes."""

    format_version: int
    cbir_version: str
    recipe: Recipe
    descriptor: DescriptorSpec
    encoder: EncoderSpec
    index_kind: Literal["flat", "ivf", "float"]
    nlist: int | None
    generation: int
    counts: Counts
    pipeline_sha256: str
    weights_sha256: str | None = None
    scale_weights_sha256: str | None = None
    local: LocalManifest | None = None
    #: The precision the collection's networks described tiles at (cbir.precision):
    #: "float32", "float16" (CUDA autocast), "bfloat16"; None: no network, or unknown.
    precision: str | None = None
    state: str = ""  # the collection state directory (format 3)
    segments: list[SegmentEntry] = []  # oldest first (format 3)
    next_slide_id: int = 1
    labels: dict[int, dict[str, str]] = {}  # `cbir label`, by slide id
    created: str
    updated: str

    @property
    def readonly(self) -> bool:
        """Bundles of an older format are read, not written (`cbir upgrade`)."""
        return self.format_version < FORMAT_VERSION


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def gen_dir(root: Path, generation: int) -> Path:
    return root / f"gen-{generation:06d}"


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root}: not an index bundle (no {MANIFEST})")
    try:
        raw = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: unreadable ({exc})") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path}: not a manifest (a JSON object is expected)")
    version = data.get("format_version")
    if version not in READABLE_FORMATS:
        raise BundleMismatchError(
            f"{root}: bundle format version {version}, this cbir reads "
            f"{', '.join(map(str, READABLE_FORMATS))}"
        )
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise BundleError(f"{path}: invalid manifest ({exc.errors()[0]['msg']})") from exc


def segment_name(generation: int, n: int = 0) -> str:
    """The directory name of the n-th segment written by publish `generation`."""
    return f"seg-{generation:06d}" + (f"-{n}" if n else "")


def state_name(generation: int) -> str:
    """The directory name of the collection state written by publish `generation`."""
    return f"state-{generation:06d}"


def readonly_error(root: Path, manifest: Manifest) -> BundleError:
    return BundleError(
        f"{root}: bundle format {manifest.format_version} is read-only in this cbir "
        f"(format {FORMAT_VERSION}); convert it with `cbir upgrade {root}`"
    )
