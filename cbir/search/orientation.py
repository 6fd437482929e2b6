"""Query orientations: a query image flipped or turned (the 8 elements of the dihedral
group) searched as such and merged by best distance, so that a screenshot or a photo in
any orientation finds its place. A hit's `orientation` names the transform applied to the
query before it matched: "none", "rot90"/"rot180"/"rot270" (np.rot90 counterclockwise
turns), "fliplr" and "fliplr-rot90"/"-rot180"/"-rot270" (mirrored left-right, then
turned)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cbir.search.hits import Hit
from cbir.search.placement import distinct_places


def _turned(k: int, mirror: bool) -> Callable[[np.ndarray], np.ndarray]:
    def turn(image: np.ndarray) -> np.ndarray:
        a = image[:, ::-1] if mirror else image
        return np.ascontiguousarray(np.rot90(a, k))

    return turn


#: Orientation name -> (h, w, 3) -> the turned or mirrored image; "none" first.
ORIENTATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    ("fliplr" if mirror else "") + ("-" if mirror and k else "") + (f"rot{90 * k}" if k else "")
    or "none": _turned(k, mirror)
    for mirror in (False, True)
    for k in range(4)
}


def merge(found: dict[str, list[Hit]], k: int) -> list[Hit]:
    """The best k hits over every orientation's (orientation -> ranked hits): by distance
    (ties: orientation order, then rank), one hit per place (same slide and
    magnification, IoU >= placement.SAME_PLACE_IOU), re-ranked 1..k with their orientation."""
    order = {name: i for i, name in enumerate(found)}
    pool = sorted(
        (h.model_copy(update={"orientation": name}) for name, hits in found.items() for h in hits),
        key=lambda h: (h.distance, order[h.orientation], h.rank),
    )
    return distinct_places(pool, k)
