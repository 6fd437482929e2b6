"""cbir: content-based image retrieval for whole-slide histology images.

    import cbir
    cbir.build_index(["a.svs", "b.svs"], "idx/", recipe="stats-lsh32")
    with cbir.open_index("idx/") as index:
        result = index.search("query.png", k=10)      # or an array, or a Region
"""

__version__ = "0.1.0"

from cbir.api import Index, IndexInfo, open_index  # noqa: E402
from cbir.errors import CbirError  # noqa: E402
from cbir.hits import Hit, SearchResult  # noqa: E402
from cbir.indexer import IndexReport, add_slides, build_index, remove_slides  # noqa: E402
from cbir.query import Region  # noqa: E402

__all__ = [
    "CbirError", "Hit", "Index", "IndexInfo", "IndexReport", "Region", "SearchResult",
    "__version__", "add_slides", "build_index", "open_index", "remove_slides",
]
