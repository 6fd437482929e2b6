"""A self-contained HTML report of one search: the query, then every hit with its crop,
slide, magnification, level-0 rectangle, distance, similarity and labels. Images are
embedded as data URIs, so the file opens offline on its own; each thumbnail links to the
full-size crop next to it."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np

from cbir.export.montage import fit
from cbir.search.hits import SearchResult

#: Longest side of an embedded thumbnail, px.
THUMB = 320

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin-bottom: 0.2em; }
.meta { color: #555; margin: 0.2em 0 1em 0; }
.query img { border: 3px solid #1f77b4; }
table { border-collapse: collapse; margin-top: 1em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.35em 0.6em; text-align: right;
         vertical-align: middle; }
th { background: #f3f3f3; }
td.slide, td.labels, th.slide, th.labels { text-align: left; overflow-wrap: anywhere; }
td img { max-width: 240px; max-height: 240px; display: block; }
.missing { color: #b00; }
.vote { font-weight: bold; margin: 0.5em 0; }
"""


def data_uri(image: np.ndarray, side: int = THUMB) -> str:
    """(h, w, 3) uint8 -> a `data:image/jpeg;base64,...` thumbnail (longer side <= `side`
    px; JPEG keeps a report of many hits small, the full-size crops are PNG)."""
    buf = io.BytesIO()
    fit(image, side).save(buf, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def report_html(
    result: SearchResult,
    query_image: np.ndarray,
    crops: Sequence[np.ndarray | None],
    crop_files: Sequence[str],
    errors: Sequence[str | None],
    geojson_files: Sequence[str] = (),
    title: str | None = None,
) -> str:
    """The report page. `crops[i]` (or None with `errors[i]` saying why) and
    `crop_files[i]` (relative path of the full-size PNG) belong to `result.hits[i]`."""
    title = title or f"cbir search: {result.query}"
    searched = ", ".join(f"{m:g}x" for m in result.searched_magnifications)
    meta = [
        f"{len(result.hits)} of {result.k if result.k is not None else len(result.hits)} hits",
        f"query {result.query_rows} x {result.query_cols} tiles",
        f"searched {searched or 'every magnification'}",
        f"{result.seconds * 1e3:.1f} ms",
    ]
    if result.slides is not None:
        meta.append("slides: " + ", ".join(result.slides))
    if result.exclude_query_slide:
        meta.append("the query's own slide excluded")
    if result.min_similarity is not None:
        meta.append(
            f"min similarity {result.min_similarity:g} ({result.below_min_similarity} dropped)"
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<div class="meta">{_e(" · ".join(meta))}</div>',
        f'<div class="query"><img alt="query" src="{data_uri(query_image)}">',
        f"<div>query: {_e(result.query)} ({query_image.shape[1]} x {query_image.shape[0]} px)"
        "</div></div>",
    ]
    if result.vote is not None:
        v = result.vote
        counts = ", ".join(f"{_e(k)} {n}" for k, n in v.counts.items())
        parts.append(
            f'<div class="vote">majority vote of {_e(v.key)} over the top {v.of} hits: '
            f"{_e(v.value if v.value is not None else 'none (no hit has this label)')}"
            f"{f' ({v.count} of {v.hits} labelled: {counts})' if v.value is not None else ''}"
            "</div>"
        )
    if geojson_files:
        links = ", ".join(f'<a href="{_e(f)}">{_e(f)}</a>' for f in geojson_files)
        parts.append(f'<div class="meta">QuPath annotations: {links}</div>')
    head = ["rank", "crop", "slide", "mag", "x", "y", "w", "h", "distance", "similarity"]
    head += ["labels"]
    parts.append(
        "<table><thead><tr>"
        + "".join(f'<th class="{h}">{h}</th>' for h in head)
        + "</tr></thead><tbody>"
    )
    for hit, crop, file, error in zip(result.hits, crops, crop_files, errors, strict=True):
        if crop is None:
            cell = f'<span class="missing">{_e(error or "crop unavailable")}</span>'
        else:
            cell = (
                f'<a href="{_e(file)}"><img alt="hit {hit.rank}" src="{data_uri(crop)}"></a>'
                f"{crop.shape[1]} x {crop.shape[0]} px"
            )
        labels = "<br>".join(f"{_e(k)}={_e(v)}" for k, v in hit.labels.items())
        sim = "" if hit.similarity is None else f"{hit.similarity:.3f}"
        cells = [
            str(hit.rank),
            cell,
            f'<span title="{_e(hit.slide_path)}">{_e(hit.slide)}</span>',
            f"{hit.magnification:g}x",
            str(hit.x),
            str(hit.y),
            str(hit.w),
            str(hit.h),
            f"{hit.distance:g}",
            sim,
            labels,
        ]
        parts.append(
            "<tr>" + "".join(f'<td class="{h}">{c}</td>' for h, c in zip(head, cells, strict=True))
        )
    parts.append("</tbody></table>")
    if not result.hits:
        parts.append("<p>no hits</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def index_html(entries: Sequence[tuple[str, str, str]], title: str) -> str:
    """A batch's front page: one row per query (name, link to its report, outcome)."""
    rows = "".join(
        f'<tr><td class="slide">{_e(name)}</td><td class="slide">'
        + (f'<a href="{_e(link)}">{_e(link)}</a>' if link else "")
        + f'</td><td class="slide">{_e(outcome)}</td></tr>'
        for name, link, outcome in entries
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{_e(title)}</h1><table><thead><tr><th class="slide">query</th>'
        '<th class="slide">report</th><th class="slide">result</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></body></html>"
    )
