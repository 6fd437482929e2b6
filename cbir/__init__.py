"""cbir: content-based image retrieval for whole-slide histology images.

    import cbir
    cbir.build_index(["a.svs", "b.svs"], "idx/", recipe="stats-lsh32")
    with cbir.open_index("idx/") as index:
        result = index.search("query.png", k=10)      # or an array, or a Region

Names are imported on first use, so `import cbir` (and `cbir --help`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Index": "cbir.api",
    "IndexInfo": "cbir.api",
    "open_index": "cbir.api",
    "CbirError": "cbir.errors",
    "Hit": "cbir.search.hits",
    "SearchResult": "cbir.search.hits",
    "IndexReport": "cbir.indexer",
    "add_slides": "cbir.indexer",
    "build_index": "cbir.indexer",
    "remove_slides": "cbir.indexer",
    "Region": "cbir.search.query",
    "label_slide": "cbir.storage.labels",
    "Slide": "cbir.slides",
    "open_slide": "cbir.slides",
}
__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cbir' has no attribute {name!r}")
