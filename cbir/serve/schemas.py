"""Request and response bodies of the HTTP API (validated by pydantic, documented on
FastAPI's OpenAPI page)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cbir.search.hits import Magnification


class SearchOptions(BaseModel):
    """What every search takes besides its query (form fields of a multipart upload, or
    fields of the JSON body of a region search)."""

    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(None, ge=1, le=1000, description="Hits (the recipe's k if unset).")
    scale: str = Field("all", description='"all" or one magnification such as "20x".')
    verify: bool | None = Field(None, description="Rank by local-feature RANSAC inliers.")
    allow_background: bool = Field(
        False,
        description="Search a query refused by default: no tissue, or not brightfield "
        "tissue (noise, blur, pen ink, a dark or inverted image).",
    )
    min_similarity: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    expand: int | None = Field(None, ge=0, le=100, description="Query expansion (tile queries).")
    slides: list[int] | None = Field(
        None, min_length=1, description="Search only these slide ids (unset: every slide)."
    )
    exclude_query_slide: bool = Field(
        False, description="Region queries: drop hits on the query's own slide."
    )
    vote: str | None = Field(
        None, description="A slide label (cbir label): majority vote of the hits' values."
    )
    orientations: bool = Field(
        False, description="Also search the query flipped and turned (8x the query time)."
    )


class RegionSearch(SearchOptions):
    """A region of an indexed slide as the query: level-0 pixels, read at `magnification`
    (unset: the highest indexed magnification at which it covers a whole tile)."""

    slide: int = Field(strict=True, description="Slide id (GET /slides).")
    x: int = Field(ge=0, strict=True)
    y: int = Field(ge=0, strict=True)
    w: int = Field(gt=0, strict=True)
    h: int = Field(gt=0, strict=True)
    magnification: float | None = Field(None, gt=0)


class SlideSearch(BaseModel):
    """An indexed slide as the query (its stored mosaic): the slides most like it."""

    model_config = ConfigDict(extra="forbid")

    slide: int = Field(strict=True, description="Slide id (GET /slides).")
    k: int | None = Field(None, ge=1, le=1000, description="Slides (the recipe's k if unset).")
    method: str = Field(
        "pooled",
        description='"pooled": cosine of mean-pooled code vectors; "median" / "mosaic": '
        "then median-of-minimum from the query's mosaic tiles to every tile / the mosaic "
        "tiles of the first 100 slides.",
    )
    slides: list[int] | None = Field(
        None, min_length=1, description="Rank only these slide ids (unset: every slide)."
    )
    exclude_query_slide: bool = Field(False, description="Leave out the query slide.")
    case_label: str | None = Field(
        None,
        description="With exclude_query_slide: also leave out the slides sharing the "
        "query's value of this label (its case).",
    )
    vote: str | None = Field(
        None, description="A slide label: majority vote of the ranked slides' values."
    )


class SlideView(BaseModel):
    """An indexed slide as the web page needs it."""

    slide_id: int
    name: str
    width: int  # level-0 pixels
    height: int
    base_magnification: float
    mpp: float | None = None  # micrometres per level-0 pixel, when the file states it
    magnifications: list[Magnification]
    tiles: int
    labels: dict[str, str] = {}  # its labels (cbir label)
    dzi: str  # URL of its Deep Zoom descriptor


class Health(BaseModel):
    status: str
    generation: int
    recipe: str
    slides: int
