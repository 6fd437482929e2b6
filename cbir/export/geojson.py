"""GeoJSON that QuPath imports: per slide, one FeatureCollection of rectangles (Polygon
rings in level-0 pixels, y down, origin at the top-left of the full-resolution image).

QuPath reads `properties.objectType` ("annotation"), `name`, `color` [r, g, b],
`classification` {name, color}, `measurements` {name: number} (shown in its measurement
table) and `metadata` {name: string}; a feature `id` that is a UUID becomes the object's
id. The hit's rank, distance, similarity and magnification are also plain properties for
other tools."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from cbir.search.hits import Hit, SearchResult
from cbir.search.query import Region

HIT_CLASS = {"name": "cbir hit", "color": [230, 85, 13]}
QUERY_CLASS = {"name": "cbir query", "color": [31, 119, 180]}


def rectangle(x: int, y: int, w: int, h: int) -> dict[str, Any]:
    """A closed Polygon ring around the level-0 rectangle (x, y, w, h), clockwise on screen."""
    ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


def _id(*parts: object) -> str:
    """A stable UUID for a feature: the same hit of the same query gets the same id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "cbir:" + "|".join(map(str, parts))))


def hit_feature(hit: Hit, query: str) -> dict[str, Any]:
    """One annotation: the hit's rectangle, named `hit <rank>` with its similarity."""
    numbers = {
        "rank": hit.rank,
        "distance": hit.distance,
        "similarity": hit.similarity,
        "magnification": hit.magnification,
        "inliers": hit.inliers,
    }
    numbers = {k: v for k, v in numbers.items() if v is not None}
    sim = f" (similarity {hit.similarity:.3f})" if hit.similarity is not None else ""
    return {
        "type": "Feature",
        "id": _id(query, hit.slide_path, hit.rank, hit.x, hit.y, hit.w, hit.h, hit.magnification),
        "geometry": rectangle(hit.x, hit.y, hit.w, hit.h),
        "properties": {
            "objectType": "annotation",
            "name": f"hit {hit.rank}{sim} at {hit.magnification:g}x",
            "classification": HIT_CLASS,
            "isLocked": True,
            **numbers,
            "measurements": numbers,
            "metadata": {"query": query, "slide": hit.slide, **hit.labels},
        },
    }


def query_feature(region: Region) -> dict[str, Any]:
    """The query region on its own slide, so hits near it can be told apart."""
    return {
        "type": "Feature",
        "id": _id("query", region),
        "geometry": rectangle(region.x, region.y, region.w, region.h),
        "properties": {
            "objectType": "annotation",
            "name": f"query at {region.magnification:g}x",
            "classification": QUERY_CLASS,
            "isLocked": True,
            "magnification": region.magnification,
            "measurements": {"magnification": region.magnification},
            "metadata": {"query": str(region)},
        },
    }


def feature_collections(
    result: SearchResult, query_region: Region | None = None
) -> dict[str, dict[str, Any]]:
    """{slide path: FeatureCollection} with every hit of `result` on that slide (and the
    query region on its own slide, when the query was one)."""
    out: dict[str, dict[str, Any]] = {}

    def collection(path: str) -> list[dict[str, Any]]:
        fc = out.setdefault(path, {"type": "FeatureCollection", "features": []})
        return fc["features"]  # type: ignore[no-any-return]

    for hit in result.hits:
        collection(hit.slide_path).append(hit_feature(hit, result.query))
    if query_region is not None:
        path = str(Path(query_region.slide).resolve())
        collection(path).insert(0, query_feature(query_region))
    return out
