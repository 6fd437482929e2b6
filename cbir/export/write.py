"""Write one search result as files a person opens: the query and hit crops (PNG), a
montage (PNG), an HTML report and QuPath GeoJSON per slide."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel

from cbir.errors import CbirError
from cbir.export.crops import SlideReader, crop_name, safe_stem
from cbir.export.geojson import feature_collections
from cbir.export.montage import montage
from cbir.export.report import report_html
from cbir.export.staging import MARKER, MARKER_KEY, ExportError, staged_dir
from cbir.search.hits import SearchResult
from cbir.search.query import Region
from cbir.slides import SlideInfo

QUERY_FILE, MONTAGE_FILE, REPORT_FILE, RESULT_FILE = (
    "query.png",
    "montage.png",
    "report.html",
    "result.json",
)


class ExportReport(BaseModel):
    """What an export wrote: paths relative to `dir`, and the crops it could not read."""

    dir: str
    query: str
    files: list[str]
    crops: int
    missing: list[str] = []  # one line per hit whose slide could not be read


def captions(result: SearchResult, query_image: np.ndarray) -> list[list[str]]:
    """Caption lines of the montage: the query's, then each hit's (rank and similarity,
    slide, magnification and level-0 place)."""
    h, w = query_image.shape[:2]
    out = [["query", Path(result.query).name, f"{w} x {h} px"]]
    for hit in result.hits:
        sim = f"similarity {hit.similarity:.3f}" if hit.similarity is not None else ""
        out.append(
            [
                f"#{hit.rank}  {sim}",
                hit.slide,
                f"{hit.magnification:g}x  at x {hit.x}, y {hit.y} (level 0)",
            ]
        )
    return out


def _geojson_names(paths: list[str]) -> dict[str, str]:
    """{slide path: `geojson/<stem>.geojson`}, a stem made unique where two slides share one."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for path in paths:
        stem, n = safe_stem(Path(path).name), 1
        name = stem
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        names[path] = f"geojson/{name}.geojson"
    return names


def write_export(
    result: SearchResult,
    query_image: np.ndarray,
    out: Path,
    slides: Mapping[int, SlideInfo] | None = None,
    query_region: Region | None = None,
) -> ExportReport:
    """Write the export of `result` into the empty directory `out` (not atomic by itself:
    `export_result` stages it). `query_image` (h, w, 3) uint8: the query as searched;
    `slides`: {slide id: SlideInfo} from the bundle (base magnifications);
    `query_region`: the query's region, drawn on its slide's GeoJSON."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "hits").mkdir(exist_ok=True)
    width = max(2, len(str(len(result.hits))))
    files = [QUERY_FILE]
    Image.fromarray(query_image).save(out / QUERY_FILE)
    crops: list[np.ndarray | None] = []
    crop_files, errors, missing = [], [], []
    with SlideReader(slides) as reader:
        for hit in result.hits:
            name = crop_name(hit, width)
            try:
                crop = reader.read(hit)
            except CbirError as exc:
                crops.append(None)
                errors.append(str(exc))
                missing.append(f"hit {hit.rank} ({hit.slide}): {exc}")
            else:
                Image.fromarray(crop).save(out / name)
                crops.append(crop)
                errors.append(None)
                files.append(name)
            crop_files.append(name)
    montage([query_image, *crops], captions(result, query_image)).save(out / MONTAGE_FILE)
    files.append(MONTAGE_FILE)
    collections = feature_collections(result, query_region)
    names = _geojson_names(list(collections))
    if collections:
        (out / "geojson").mkdir()
    for path, fc in collections.items():
        (out / names[path]).write_text(json.dumps(fc))
        files.append(names[path])
    (out / REPORT_FILE).write_text(
        report_html(result, query_image, crops, crop_files, errors, list(names.values()))
    )
    (out / RESULT_FILE).write_text(result.model_dump_json())
    files += [REPORT_FILE, RESULT_FILE]
    report = ExportReport(
        dir=str(out),
        query=result.query,
        files=files,
        crops=sum(c is not None for c in crops),
        missing=missing,
    )
    marker = {MARKER_KEY: 1, "kind": "search", **report.model_dump(exclude={"dir"})}
    (out / MARKER).write_text(json.dumps(marker, indent=1))
    return report


def export_result(
    result: SearchResult,
    query_image: np.ndarray,
    out: str | os.PathLike[str],
    slides: Mapping[int, SlideInfo] | None = None,
    query_region: Region | None = None,
) -> ExportReport:
    """Export one search result to directory `out`, atomically: `out` must be absent, an
    empty directory or a previous export (which is replaced); anything else is refused
    with `ExportError`. See `write_export` for the arguments and files."""
    if not isinstance(result, SearchResult):
        raise ExportError(
            f"{out}: an export is of a search's hits (Index.search), not of a "
            f"{type(result).__name__}"
        )
    image = np.asarray(query_image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ExportError(
            f"{out}: the query image is {image.dtype} {image.shape}; expected (h, w, 3) uint8"
        )
    if query_region is not None and not Path(query_region.slide).exists():
        paths = {h.slide_path for h in result.hits if h.slide == query_region.slide}
        if len(paths) == 1:  # a file name, as Index.search takes: the indexed slide's path
            query_region = query_region.model_copy(update={"slide": paths.pop()})
    with staged_dir(out) as stage:
        report = write_export(result, image, stage, slides, query_region)
    return report.model_copy(update={"dir": str(Path(out))})
