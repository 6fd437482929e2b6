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
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

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

#: A file a writer puts into every directory it moves into the bundle and removes once
#: the manifest naming it is published: a directory holding it was never published.
UNPUBLISHED = ".unpublished"


#: Names a manifest may give its directories and files: nothing that climbs out of the
#: bundle (no `..`, no absolute path), at most one sub-directory (`meta.lmdb/data.mdb`).
SEGMENT_NAME = re.compile(r"seg-(\d{6,})(-\d+)?")
STATE_NAME = re.compile(r"state-(\d{6,})")
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
SHA256 = re.compile(r"[0-9a-f]{64}")

NonNegative = Field(ge=0)

#: The largest slide id (tile ids are (slide id << 32) + n in an int64).
MAX_SLIDE_ID = 2**31 - 1


def _file_name(name: str) -> str:
    if not FILE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{name!r} is not a file name inside a segment")
    return name


class Counts(BaseModel):
    slides: int = NonNegative
    tiles: int = NonNegative


class LocalManifest(BaseModel):
    """The local features of a bundle (`--verify`)."""

    spec: dict[str, Any]  # extractor, PCA dim, weights checksum
    features: int = NonNegative  # rows in the local index
    state_sha256: str
    weights_file: str | None  # WEIGHTS_FILE (shared with the descriptor) or LOCAL_WEIGHTS_FILE
    weights_sha256: str | None


class ArtifactEntry(BaseModel):
    """One per-tile product of a segment (cbir.storage.artifacts): its rows, the files it wrote
    (checksummed with the segment), and what shapes it."""

    rows: int = NonNegative
    files: list[str] = []
    spec: dict[str, Any] = {}

    @field_validator("files")
    @classmethod
    def _files(cls, files: list[str]) -> list[str]:
        return [_file_name(f) for f in files]


class SegmentEntry(BaseModel):
    """One immutable segment and its tombstones (slides removed since it was written)."""

    name: str  # seg-000003
    slides: int = NonNegative  # slides written into it
    bytes: int = NonNegative  # size of its files
    sha256: dict[str, str]  # checksums of its files (tiles.fbin, meta.lmdb/data.mdb, ...)
    #: sizes of its files in bytes (checked at every open; absent in bundles written
    #: before cbir 0.1 recorded them: then only their sum, `bytes`, is checked)
    sizes: dict[str, int] = {}
    artifacts: dict[str, ArtifactEntry]  # codes, vectors, locals, references
    dead_slides: list[int] = []
    dead_rows: dict[str, int] = {}  # rows of each product the tombstoned slides hold

    @model_validator(mode="after")
    def _consistent(self) -> SegmentEntry:
        for name, sha in self.sha256.items():
            _file_name(name)
            if not SHA256.fullmatch(sha):
                raise ValueError(f"segment {self.name}: checksum of {name} is not a sha256")
        for name, size in self.sizes.items():
            if name not in self.sha256 or size < 0:
                raise ValueError(f"segment {self.name}: bad size entry for {name}")
        if self.sizes and sum(self.sizes.values()) != self.bytes:
            raise ValueError(f"segment {self.name}: file sizes do not add up to its bytes")
        dead = self.dead_slides
        if len(set(dead)) != len(dead) or any(s < 1 for s in dead):
            raise ValueError(f"segment {self.name}: tombstones must be distinct slide ids >= 1")
        if len(dead) > self.slides:
            raise ValueError(f"segment {self.name}: more tombstones than slides")
        for name, rows in self.dead_rows.items():
            if not 0 <= rows <= self.rows(name):
                raise ValueError(
                    f"segment {self.name}: {rows} dead {name} rows of {self.rows(name)}"
                )
        return self

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
    nlist: int | None = Field(ge=1)
    generation: int = Field(ge=1, le=10**12)  # names stay short: seg-<generation>
    counts: Counts
    pipeline_sha256: str
    weights_sha256: str | None = None
    scale_weights_sha256: str | None = None
    local: LocalManifest | None = None
    #: The precision the collection's networks described tiles at (cbir.nn.precision):
    #: "float32", "float16" (CUDA autocast), "bfloat16"; None: no network, or unknown.
    precision: str | None = None
    state: str = ""  # the collection state directory (format 3)
    #: sha256 of the state's other files (the empty indexes), by name; empty in bundles
    #: written before cbir recorded them
    state_sha256: dict[str, str] = {}
    segments: list[SegmentEntry] = []  # oldest first (format 3)
    #: slide ids are below 2**31: a tile id is (slide id << 32) + n in an int64
    next_slide_id: int = Field(1, ge=1, le=MAX_SLIDE_ID + 1)
    labels: dict[int, dict[str, str]] = {}  # `cbir label`, by slide id
    created: str
    updated: str

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        """Cross-checks of a format-3 manifest: names inside the bundle and not from
        the future, slide ids below `next_slide_id`, counts that add up."""
        if self.format_version < FORMAT_VERSION:
            return self
        for name, sha in self.state_sha256.items():
            if "/" in _file_name(name) or not SHA256.fullmatch(sha):
                raise ValueError(f"state_sha256: bad entry for {name!r}")
        state = STATE_NAME.fullmatch(self.state)
        if state is None or int(state.group(1)) > self.generation:
            raise ValueError(
                f"state {self.state!r} is not a state of generation <= {self.generation}"
            )
        names = [s.name for s in self.segments]
        if len(set(names)) != len(names):
            raise ValueError("a segment is listed twice")
        for seg in self.segments:
            m = SEGMENT_NAME.fullmatch(seg.name)
            if m is None or int(m.group(1)) > self.generation:
                raise ValueError(
                    f"segment {seg.name!r} is not a segment of generation <= {self.generation}"
                )
            if any(s >= self.next_slide_id for s in seg.dead_slides):
                raise ValueError(
                    f"segment {seg.name}: a tombstone names slide id >= "
                    f"next_slide_id {self.next_slide_id}"
                )
        if any(s < 1 or s >= self.next_slide_id for s in self.labels):
            raise ValueError(f"labels name a slide id outside 1..{self.next_slide_id - 1}")
        slides = sum(s.slides - len(s.dead_slides) for s in self.segments)
        tiles = sum(s.live_tiles for s in self.segments)
        if (self.counts.slides, self.counts.tiles) != (slides, tiles):
            raise ValueError(
                f"counts ({self.counts.slides} slides, {self.counts.tiles} tiles) differ from "
                f"its segments' ({slides} slides, {tiles} tiles)"
            )
        return self

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
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
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
        raise BundleError(f"{path}: invalid manifest ({_first_error(exc)})") from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


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
