"""`POST /export`: the files of `cbir search --export` for one search, as a zip."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cbir.search.query import Region

if TYPE_CHECKING:
    from cbir.api import Index
    from cbir.search.hits import SearchResult


def export_zip(index: Index, result: SearchResult, query: Region | np.ndarray) -> bytes:
    """query.png, hits/, montage.png, report.html, geojson/, result.json and export.json
    of `result` (the search of `query`: a slide region or the uploaded image's pixels),
    zipped (deflate), names relative to the export's folder."""
    from cbir.export import export_result

    image = query if isinstance(query, np.ndarray) else index.query_image(query)[0]
    region = index.resolve_region(query) if isinstance(query, Region) else None
    infos = {sid: r.info for sid, r in index.slides.items()}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export"
        export_result(result, image, out, infos, region)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(out.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(out).as_posix())
    return buffer.getvalue()
