"""The manifest of a bundle: its format, recipe, component specs, counts and live
generation; the names of a generation's files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from cbir.errors import BundleError, BundleMismatchError
from cbir.recipes import Recipe
from cbir.specs import DescriptorSpec, EncoderSpec

FORMAT_VERSION = 2  # 2: LMDB vectors and refs databases, float indexes, weights

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


class Manifest(BaseModel):
    """What a bundle is: format, recipe, component specs, the live generation and counts."""

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
    created: str
    updated: str


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
    if version != FORMAT_VERSION:
        raise BundleMismatchError(
            f"{root}: bundle format version {version}, this cbir reads {FORMAT_VERSION}"
        )
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise BundleError(f"{path}: invalid manifest ({exc.errors()[0]['msg']})") from exc
