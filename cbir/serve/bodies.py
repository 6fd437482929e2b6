"""Request bodies of POST /search and /search/slide, read and checked before any work: a
JSON object (at most MAX_JSON_BYTES, strict JSON) or a multipart upload (one image of at most
MAX_UPLOAD_BYTES and MAX_QUERY_PIXELS). Every malformed body is a QueryError of one
line (HTTP 400); a body over its limit is BodyTooLarge (HTTP 413)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from cbir.errors import CbirError, QueryError, validation_line
from cbir.search.query import MAX_QUERY_PIXELS
from cbir.serve.schemas import RegionSearch, SearchOptions
from cbir.slides.open import to_rgb8

M = TypeVar("M", bound=BaseModel)

#: Uploaded query images: at most this many bytes (and MAX_QUERY_PIXELS pixels, as a
#: query file given to `cbir search`).
MAX_UPLOAD_BYTES = 64 << 20
#: A JSON search body: at most this many bytes.
MAX_JSON_BYTES = 64 << 10
#: Multipart: at most this many fields, each non-file field at most this many bytes.
MAX_FORM_FIELDS = 32
MAX_FIELD_BYTES = 64 << 10


class BodyTooLarge(CbirError):
    """A request body over its limit (HTTP 413)."""


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, read while counting: BodyTooLarge as soon as it passes `limit` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(body: bytes, model: type[M]) -> M:
    """A JSON body -> `model`; QueryError of one line when it is not UTF-8, not JSON
    (nesting too deep, NaN/Infinity, an integer of over 4300 digits), not an object or not
    a valid `model`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise QueryError(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise QueryError(f"body is not JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise QueryError("body is not JSON we accept (nested too deeply)") from None
    except ValueError as exc:  # parse_constant, or int digits over sys.get_int_max_str_digits
        raise QueryError(f"body is not JSON we accept ({str(exc).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise QueryError(f"body must be a JSON object, not {type(value).__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise QueryError(validation_line(exc)[:500]) from None


def parse_region(body: bytes) -> RegionSearch:
    """A JSON region search body -> RegionSearch (`parse_json`)."""
    return parse_json(body, RegionSearch)


async def read_upload(request: Request) -> tuple[bytes, str, SearchOptions]:
    """A multipart search -> (image file bytes, its file name, options)."""
    form = await request.form(
        max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FIELD_BYTES
    )
    try:
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise QueryError("multipart search needs an `image` file field")
        name = Path(upload.filename or "upload").name[:200]
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise BodyTooLarge(f"{name}: larger than {MAX_UPLOAD_BYTES} bytes")
        return data, name, form_options(form)
    finally:
        await form.close()


def form_options(form: Any) -> SearchOptions:
    """Search options from multipart form fields (strings; `slides` comma-separated)."""
    fields: dict[str, Any] = {}
    for key in SearchOptions.model_fields:
        value = form.get(key)
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            raise QueryError(f"{key}: must be a form field, not a file")
        if key == "slides":
            value = [v for v in value.split(",") if v.strip()]
        fields[key] = value
    unknown = set(form.keys()) - set(SearchOptions.model_fields) - {"image"}
    if unknown:
        raise QueryError(f"unknown field(s): {', '.join(sorted(unknown))[:200]}")
    try:
        return SearchOptions.model_validate(fields)
    except ValidationError as exc:
        raise QueryError(validation_line(exc)[:500]) from None


def decode_upload(data: bytes, name: str) -> np.ndarray:
    """Image file bytes -> (h, w, 3) uint8 RGB; QueryError naming the upload otherwise.
    The size is checked from the header, before decoding."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_QUERY_PIXELS:
                raise QueryError(
                    f"{name}: {im.width} x {im.height} px is larger than a query may be "
                    f"({MAX_QUERY_PIXELS / 1e6:.0f} megapixels; crop it or scale it down)"
                )
            return to_rgb8(im)  # as `cbir search` decodes a file: alpha onto white
    except UnidentifiedImageError:
        raise QueryError(f"{name}: not a readable image (not a format PIL reads)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise QueryError(f"{name}: not a readable image ({str(exc).splitlines()[0]})") from exc


_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def api_words(message: str) -> str:
    """A core error message as the HTTP API says it: a CLI flag (`--allow-background`)
    becomes the request option of the same name (`allow_background`)."""
    return _FLAG.sub(lambda m: m.group(1).replace("-", "_"), message)
