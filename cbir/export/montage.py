"""A montage PNG: the query and its top hits side by side, each captioned."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Thumbnail box side (px), caption line height (px), gap between cells (px).
CELL, LINE, GAP = 256, 18, 12
COLUMNS = 6
QUERY_COLOUR, HIT_COLOUR, MISSING_COLOUR = (31, 119, 180), (90, 90, 90), (200, 200, 200)


def _font(size: int = 14) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled TrueType font
    except (TypeError, ValueError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def fit(image: np.ndarray, side: int = CELL) -> Image.Image:
    """(h, w, 3) uint8 -> a PIL image whose longer side is at most `side` px (aspect kept;
    never enlarged by more than 2x, so small crops stay sharp)."""
    h, w = image.shape[:2]
    scale = min(side / max(h, w), 2.0)
    im = Image.fromarray(image)
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)
    return im


def _clip(draw: ImageDraw.ImageDraw, text: str, font: object, width: int) -> str:
    """`text` cut with an ellipsis to fit `width` px."""
    if draw.textlength(text, font=font) <= width:  # type: ignore[arg-type]
        return text
    while text and draw.textlength(text + "...", font=font) > width:  # type: ignore[arg-type]
        text = text[:-1]
    return text + "..."


def montage(
    images: Sequence[np.ndarray | None],
    captions: Sequence[Sequence[str]],
    columns: int = COLUMNS,
) -> Image.Image:
    """Cells of `images` (the query first: drawn with a blue frame; None: a grey
    placeholder for a crop that could not be read), each with its caption lines below,
    `columns` per row. Returns an RGB PIL image."""
    n = len(images)
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    lines = max((len(c) for c in captions), default=0)
    cell_w, cell_h = CELL + GAP, CELL + GAP + lines * LINE + GAP // 2
    sheet = Image.new("RGB", (cols * cell_w + GAP, rows * cell_h + GAP), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x0, y0 = GAP + (i % cols) * cell_w, GAP + (i // cols) * cell_h
        colour = QUERY_COLOUR if i == 0 else HIT_COLOUR
        if image is None:
            draw.rectangle([x0, y0, x0 + CELL - 1, y0 + CELL - 1], fill=MISSING_COLOUR)
            draw.text((x0 + 8, y0 + CELL // 2 - LINE), "crop unavailable", fill="black", font=font)
        else:
            thumb = fit(image)
            px, py = x0 + (CELL - thumb.width) // 2, y0 + (CELL - thumb.height) // 2
            sheet.paste(thumb, (px, py))
            draw.rectangle(
                [px - 2, py - 2, px + thumb.width + 1, py + thumb.height + 1],
                outline=colour,
                width=3 if i == 0 else 1,
            )
        for j, text in enumerate(caption):
            draw.text(
                (x0, y0 + CELL + GAP // 2 + j * LINE),
                _clip(draw, text, font, CELL),
                fill=colour if j == 0 else "black",
                font=font,
            )
    return sheet
