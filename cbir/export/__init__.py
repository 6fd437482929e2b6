"""Exports a person can open: hit crops, a montage, an HTML report, QuPath GeoJSON.

from cbir.export import export_result
with cbir.open_index("idx/") as index:
    result = index.search("query.png", k=10)
    image, _ = index.query_image("query.png")
    export_result(result, image, "out/", {i: s.info for i, s in index.slides.items()})
"""

from cbir.export.staging import ExportError, is_export, staged_dir
from cbir.export.write import ExportReport, export_result, write_export

__all__ = [
    "ExportError",
    "ExportReport",
    "export_result",
    "is_export",
    "staged_dir",
    "write_export",
]
