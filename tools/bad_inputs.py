#!/usr/bin/env python
"""Bad-input catalogue (issue 21): what a user or a hostile client gets wrong, each case
run against a fresh copy of a small bundle.

    python tools/bad_inputs.py [--json] [--category C] [--match TEXT]

Categories: query images, regions, command options, batches (`cbir search` of a folder
or CSV), damaged manifests and segment files (through search, info, add, label, remove,
compact and verify), HTTP bodies and HTTP requests (URLs, parameters, headers) against
`cbir serve`'s app in process. The rules, per case:

- CLI: no exception but SystemExit escapes; the exit code is the case's (2; 1 for
  `cbir verify`'s damage report and a batch with a failed query); stderr has exactly the
  case's number of non-empty lines (1; verify: one per damaged file).
- HTTP: a 4xx status (never 5xx) with a JSON body whose `detail` is one line.
- Every file of the bundle is byte-identical afterwards (`tree_digest`).

Prints a table per category (cases, tracebacks, changed bundles, not-one-line, wrong
code) and every failing case with what it printed; `--json` prints one JSON object. The
exit code is 1 when any case fails. tests/test_bad_inputs.py runs the same cases.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import traceback
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CATEGORIES = (
    "images",
    "regions",
    "options",
    "batches",
    "manifests",
    "segments",
    "http-bodies",
    "http-requests",
)
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json"}


# -- the bundle every case starts from ------------------------------------------------


def tree_digest(root: Path) -> str:
    """sha256 over the relative paths and contents of every file under `root` (not .lock,
    lock.mdb); the same as tests/conftest.py's."""
    digest = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".lock" and p.name != "lock.mdb":
            digest.update(str(p.relative_to(root)).encode())
            digest.update(p.read_bytes())
    return digest.hexdigest()


@dataclass
class Base:
    """Slides a.tif (2048 x 2048 px, 20x), b.tif (a rotated) and c.tif (a mirrored, not
    indexed), a stats-lsh32 bundle of a and b (never run against: each CLI case copies
    it), the copy the HTTP apps serve, and their test clients (made on first use)."""

    root: Path
    slides: dict[str, Path]
    bundle: Path
    served: Path
    clients: dict[str, Any] = field(default_factory=dict)
    _stack: list[Any] = field(default_factory=list)

    @classmethod
    def build(cls, root: Path) -> Base:
        import cbir
        from cbir.slides.sample import sample_image, write_pyramidal_tiff

        root.mkdir(parents=True, exist_ok=True)
        img = sample_image()
        slides = {
            "a": write_pyramidal_tiff(root / "a.tif", img, mpp=0.5),
            "b": write_pyramidal_tiff(root / "b.tif", np.ascontiguousarray(np.rot90(img)), 0.5),
            "c": write_pyramidal_tiff(root / "c.tif", np.ascontiguousarray(img[:, ::-1]), 0.5),
        }
        bundle = root / "base"
        cbir.build_index([slides["a"], slides["b"]], bundle, "stats-lsh32")
        served = root / "served"
        shutil.copytree(bundle, served)
        return cls(root, slides, bundle, served)

    def client(self, kind: str) -> Any:
        """ "open": the in-process defaults (no token, no Host check); "guarded": as `cbir
        serve` on 127.0.0.1 with a token, plus a 64 KiB body limit."""
        if kind not in self.clients:
            from fastapi.testclient import TestClient

            from cbir.serve.app import create_app
            from cbir.serve.config import ServeConfig

            config = ServeConfig(log_requests=False)
            url = "http://testserver"
            if kind == "guarded":
                config = ServeConfig.for_host("127.0.0.1", token=TOKEN).model_copy(
                    update={"max_body_bytes": 64 << 10, "log_requests": False}
                )
                url = "http://127.0.0.1:8000"
            app = create_app(self.served, device="cpu", config=config)
            client = TestClient(app, base_url=url, raise_server_exceptions=False)
            self.clients[kind] = client.__enter__()
            self._stack.append(client)
        return self.clients[kind]

    def close(self) -> None:
        while self._stack:
            self._stack.pop().__exit__(None, None, None)
        self.clients.clear()


@dataclass
class Ctx:
    """What a case's functions see: the base, a folder of its own (`work`) and the bundle
    it runs against (its own copy for CLI cases, the served one for HTTP cases)."""

    base: Base
    work: Path
    bundle: Path

    def p(self, name: str) -> Path:
        return self.work / name

    @property
    def a(self) -> Path:
        return self.base.slides["a"]

    @property
    def q(self) -> Path:
        """A good one-tile query image (written on first use)."""
        path = self.work / "q.png"
        if not path.exists():
            path.write_bytes(png(tissue()))
        return path


@dataclass(frozen=True)
class Req:
    method: str
    url: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One bad input: `make` writes it under ctx.work or damages ctx.bundle; `argv` (CLI)
    or `request` (HTTP) runs it. `codes`: the exit codes of a refusal; `lines`: its
    stderr lines; `ok_too`: odd but valid, so succeeding (exit 0, HTTP 200) is right too."""

    category: str
    name: str
    make: Callable[[Ctx], object] = lambda ctx: None
    argv: Callable[[Ctx], list[object]] | None = None
    request: Callable[[Ctx], Req] | None = None
    codes: tuple[int, ...] = (2,)
    lines: int = 1
    client: str = "open"
    ok_too: bool = False

    @property
    def id(self) -> str:
        return f"{self.category}/{self.name}"


@dataclass
class Outcome:
    case: Case
    code: int
    output: str
    traceback: bool = False
    changed: bool = False
    not_one_line: bool = False
    wrong_code: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.traceback or self.changed or self.not_one_line or self.wrong_code)

    def problems(self) -> list[str]:
        names = ("traceback", "changed", "not_one_line", "wrong_code")
        return [n for n in names if getattr(self, n)]

    def report(self) -> str:
        want = "/".join(map(str, self.case.codes + ((0,) if self.case.ok_too else ())))
        if self.case.request is not None:
            want = "4xx" + (" or 200" if self.case.ok_too else "")
        return (
            f"{self.case.id}: {', '.join(self.problems()) or 'ok'} (code {self.code}, "
            f"expected {want}): {self.output.strip()[:2000]}"
        )


# -- running a case -------------------------------------------------------------------


def run_case(case: Case, base: Base, scratch: Path) -> Outcome:
    """Make the case's input in a folder of its own under `scratch`, run it, check it."""
    work = Path(tempfile.mkdtemp(prefix=_slug(case.name)[:40] + "-", dir=scratch))
    if case.request is None:
        bundle = work / "idx"
        shutil.copytree(base.bundle, bundle)
    else:
        bundle = base.served
    ctx = Ctx(base, work, bundle)
    case.make(ctx)
    before = tree_digest(bundle)
    start = time.perf_counter()
    out = _run_cli(case, ctx) if case.request is None else _run_http(case, ctx)
    out.seconds = time.perf_counter() - start
    out.changed = tree_digest(bundle) != before
    if case.request is None:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _run_cli(case: Case, ctx: Ctx) -> Outcome:
    from typer.testing import CliRunner

    from cbir.cli.main import app

    assert case.argv is not None
    args = [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in case.argv(ctx)]
    r = CliRunner().invoke(app, args)
    stderr = r.stderr
    exc = r.exception
    escaped = exc is not None and not isinstance(exc, SystemExit)
    if escaped:
        assert exc is not None
        stderr += "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    text = r.stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    out = Outcome(case, r.exit_code, stderr if stderr.strip() else r.stdout[-500:])
    out.traceback = escaped or "Traceback (most recent call last)" in text
    out.wrong_code = r.exit_code not in case.codes and not (case.ok_too and r.exit_code == 0)
    out.not_one_line = r.exit_code != 0 and len(lines) != case.lines
    return out


def _run_http(case: Case, ctx: Ctx) -> Outcome:
    import logging

    assert case.request is not None
    # an earlier CLI case pointed logging at its runner's stream, closed now; the server's
    # library warnings (python-multipart on garbage framing) are not what is checked here
    logging.basicConfig(handlers=[logging.NullHandler()], force=True)
    req = case.request(ctx)
    r = ctx.base.client(case.client).request(req.method, req.url, **req.kwargs)
    out = Outcome(case, r.status_code, r.text[:2000])
    out.traceback = r.status_code >= 500 or "Traceback (most recent call last)" in r.text
    accepted = case.ok_too and r.status_code == 200
    out.wrong_code = not (400 <= r.status_code < 500 or accepted)
    try:
        detail = r.json()["detail"]
    except (ValueError, KeyError, TypeError):
        detail = None
    one = isinstance(detail, str) and detail.strip() and "\n" not in detail
    out.not_one_line = not (one or accepted)
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-") or "case"


# -- bad bytes ------------------------------------------------------------------------


def tissue(h: int = 224, w: int | None = None) -> np.ndarray:
    """(h, w, 3) uint8 of the sample slide's tissue."""
    from cbir.slides.sample import sample_image

    return np.ascontiguousarray(sample_image()[256 : 256 + h, 256 : 256 + (w or h)])


def encode(image: Image.Image | np.ndarray, fmt: str, **kw: Any) -> bytes:
    im = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png(image: Image.Image | np.ndarray, **kw: Any) -> bytes:
    return encode(image, "PNG", **kw)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(w: int, h: int, depth: int = 8, colour: int = 2) -> bytes:
    """A PNG whose header claims w x h px, with a few bytes of pixel data."""
    head = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def cut(data: bytes, at: float | int) -> bytes:
    """The first `at` bytes (int; negative: all but the last -at) or fraction (float)."""
    n = int(len(data) * at) if isinstance(at, float) else at
    return data[:n]


def flipped(data: bytes, at: float | int) -> bytes:
    out = bytearray(data)
    i = int(len(data) * at) if isinstance(at, float) else at
    out[i] ^= 0xFF
    return bytes(out)


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("q.png", png(tissue()))
    return buf.getvalue()


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def multipage_tiff() -> bytes:
    frames = [Image.fromarray(tissue()), Image.fromarray(tissue()[::-1])]
    return encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def animated_gif() -> bytes:
    frames = [Image.fromarray(tissue()), Image.fromarray(tissue()[::-1])]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(tissue()).convert("CMYK"), "JPEG")


def png16(value: int | None = None) -> bytes:
    grey = tissue()[..., 1].astype(np.uint16) * 257
    if value is not None:
        grey[:] = value
    return png(Image.fromarray(grey))


def float_tiff() -> bytes:
    return encode(Image.fromarray(tissue()[..., 1].astype(np.float32) / 255.0), "TIFF")


def transparent_png() -> bytes:
    rgba = np.concatenate([tissue(), np.zeros((224, 224, 1), np.uint8)], axis=2)
    return png(rgba)


def solid(value: int, n: int = 224) -> bytes:
    return png(np.full((n, n, 3), value, np.uint8))


def bad_crc_png() -> bytes:
    """A tissue PNG whose IHDR checksum is wrong."""
    return flipped(png(tissue()), 29)


def bad_idat_png() -> bytes:
    """A tissue PNG with one byte of its compressed pixels flipped (CRC fixed up)."""
    data = png(tissue())
    start = data.index(b"IDAT") - 4
    n = struct.unpack(">I", data[start : start + 4])[0]
    body = flipped(data[start + 8 : start + 8 + n], 0.3)
    return data[:start] + chunk(b"IDAT", body) + data[start + 12 + n :]


# -- cases: query images ----------------------------------------------------------------


def _file(name: str, content: Callable[[], bytes]) -> Callable[[Ctx], object]:
    return lambda ctx: ctx.p(name).write_bytes(content())


def _search(name: str, *extra: object) -> Callable[[Ctx], list[object]]:
    return lambda ctx: ["search", ctx.bundle, ctx.p(name), *extra]


IMAGE_FILES: list[tuple[str, str, Callable[[], bytes]]] = [
    ("empty file", "empty.png", lambda: b""),
    ("one byte", "one.png", lambda: b"\x89"),
    ("random bytes .png", "noise.png", lambda: random_bytes(4096)),
    ("random bytes .jpg", "noise.jpg", lambda: random_bytes(4096, 1)),
    ("random bytes .tif", "noise.tif", lambda: random_bytes(4096, 2)),
    ("random bytes, no suffix", "noise", lambda: random_bytes(4096, 3)),
    ("text named .png", "text.png", lambda: b"this is not an image\n" * 20),
    ("HTML named .jpg", "page.jpg", lambda: b"<!doctype html><html><body>404</body></html>"),
    ("PDF named .png", "doc.png", lambda: PDF),
    ("PDF", "doc.pdf", lambda: PDF),
    ("zip of a PNG named .png", "zipped.png", zip_bytes),
    ("gzip bytes", "q.png.gz", lambda: zlib.compress(png(tissue()))),
    ("PNG signature only", "sig.png", lambda: b"\x89PNG\r\n\x1a\n"),
    ("JPEG SOI only", "soi.jpg", lambda: b"\xff\xd8\xff"),
    ("TIFF header only", "head.tif", lambda: b"II*\x00\x08\x00\x00\x00"),
    ("big-endian TIFF header only", "head-mm.tif", lambda: b"MM\x00*\x00\x00\x00\x08"),
    ("BigTIFF header only", "big.tif", lambda: b"II+\x00\x08\x00\x00\x00" + b"\0" * 8),
    ("PNG cut after the signature", "cut8.png", lambda: cut(png(tissue()), 8)),
    ("PNG cut in the header", "cut20.png", lambda: cut(png(tissue()), 20)),
    ("PNG cut after the header", "cut33.png", lambda: cut(png(tissue()), 33)),
    ("PNG cut at 10%", "cut10.png", lambda: cut(png(tissue()), 0.1)),
    ("PNG cut at 50%", "cut50.png", lambda: cut(png(tissue()), 0.5)),
    ("PNG cut at 90%", "cut90.png", lambda: cut(png(tissue()), 0.9)),
    ("PNG of 448 px cut at 70%", "cut70-448.png", lambda: cut(png(tissue(448)), 0.7)),
    ("JPEG cut after SOI", "cut2.jpg", lambda: cut(encode(tissue(), "JPEG"), 2)),
    ("JPEG cut in the headers", "cut100.jpg", lambda: cut(encode(tissue(), "JPEG"), 100)),
    ("JPEG cut at 30%", "cut30.jpg", lambda: cut(encode(tissue(), "JPEG"), 0.3)),
    ("JPEG cut at 60%", "cut60.jpg", lambda: cut(encode(tissue(), "JPEG"), 0.6)),
    ("JPEG cut at 95%", "cut95.jpg", lambda: cut(encode(tissue(), "JPEG"), 0.95)),
    ("TIFF cut at 16 bytes", "cut16.tif", lambda: cut(encode(tissue(), "TIFF"), 16)),
    ("TIFF cut at 50%", "cut50.tif", lambda: cut(encode(tissue(), "TIFF"), 0.5)),
    ("TIFF cut before its IFD", "cut-ifd.tif", lambda: cut(encode(tissue(), "TIFF"), -100)),
    (
        "LZW TIFF cut at 40%",
        "cut-lzw.tif",
        lambda: cut(encode(tissue(), "TIFF", compression="tiff_lzw"), 0.4),
    ),
    ("BMP cut at 50%", "cut.bmp", lambda: cut(encode(tissue(), "BMP"), 0.5)),
    ("WebP cut at 50%", "cut.webp", lambda: cut(encode(tissue(), "WEBP"), 0.5)),
    ("GIF cut at 50%", "cut.gif", lambda: cut(animated_gif(), 0.5)),
    ("PNG with a bad header CRC", "crc.png", bad_crc_png),
    ("PNG with damaged pixel data", "idat.png", bad_idat_png),
    ("PNG header claims 60000 x 60000", "huge.png", lambda: png_claiming(60000, 60000)),
    ("PNG header claims 7000 x 7000", "big.png", lambda: png_claiming(7000, 7000)),
    ("PNG header claims 1 x 2^31-1", "tall.png", lambda: png_claiming(1, 2**31 - 1)),
    ("PNG header claims 0 x 0", "zero.png", lambda: png_claiming(0, 0)),
    ("PNG header claims bit depth 3", "depth3.png", lambda: png_claiming(224, 224, 3, 0)),
    ("PNG header claims colour type 5", "colour5.png", lambda: png_claiming(224, 224, 8, 5)),
    ("1 x 1 px", "1x1.png", lambda: png(tissue(1))),
    ("100 x 100 px", "100.png", lambda: png(tissue(100))),
    ("111 x 224 px (under half a tile)", "111.png", lambda: png(tissue(224, 111))),
    ("224 x 1 px", "224x1.png", lambda: png(tissue(1, 224))),
    ("1 x 3000 px", "1x3000.png", lambda: png(np.zeros((3000, 1, 3), np.uint8))),
    ("100 x 100 px WebP", "100.webp", lambda: encode(tissue(100), "WEBP")),
    ("100 x 100 px BMP", "100.bmp", lambda: encode(tissue(100), "BMP")),
    ("all white", "white.png", lambda: solid(255)),
    ("all white 448 px", "white448.png", lambda: solid(255, 448)),
    ("RGBA fully transparent", "clear.png", transparent_png),
    ("16-bit PNG all white", "white16.png", lambda: png16(65535)),
    ("grey all white", "grey-white.png", lambda: png(np.full((224, 224), 255, np.uint8))),
    (
        "palette all white",
        "pal-white.png",
        lambda: png(Image.fromarray(np.full((224, 224, 3), 255, np.uint8)).convert("P")),
    ),
    ("1-bit all white", "bw.png", lambda: png(Image.new("1", (224, 224), 1))),
]

#: Unusual but valid files: refused in one line, or searched (exit 0).
ODD_IMAGES: list[tuple[str, str, Callable[[], bytes]]] = [
    ("all black", "black.png", lambda: solid(0)),
    ("16-bit grey PNG", "grey16.png", png16),
    ("palette PNG", "pal.png", lambda: png(Image.fromarray(tissue()).convert("P"))),
    ("grey PNG", "grey.png", lambda: png(tissue()[..., 1])),
    ("CMYK JPEG", "cmyk.jpg", cmyk_jpeg),
    ("float TIFF", "float.tif", float_tiff),
    ("multi-page TIFF", "pages.tif", multipage_tiff),
    ("animated GIF", "anim.gif", animated_gif),
    ("JPEG named .png", "jpeg.png", lambda: encode(tissue(), "JPEG")),
    ("223 x 224 px (resized up to a tile)", "223.png", lambda: png(tissue(224, 223))),
]


def _image_cases() -> list[Case]:
    cases = [
        Case("images", name, _file(fname, content), _search(fname))
        for name, fname, content in IMAGE_FILES
    ]
    cases += [
        Case("images", name, _file(fname, content), _search(fname), ok_too=True)
        for name, fname, content in ODD_IMAGES
    ]

    def loop(ctx: Ctx) -> None:
        os.symlink("loop.png", ctx.p("loop.png"))

    def dangling(ctx: Ctx) -> None:
        os.symlink(ctx.p("gone.png"), ctx.p("link.png"))

    def odd_name(ctx: Ctx) -> None:
        (ctx.work / os.fsdecode(b"q\xff\xfe.png")).write_bytes(random_bytes(64))

    def newline_name(ctx: Ctx) -> None:
        ctx.p("two\nlines.png").write_bytes(random_bytes(64))

    cases += [
        Case("images", "missing path", argv=_search("nothing.png")),
        Case("images", "symlink loop", loop, _search("loop.png")),
        Case("images", "dangling symlink", dangling, _search("link.png")),
        Case("images", "empty directory", lambda c: c.p("d").mkdir(), _search("d")),
        Case("images", "directory named .png", lambda c: c.p("d.png").mkdir(), _search("d.png")),
        Case(
            "images",
            "not-UTF-8 file name",
            odd_name,
            lambda c: ["search", c.bundle, c.work / os.fsdecode(b"q\xff\xfe.png")],
        ),  # fmt: skip
        Case("images", "newline in the file name", newline_name, _search("two\nlines.png")),
        Case("images", "the bundle as query", argv=lambda c: ["search", c.bundle, c.bundle]),
        Case(
            "images",
            "manifest.json as query",
            argv=lambda c: ["search", c.bundle, c.bundle / "manifest.json"],
        ),  # fmt: skip
        Case("images", "/dev/null", argv=lambda c: ["search", c.bundle, "/dev/null"]),
        Case(
            "images",
            "a segment index as query",
            argv=lambda c: ["search", c.bundle, c.bundle / "seg-000001" / "tiles.fbin"],
        ),  # fmt: skip
    ]
    return cases


# -- cases: regions ---------------------------------------------------------------------


def _region(spec: str, slide: str | None = None) -> Callable[[Ctx], list[object]]:
    def argv(ctx: Ctx) -> list[object]:
        path = ctx.a if slide is None else ctx.p(slide)
        return ["search", ctx.bundle, "--region", spec.replace("A", str(path))]

    return argv


REGIONS: list[tuple[str, str]] = [
    ("negative x", "A:-10,0,448,448@20x"),
    ("negative y", "A:0,-448,448,448@20x"),
    ("zero width", "A:0,0,0,448@20x"),
    ("zero height", "A:0,0,448,0@20x"),
    ("negative width", "A:0,0,-448,448@20x"),
    ("huge width", "A:0,0,1000000000,448@20x"),
    ("huge both", "A:0,0,1000000000,1000000000@20x"),
    ("outside the slide", "A:5000,5000,448,448@20x"),
    ("past the right edge", "A:1900,0,448,448@20x"),
    ("past the bottom edge", "A:0,1900,448,448@20x"),
    ("x past 2^63", "A:9223372036854775808,0,448,448@20x"),
    ("width past 2^64", "A:0,0,18446744073709551617,448@20x"),
    ("a 5000-digit x", "A:" + "9" * 5000 + ",0,448,448@20x"),
    ("coordinate 1e30", "A:1e30,0,448,448@20x"),
    ("float coordinates", "A:0.5,0,448,448@20x"),
    ("magnification 0", "A:0,0,448,448@0x"),
    ("magnification 0.0001", "A:0,0,448,448@0.0001x"),
    ("magnification above base", "A:0,0,448,448@40x"),
    ("magnification absurd", "A:0,0,448,448@100000x"),
    ("magnification 1e308", "A:0,0,448,448@" + "9" * 309 + "x"),
    ("magnification negative", "A:0,0,448,448@-20x"),
    ("magnification nan", "A:0,0,448,448@nanx"),
    ("magnification inf", "A:0,0,448,448@infx"),
    ("magnification a word", "A:0,0,448,448@highx"),
    ("smaller than a tile", "A:0,0,100,100@20x"),
    ("under half a tile at 5x", "A:0,0,400,400@5x"),
    ("no @ and under one tile at every magnification", "A:0,0,100,100"),
    ("two @", "A:0,0,448,448@20x@10x"),
    ("three numbers", "A:0,0,448@20x"),
    ("five numbers", "A:0,0,448,448,448@20x"),
    ("letters", "A:a,b,c,d@20x"),
    ("no colon", "A,0,0,448,448@20x"),
    ("no slide", ":0,0,448,448@20x"),
    ("nonsense", "hello"),
    ("empty string", ""),
    ("spaces", "   "),
    ("missing slide file", "/nonexistent/slide.svs:0,0,448,448@20x"),
]


def _region_cases() -> list[Case]:
    cases = [Case("regions", name, argv=_region(spec)) for name, spec in REGIONS]
    cases += [
        Case("regions", "a directory as slide", lambda c: c.p("d.svs").mkdir(),
             _region("A:0,0,448,448@20x", "d.svs")),
        Case("regions", "garbage file as slide", _file("g.svs", lambda: random_bytes(8192)),
             _region("A:0,0,448,448@20x", "g.svs")),
        Case("regions", "empty file as slide", _file("e.tif", lambda: b""),
             _region("A:0,0,448,448@20x", "e.tif")),
        Case("regions", "truncated TIFF slide", lambda c: c.p("t.tif").write_bytes(
            cut(c.a.read_bytes(), 0.3)), _region("A:0,0,448,448@20x", "t.tif")),
        Case("regions", "TIFF header only as slide", _file("h.tif", lambda: b"II*\x00"),
             _region("A:0,0,448,448@20x", "h.tif")),
        Case("regions", "PNG named .svs as slide", _file("p.svs", lambda: png(tissue(100))),
             _region("A:0,0,448,448@20x", "p.svs")),
        Case("regions", "a query and --region", argv=lambda c: [
            "search", c.bundle, c.q, "--region", f"{c.a}:0,0,448,448@20x"]),
        Case("regions", "neither query nor --region", argv=lambda c: ["search", c.bundle]),
        Case("regions", "--exclude-query-slide with an image", argv=lambda c: [
            "search", c.bundle, c.q, "--exclude-query-slide"]),
    ]  # fmt: skip
    return cases


# -- cases: command options -------------------------------------------------------------


def _with_q(*extra: object) -> Callable[[Ctx], list[object]]:
    return lambda ctx: ["search", ctx.bundle, ctx.q, *extra]


SEARCH_OPTIONS: list[tuple[str, list[object]]] = [
    ("k 0", ["-k", "0"]),
    ("k -1", ["-k", "-1"]),
    ("k a word", ["-k", "ten"]),
    ("k 1.5", ["-k", "1.5"]),
    ("k without a value", ["-k"]),
    ("scale 0x", ["--scale", "0x"]),
    ("scale -20x", ["--scale", "-20x"]),
    ("scale a word", ["--scale", "biggest"]),
    ("scale not indexed (7x)", ["--scale", "7x"]),
    ("scale 1e400x", ["--scale", "1e400x"]),
    ("scale nanx", ["--scale", "nanx"]),
    ("scale auto (removed)", ["--scale", "auto"]),
    ("min-similarity 2", ["--min-similarity", "2"]),
    ("min-similarity -0.5", ["--min-similarity", "-0.5"]),
    ("min-similarity nan", ["--min-similarity", "nan"]),
    ("min-similarity a word", ["--min-similarity", "high"]),
    ("expand -1", ["--expand", "-1"]),
    ("verify without local features", ["--verify"]),
    ("slides empty", ["--slides", ","]),
    ("slides unknown", ["--slides", "nope.svs"]),
    ("vote empty key", ["--vote", ""]),
    ("vote key with =", ["--vote", "a=b"]),
    ("unknown option", ["--frobnicate"]),
    ("json with a value", ["--json=yes"]),
]


def _options_cases() -> list[Case]:
    cases = [Case("options", f"search {n}", argv=_with_q(*extra)) for n, extra in SEARCH_OPTIONS]
    cases += [  # more hits than the bundle has: all of them, and why fewer than k
        Case("options", "search k 10^12", argv=_with_q("-k", str(10**12)), ok_too=True),
        Case("options", "search k 2^63", argv=_with_q("-k", str(2**63)), ok_too=True),
        # ignored where they do not apply: no query expansion of binary codes, no network
        Case("options", "search expand on a binary recipe", argv=_with_q("--expand", "3"),
             ok_too=True),
        Case("options", "search device nonsense (no network)", argv=_with_q("--device", "tpu9"),
             ok_too=True),
    ]  # fmt: skip

    def file_target(ctx: Ctx) -> None:
        ctx.p("out.txt").write_text("keep me")

    def full_dir(ctx: Ctx) -> None:
        ctx.p("full").mkdir()
        ctx.p("full/mine.txt").write_text("keep me")

    def bad_toml(ctx: Ctx) -> None:
        ctx.p("bad.toml").write_text("name = [unclosed\n")

    def unknown_component(ctx: Ctx) -> None:
        text = (Path(__file__).parents[1] / "indexes" / "stats-lsh32.toml").read_text()
        ctx.p("odd.toml").write_text(text.replace('"stats"', '"no-such-descriptor"'))

    def build(*extra: object, slide: str | None = None) -> Callable[[Ctx], list[object]]:
        def argv(ctx: Ctx) -> list[object]:
            src = ctx.base.slides["c"] if slide is None else ctx.p(slide)
            return ["build-index", src, "--out", ctx.p("new"), *extra]

        return argv

    cases += [
        Case("options", "search --export onto a file", file_target,
             lambda c: ["search", c.bundle, c.q, "--export", c.p("out.txt")]),
        Case("options", "search --export into a full folder", full_dir,
             lambda c: ["search", c.bundle, c.q, "--export", c.p("full")]),
        Case("options", "build-index unknown recipe", argv=build("--recipe", "nope")),
        Case("options", "build-index recipe TOML unparsable", bad_toml,
             lambda c: ["build-index", c.base.slides["c"], "--out", c.p("new"),
                        "--recipe", c.p("bad.toml")]),
        Case("options", "build-index recipe of an unknown descriptor", unknown_component,
             lambda c: ["build-index", c.base.slides["c"], "--out", c.p("new"),
                        "--recipe", c.p("odd.toml")]),
        Case("options", "build-index stride 0", argv=build("--stride", "0")),
        Case("options", "build-index stride -112", argv=build("--stride", "-112")),
        Case("options", "build-index stride 100 (no divisor)", argv=build("--stride", "100")),
        Case("options", "build-index stride 1000", argv=build("--stride", "1000")),
        Case("options", "build-index magnifications 0", argv=build("--magnifications", "0")),
        Case("options", "build-index magnifications words", argv=build("--magnifications", "a,b")),
        Case("options", "build-index magnifications -5", argv=build("--magnifications", "-5")),
        Case("options", "build-index magnifications nan", argv=build("--magnifications", "nan")),
        Case("options", "build-index magnifications empty item",
             argv=build("--magnifications", "5,,20")),
        Case("options", "build-index min-tissue 2", argv=build("--min-tissue", "2")),
        Case("options", "build-index base-magnification 0",
             argv=build("--base-magnification", "0")),
        Case("options", "build-index base-magnification -20",
             argv=build("--base-magnification", "-20")),
        Case("options", "build-index base-magnification nan",
             argv=build("--base-magnification", "nan")),
        Case("options", "build-index weights missing", argv=build("--weights", "/no/w.pt")),
        Case("options", "build-index missing slide", argv=build(slide="none.svs")),
        Case("options", "build-index text file as slide",
             _file("t.svs", lambda: b"not a slide\n"), build(slide="t.svs")),
        Case("options", "build-index empty folder", lambda c: c.p("e").mkdir(),
             build(slide="e")),
        Case("options", "build-index onto the bundle without --overwrite",
             argv=lambda c: ["build-index", c.base.slides["c"], "--out", c.bundle]),
        Case("options", "build-index onto a file", file_target,
             lambda c: ["build-index", c.base.slides["c"], "--out", c.p("out.txt")]),
        Case("options", "build-index no slides", argv=lambda c: ["build-index", "--out", c.p("n")]),
        Case("options", "add missing slide", argv=lambda c: ["add", c.bundle, c.p("none.svs")]),
        Case("options", "add text file", _file("t.svs", lambda: b"text\n"),
             lambda c: ["add", c.bundle, c.p("t.svs")]),
        Case("options", "add a slide already indexed", argv=lambda c: ["add", c.bundle, c.a]),
        Case("options", "add with another recipe",
             argv=lambda c: ["add", c.bundle, c.base.slides["c"], "--recipe", "stats-lsh64"]),
        Case("options", "add to a missing bundle",
             argv=lambda c: ["add", c.p("none"), c.base.slides["c"]]),
        Case("options", "add to a file", file_target,
             lambda c: ["add", c.p("out.txt"), c.base.slides["c"]]),
        Case("options", "add min-tissue -1",
             argv=lambda c: ["add", c.bundle, c.base.slides["c"], "--min-tissue", "-1"]),
        Case("options", "add base-magnification 0",
             argv=lambda c: ["add", c.bundle, c.base.slides["c"], "--base-magnification", "0"]),
        Case("options", "label unknown slide",
             argv=lambda c: ["label", c.bundle, "nope.svs", "kind=x"]),
        Case("options", "label without =", argv=lambda c: ["label", c.bundle, "a.tif", "kind"]),
        Case("options", "label empty key", argv=lambda c: ["label", c.bundle, "a.tif", "=x"]),
        Case("options", "label empty value", argv=lambda c: ["label", c.bundle, "a.tif", "k="]),
        Case("options", "label missing bundle",
             argv=lambda c: ["label", c.p("none"), "a.tif", "kind=x"]),
        Case("options", "remove unknown slide", argv=lambda c: ["remove", c.bundle, "nope.svs"]),
        Case("options", "remove from a missing bundle",
             argv=lambda c: ["remove", c.p("none"), "a.tif"]),
        Case("options", "info missing bundle", argv=lambda c: ["info", c.p("none")]),
        Case("options", "info of a file", file_target, lambda c: ["info", c.p("out.txt")]),
        Case("options", "info of an empty folder", lambda c: c.p("e").mkdir(),
             lambda c: ["info", c.p("e")]),
        Case("options", "info unknown option", argv=lambda c: ["info", c.bundle, "--all"]),
        Case("options", "compact missing bundle", argv=lambda c: ["compact", c.p("none")]),
        Case("options", "verify missing bundle", argv=lambda c: ["verify", c.p("none")]),
        Case("options", "search missing bundle", argv=lambda c: ["search", c.p("none"), c.q]),
        Case("options", "unknown command", argv=lambda c: ["serach", c.bundle]),
    ]  # fmt: skip
    return cases


# -- cases: batches -------------------------------------------------------------------


def _csv(text: str | bytes) -> Callable[[Ctx], object]:
    def make(ctx: Ctx) -> None:
        data = text if isinstance(text, bytes) else text.replace("A", str(ctx.a)).encode()
        ctx.p("r.csv").write_bytes(data)

    return make


def _batch_cases() -> list[Case]:
    head = "slide,x,y,w,h,magnification\n"

    def folder(*files: tuple[str, bytes]) -> Callable[[Ctx], object]:
        def make(ctx: Ctx) -> None:
            ctx.p("f").mkdir()
            for name, data in files:
                ctx.p(f"f/{name}").write_bytes(data)

        return make

    def csv_search(ctx: Ctx) -> list[object]:
        return ["search", ctx.bundle, ctx.p("r.csv")]

    def folder_search(ctx: Ctx) -> list[object]:
        return ["search", ctx.bundle, ctx.p("f")]

    return [
        Case("batches", "folder without images", folder(("a.txt", b"x")), folder_search),
        Case("batches", "folder of one garbage image", folder(("g.png", random_bytes(99))),
             folder_search, codes=(1,)),
        Case("batches", "folder of one blank image", folder(("w.png", solid(255))),
             folder_search, codes=(1,)),
        Case("batches", "CSV empty", _csv(""), csv_search),
        Case("batches", "CSV header only", _csv(head), csv_search),
        Case("batches", "CSV missing columns", _csv("slide,x,y\nA,0,0\n"), csv_search),
        Case("batches", "CSV not UTF-8", _csv(b"\xff\xfe\xfa,\x00\n"), csv_search),
        Case("batches", "CSV row of words", _csv(head + "A,a,b,c,d,e\n"), csv_search,
             codes=(1,)),
        Case("batches", "CSV row outside the slide", _csv(head + "A,9000,0,448,448,20\n"),
             csv_search, codes=(1,)),
        Case("batches", "CSV row of a missing slide", _csv(head + "nope.svs,0,0,448,448,20\n"),
             csv_search, codes=(1,)),
        Case("batches", "CSV row magnification 0", _csv(head + "A,0,0,448,448,0\n"),
             csv_search, codes=(1,)),
        Case("batches", "CSV row short", _csv(head + "A,0,0\n"), csv_search, codes=(1,)),
        Case("batches", "CSV row with a NUL", _csv(head + "A,0,0,448,44\x008,20\n"),
             csv_search, codes=(1,)),
    ]  # fmt: skip


# -- cases: damaged manifests -----------------------------------------------------------


def _edit(fn: Callable[[dict[str, Any]], object]) -> Callable[[Ctx], object]:
    def make(ctx: Ctx) -> None:
        path = ctx.bundle / "manifest.json"
        m = json.loads(path.read_text())
        fn(m)
        path.write_text(json.dumps(m, indent=2))

    return make


def _manifest_bytes(fn: Callable[[bytes], bytes]) -> Callable[[Ctx], object]:
    def make(ctx: Ctx) -> None:
        path = ctx.bundle / "manifest.json"
        path.write_bytes(fn(path.read_bytes()))

    return make


def _seg(m: dict[str, Any]) -> dict[str, Any]:
    return m["segments"][0]


def _dup_segment(m: dict[str, Any]) -> None:
    m["segments"].append(dict(_seg(m)))


MANIFESTS: list[tuple[str, Callable[[Ctx], object]]] = [
    ("truncated", _manifest_bytes(lambda b: cut(b, 0.5))),
    ("empty", _manifest_bytes(lambda b: b"")),
    ("a JSON list", _manifest_bytes(lambda b: b"[]")),
    ("null", _manifest_bytes(lambda b: b"null")),
    ("not UTF-8", _manifest_bytes(lambda b: b"\xff\xfe" + b)),
    ("nested 100000 deep", _manifest_bytes(lambda b: b"[" * 100_000 + b"]" * 100_000)),
    ("unknown format version", _edit(lambda m: m.update(format_version=99))),
    ("format version a string", _edit(lambda m: m.update(format_version="3"))),
    ("next_slide_id a string", _edit(lambda m: m.update(next_slide_id="three"))),
    ("negative next_slide_id", _edit(lambda m: m.update(next_slide_id=-3))),
    ("next_slide_id 10^30", _edit(lambda m: m.update(next_slide_id=10**30))),
    ("negative generation", _edit(lambda m: m.update(generation=-1))),
    ("segments missing", _edit(lambda m: m.pop("segments"))),
    ("recipe missing", _edit(lambda m: m.pop("recipe"))),
    ("segments an object", _edit(lambda m: m.update(segments={"a": 1}))),
    ("segment name ..", _edit(lambda m: _seg(m).update(name=".."))),
    ("segment name climbs out", _edit(lambda m: _seg(m).update(name="../../etc"))),
    ("segment name absolute", _edit(lambda m: _seg(m).update(name="/tmp"))),
    ("state name climbs out", _edit(lambda m: m.update(state="../state-000001"))),
    ("duplicate segment names", _edit(_dup_segment)),
    ("negative rows", _edit(lambda m: _seg(m)["artifacts"]["codes"].update(rows=-1))),
    ("rows 10^30", _edit(lambda m: _seg(m)["artifacts"]["codes"].update(rows=10**30))),
    ("counts wrong", _edit(lambda m: m["counts"].update(tiles=1))),
    ("tile size 0", _edit(lambda m: m["recipe"]["tiling"].update(tile_size=0))),
    ("bits 0", _edit(lambda m: m["encoder"].update(bits=0))),
    ("unknown descriptor", _edit(lambda m: m["descriptor"].update(name="nope"))),
    ("pipeline sha256 wrong", _edit(lambda m: m.update(pipeline_sha256="0" * 64))),
    ("labels a list", _edit(lambda m: m.update(labels=[1, 2]))),
    ("replaced by a directory", lambda c: ((c.bundle / "manifest.json").unlink(),
                                           (c.bundle / "manifest.json").mkdir())),
]  # fmt: skip

#: Commands a damaged bundle runs through: (name, argv, exit code).
COMMANDS: dict[str, tuple[Callable[[Ctx], list[object]], int]] = {
    "search": (lambda c: ["search", c.bundle, c.q], 2),
    "info": (lambda c: ["info", c.bundle], 2),
    "add": (lambda c: ["add", c.bundle, c.base.slides["c"]], 2),
    "label": (lambda c: ["label", c.bundle, "a.tif", "kind=tumour"], 2),
    "remove": (lambda c: ["remove", c.bundle, "a.tif"], 2),
    "compact": (lambda c: ["compact", c.bundle], 2),
    "verify": (lambda c: ["verify", c.bundle], 1),
}


def _manifest_cases() -> list[Case]:
    return [
        Case("manifests", f"{name} / {cmd}", make, argv, codes=(code,))
        for name, make in MANIFESTS
        for cmd, (argv, code) in COMMANDS.items()
    ]


# -- cases: damaged segment and state files ---------------------------------------------


def _damage(rel: str, fn: Callable[[bytes], bytes]) -> Callable[[Ctx], object]:
    def make(ctx: Ctx) -> None:
        path = ctx.bundle / rel
        path.write_bytes(fn(path.read_bytes()))

    return make


def _to_dir(rel: str) -> Callable[[Ctx], object]:
    def make(ctx: Ctx) -> None:
        path = ctx.bundle / rel
        path.unlink()
        path.mkdir()
        (path / "x").write_bytes(b"x")

    return make


FBIN = "seg-000001/tiles.fbin"
MDB = "seg-000001/meta.lmdb/data.mdb"
NPZ = "state-000001/pipeline.npz"
EMPTY = "state-000001/tiles.empty.fbin"

SEGMENTS: list[tuple[str, Callable[[Ctx], object]]] = [
    ("tiles.fbin byte 0 flipped", _damage(FBIN, lambda b: flipped(b, 0))),
    ("tiles.fbin byte 16 flipped", _damage(FBIN, lambda b: flipped(b, 16))),
    ("tiles.fbin middle byte flipped", _damage(FBIN, lambda b: flipped(b, 0.5))),
    ("tiles.fbin last byte flipped", _damage(FBIN, lambda b: flipped(b, -1))),
    ("tiles.fbin truncated", _damage(FBIN, lambda b: cut(b, 0.5))),
    ("tiles.fbin one byte short", _damage(FBIN, lambda b: cut(b, -1))),
    ("tiles.fbin one byte long", _damage(FBIN, lambda b: b + b"\0")),
    ("tiles.fbin zero length", _damage(FBIN, lambda b: b"")),
    ("tiles.fbin a directory", _to_dir(FBIN)),
    ("tiles.fbin deleted", lambda c: (c.bundle / FBIN).unlink()),
    ("data.mdb byte 0 flipped", _damage(MDB, lambda b: flipped(b, 0))),
    ("data.mdb byte 4200 flipped", _damage(MDB, lambda b: flipped(b, 4200))),
    ("data.mdb middle byte flipped", _damage(MDB, lambda b: flipped(b, 0.5))),
    ("data.mdb truncated", _damage(MDB, lambda b: cut(b, 0.3))),
    ("data.mdb zero length", _damage(MDB, lambda b: b"")),
    ("data.mdb a directory", _to_dir(MDB)),
    ("meta.lmdb deleted", lambda c: shutil.rmtree(c.bundle / "seg-000001" / "meta.lmdb")),
    ("segment a file", lambda c: (shutil.rmtree(c.bundle / "seg-000001"),
                                  (c.bundle / "seg-000001").write_bytes(b"x"))),
    ("pipeline.npz byte flipped", _damage(NPZ, lambda b: flipped(b, 0.5))),
    ("pipeline.npz truncated", _damage(NPZ, lambda b: cut(b, 0.5))),
    ("pipeline.npz zero length", _damage(NPZ, lambda b: b"")),
    ("pipeline.npz a directory", _to_dir(NPZ)),
    ("tiles.empty.fbin byte flipped", _damage(EMPTY, lambda b: flipped(b, 0.5))),
    ("tiles.empty.fbin truncated", _damage(EMPTY, lambda b: cut(b, 0.5))),
    ("tiles.empty.fbin zero length", _damage(EMPTY, lambda b: b"")),
    ("tiles.empty.fbin a directory", _to_dir(EMPTY)),
]  # fmt: skip

SEGMENT_COMMANDS = ("search", "info", "add", "verify")


def _segment_cases() -> list[Case]:
    return [
        Case("segments", f"{name} / {cmd}", make, COMMANDS[cmd][0], codes=(COMMANDS[cmd][1],))
        for name, make in SEGMENTS
        for cmd in SEGMENT_COMMANDS
    ]


# -- cases: HTTP bodies -----------------------------------------------------------------

REGION = b'{"slide": 1, "x": 448, "y": 448, "w": 448, "h": 448, "magnification": 20'


def _post_json(body: bytes, headers: dict[str, str] | None = None) -> Callable[[Ctx], Req]:
    return lambda ctx: Req("POST", "/search", {"content": body, "headers": headers or JSON})


def _region_json(**fields: Any) -> bytes:
    base: dict[str, Any] = {"slide": 1, "x": 448, "y": 448, "w": 448, "h": 448}
    return json.dumps({**base, **fields}).encode()


def _upload(
    content: Callable[[], bytes] | bytes,
    name: str = "q.png",
    data: dict[str, str] | None = None,
) -> Callable[[Ctx], Req]:
    def request(ctx: Ctx) -> Req:
        raw = content() if callable(content) else content
        kw: dict[str, Any] = {"files": {"image": (name, raw, "image/png")}}
        if data:
            kw["data"] = data
        return Req("POST", "/search", kw)

    return request


BAD_JSON: list[tuple[str, bytes]] = [
    ("unclosed object", b"{"),
    ("truncated region", REGION),
    ("trailing garbage", REGION + b"} xyz"),
    ("trailing comma", REGION + b",}"),
    ("single quotes", b"{'slide': 1}"),
    ("comments", b"// region\n" + REGION + b"}"),
    ("nested arrays 100000 deep", b"[" * 100_000 + b"]" * 100_000),
    ("nested objects 50000 deep", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ("nested inside a field", b'{"slide": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"),
    ("invalid UTF-8", b'{"slide": "\xff\xfe"}'),
    ("lone surrogate", REGION + b', "vote": "\\ud800"}'),
    ("NUL bytes", b"\x00" * 64),
    ("UTF-16", (REGION + b"}").decode().encode("utf-16")),
    ("top-level list", b"[1, 2, 3]"),
    ("top-level string", b'"slide"'),
    ("top-level number", b"1"),
    ("null", b"null"),
    ("empty body", b""),
    ("whitespace body", b"   \n"),
    ("a 5000-digit integer", b'{"slide": ' + b"9" * 5000 + b"}"),
    ("a 4000-digit x", REGION + b', "x": ' + b"9" * 4000 + b"}"),
    ("magnification 1e999", REGION + b', "magnification": 1e999}'),
    ("NaN", REGION.replace(b"20", b"NaN") + b"}"),
    ("Infinity", REGION.replace(b"20", b"Infinity") + b"}"),
    ("-Infinity", REGION.replace(b"20", b"-Infinity") + b"}"),
    ("k -1", _region_json(k=-1)),
    ("k 0", _region_json(k=0)),
    ("k 10^6", _region_json(k=10**6)),
    ("k a word", _region_json(k="ten")),
    ("k 1.5", _region_json(k=1.5)),
    ("k a list", _region_json(k=[1])),
    ("slide true", _region_json(slide=True)),
    ("slide a path", _region_json(slide="../../etc/passwd")),
    ("slide 1.5", _region_json(slide=1.5)),
    ("slide -1", _region_json(slide=-1)),
    ("slide 2^70", _region_json(slide=2**70)),
    ("unknown slide", _region_json(slide=99)),
    ("slide missing", json.dumps({"x": 0, "y": 0, "w": 448, "h": 448}).encode()),
    ("x negative", _region_json(x=-1)),
    ("w 0", _region_json(w=0)),
    ("w negative", _region_json(w=-448)),
    ("outside the slide", _region_json(x=10**6, y=10**6)),
    ("past the edge", _region_json(x=1900)),
    ("w 10^9", _region_json(w=10**9, h=10**9, magnification=20)),
    ("magnification 0", _region_json(magnification=0)),
    ("magnification -20", _region_json(magnification=-20)),
    ("magnification 1e9", _region_json(magnification=1e9)),
    ("magnification above base", _region_json(magnification=40)),
    ("magnification a word", _region_json(magnification="high")),
    ("smaller than a tile everywhere", _region_json(w=10, h=10)),
    ("unknown field", _region_json(colour="red")),
    ("min_similarity 2", _region_json(min_similarity=2)),
    ("expand -1", _region_json(expand=-1)),
    ("expand 10^6", _region_json(expand=10**6)),
    ("scale a word", _region_json(scale="biggest")),
    ("scale 0x", _region_json(scale="0x")),
    ("scale a number", _region_json(scale=20)),
    ("slides of names", _region_json(slides=["a.tif"])),
    ("slides unknown id", _region_json(slides=[99])),
    ("slides an object", _region_json(slides={"a": 1})),
    ("vote a number", _region_json(vote=3)),
    ("vote empty", _region_json(vote="")),
    ("allow_background a word", _region_json(allow_background="maybe")),
    ("verify without local features", _region_json(verify=True)),
    ("exclude_query_slide a list", _region_json(exclude_query_slide=[1])),
    ("BOM first", b"\xef\xbb\xbf" + REGION + b"}"),
    ("over 64 KiB", REGION + b', "vote": "' + b"a" * (70 << 10) + b'"}'),
]


def _raw(kind: str, body: bytes) -> Callable[[Ctx], Req]:
    return lambda ctx: Req("POST", "/search", {"content": body, "headers": {"content-type": kind}})


def _http_body_cases() -> list[Case]:
    cases = [Case("http-bodies", f"json {n}", request=_post_json(b)) for n, b in BAD_JSON]
    uploads: list[tuple[str, Callable[[Ctx], Req]]] = [
        ("empty image", _upload(b"")),
        ("random bytes", _upload(lambda: random_bytes(4096))),
        ("text as image", _upload(b"hello, I am not a picture\n")),
        ("PDF as image", _upload(PDF, "doc.pdf")),
        ("zip as image", _upload(zip_bytes, "q.zip")),
        ("PNG signature only", _upload(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)),
        ("PNG cut at 50%", _upload(lambda: cut(png(tissue()), 0.5))),
        ("JPEG cut at 60%", _upload(lambda: cut(encode(tissue(), "JPEG"), 0.6), "q.jpg")),
        ("TIFF cut at 50%", _upload(lambda: cut(encode(tissue(), "TIFF"), 0.5), "q.tif")),
        ("PNG with a bad CRC", _upload(bad_crc_png)),
        ("PNG with damaged pixel data", _upload(bad_idat_png)),
        ("PNG header claims 60000 x 60000", _upload(lambda: png_claiming(60000, 60000))),
        ("PNG header claims 9000 x 9000", _upload(lambda: png_claiming(9000, 9000))),
        ("PNG header claims 0 x 0", _upload(lambda: png_claiming(0, 0))),
        ("1 x 1 px", _upload(lambda: png(tissue(1)))),
        ("100 x 100 px", _upload(lambda: png(tissue(100)))),
        ("all white", _upload(lambda: solid(255))),
        ("RGBA fully transparent", _upload(transparent_png)),
        ("16-bit all white", _upload(lambda: png16(65535))),
        ("k 0", _upload(lambda: png(tissue()), data={"k": "0"})),
        ("k a word", _upload(lambda: png(tissue()), data={"k": "many"})),
        ("k 5000 digits", _upload(lambda: png(tissue()), data={"k": "9" * 5000})),
        ("min_similarity a word", _upload(lambda: png(tissue()), data={"min_similarity": "x"})),
        ("min_similarity nan", _upload(lambda: png(tissue()), data={"min_similarity": "nan"})),
        ("scale a word", _upload(lambda: png(tissue()), data={"scale": "wat"})),
        ("slides of names", _upload(lambda: png(tissue()), data={"slides": "a,b"})),
        ("slides unknown id", _upload(lambda: png(tissue()), data={"slides": "99"})),
        ("unknown field", _upload(lambda: png(tissue()), data={"zzz": "1"})),
        ("field over 64 KiB", _upload(lambda: png(tissue()), data={"vote": "a" * (70 << 10)})),
        ("file name climbs out", _upload(lambda: random_bytes(99), "../../../etc/passwd")),
        ("file name of 10000 characters", _upload(lambda: random_bytes(99), "n" * 10_000)),
        ("file name with a newline", _upload(lambda: random_bytes(99), "a\nb.png")),
        ("no image field", lambda c: Req("POST", "/search", {
            "data": {"k": "3"}, "files": {"x": ("a.txt", b"a", "text/plain")}})),
        ("image as a text field", lambda c: Req("POST", "/search", {
            "data": {"image": "abc"}, "files": {"k2": ("a", b"", "text/plain")}})),
        ("two images", lambda c: Req("POST", "/search", {"files": [
            ("image", ("a.png", b"a", "image/png")), ("image", ("b.png", b"b", "image/png"))]})),
        ("option as a file", lambda c: Req("POST", "/search", {"files": {
            "image": ("q.png", b"x", "image/png"), "k": ("k.txt", b"3", "text/plain")}})),
        ("40 fields", lambda c: Req("POST", "/search", {
            "data": {f"f{i}": "1" for i in range(40)},
            "files": {"image": ("q.png", b"x", "image/png")}})),
    ]  # fmt: skip
    cases += [Case("http-bodies", f"upload {n}", request=r) for n, r in uploads]
    framing: list[tuple[str, str, bytes]] = [
        ("no boundary", "multipart/form-data", b"--x\r\n\r\n"),
        ("wrong boundary", "multipart/form-data; boundary=abc", b"--xyz\r\nfoo\r\n--xyz--\r\n"),
        ("truncated part", "multipart/form-data; boundary=b",
         b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc'),
        ("no disposition", "multipart/form-data; boundary=b", b"--b\r\n\r\nabc\r\n--b--\r\n"),
        ("garbage", "multipart/form-data; boundary=b", b"\xff" * 1000),
        ("empty", "multipart/form-data; boundary=b", b""),
        ("text/plain", "text/plain", b"hello"),
        ("XML", "application/xml", b"<region slide='1'/>"),
        ("form-urlencoded", "application/x-www-form-urlencoded", b"slide=1&x=0&y=0&w=448&h=448"),
        ("an image type", "image/png", b"\x89PNG\r\n\x1a\n"),
        ("octet-stream", "application/octet-stream", random_bytes(256)),
    ]  # fmt: skip
    cases += [
        Case("http-bodies", f"content-type {n}", request=_raw(kind, body))
        for n, kind, body in framing
    ]
    cases.append(  # the body is JSON whatever the charset says
        Case(
            "http-bodies",
            "content-type JSON with a charset nobody uses",
            request=_raw("application/json; charset=ebcdic", REGION + b"}"),
            ok_too=True,
        )  # fmt: skip
    )
    cases.append(
        Case(
            "http-bodies",
            "no content-type",
            request=lambda c: Req("POST", "/search", {"content": REGION + b"}"}),
        )  # fmt: skip
    )
    return cases


# -- cases: HTTP URLs, parameters and headers -------------------------------------------


def _get(url: str, headers: dict[str, str] | None = None) -> Callable[[Ctx], Req]:
    return lambda ctx: Req("GET", url, {"headers": headers} if headers else {})


REGION_PNG = "/slides/1/region.png?"
BAD_URLS: list[tuple[str, str]] = [
    ("static traversal", "/static/../../etc/passwd"),
    ("static encoded traversal", "/static/..%2F..%2F..%2Fetc%2Fpasswd"),
    ("static dot-encoded traversal", "/static/%2e%2e/%2e%2e/etc/passwd"),
    ("static double-encoded traversal", "/static/%252e%252e/%252e%252e/etc/passwd"),
    ("static backslash traversal", "/static/..%5c..%5capp.py"),
    ("static absolute", "/static//etc/passwd"),
    ("static NUL", "/static/%00"),
    ("static missing file", "/static/nothing.js"),
    ("dzi float id", "/slides/1.5.dzi"),
    ("dzi negative id", "/slides/-1.dzi"),
    ("dzi word id", "/slides/abc.dzi"),
    ("dzi exponent id", "/slides/1e3.dzi"),
    ("dzi hex id", "/slides/0x1.dzi"),
    ("dzi huge id", "/slides/99999999999999999999999.dzi"),
    ("dzi unknown slide", "/slides/99.dzi"),
    ("dzi NUL", "/slides/%31.dzi%00.png"),
    ("dz tile traversal", "/slides/1_files/../../../etc/passwd"),
    ("dz tile dotdot after", "/slides/1_files/0/0_0.jpeg/../../../../etc/passwd"),
    ("dz tile level -1", "/slides/1_files/-1/0_0.jpeg"),
    ("dz tile level huge", "/slides/1_files/99999999999999999999/0_0.jpeg"),
    ("dz tile level past the top", "/slides/1_files/40/0_0.jpeg"),
    ("dz tile column out of range", "/slides/1_files/12/999_0.jpeg"),
    ("dz tile row 2^63", "/slides/1_files/12/0_9223372036854775808.jpeg"),
    ("dz tile of an unknown slide", "/slides/99_files/0/0_0.jpeg"),
    ("dz tile as png", "/slides/1_files/0/0_0.png"),
    ("dz tile no row", "/slides/1_files/0/0.jpeg"),
    ("region word id", "/slides/abc/region.png?x=0&y=0&w=10&h=10&magnification=10"),
    ("region unknown slide", "/slides/99/region.png?x=0&y=0&w=448&h=448&magnification=10"),
    ("region no parameters", REGION_PNG),
    ("region no magnification", REGION_PNG + "x=0&y=0&w=10&h=10"),
    ("region x a word", REGION_PNG + "x=a&y=0&w=10&h=10&magnification=10"),
    ("region magnification nan", REGION_PNG + "x=0&y=0&w=10&h=10&magnification=nan"),
    ("region magnification inf", REGION_PNG + "x=0&y=0&w=10&h=10&magnification=inf"),
    ("region magnification -1", REGION_PNG + "x=0&y=0&w=10&h=10&magnification=-1"),
    ("region magnification 0", REGION_PNG + "x=0&y=0&w=10&h=10&magnification=0"),
    ("region magnification 1e9", REGION_PNG + "x=0&y=0&w=10&h=10&magnification=1e9"),
    ("region w 0", REGION_PNG + "x=0&y=0&w=0&h=10&magnification=10"),
    ("region w negative", REGION_PNG + "x=0&y=0&w=-10&h=10&magnification=10"),
    ("region x negative", REGION_PNG + "x=-5&y=0&w=10&h=10&magnification=10"),
    ("region outside the slide", REGION_PNG + "x=100000&y=0&w=10&h=10&magnification=10"),
    ("region huge", REGION_PNG + "x=0&y=0&w=99999999999&h=99999999999&magnification=10"),
    ("region x 1e30", REGION_PNG + "x=1e30&y=0&w=10&h=10&magnification=10"),
    ("region x 2^70", REGION_PNG + f"x={2**70}&y=0&w=10&h=10&magnification=10"),
    ("region max_side 1", REGION_PNG + "x=0&y=0&w=10&h=10&magnification=10&max_side=1"),
    ("region max_side a word", REGION_PNG + "x=0&y=0&w=10&h=10&magnification=10&max_side=big"),
    ("unknown path", "/nothing/here"),
    ("GET /search", "/search"),
]


def _http_request_cases() -> list[Case]:
    cases = [Case("http-requests", n, request=_get(url)) for n, url in BAD_URLS]

    def guarded(name: str, request: Callable[[Ctx], Req]) -> Case:
        return Case("http-requests", name, request=request, client="guarded")

    big = b"x" * (80 << 10)
    cases += [
        Case("http-requests", "DELETE a slide", request=lambda c: Req("DELETE", "/slides/1.dzi")),
        Case("http-requests", "PUT /search", request=lambda c: Req("PUT", "/search")),
        Case("http-requests", "Content-Length a word", request=lambda c: Req(
            "POST", "/search", {"content": REGION + b"}",
                                "headers": {**JSON, "content-length": "many"}})),
        Case("http-requests", "Content-Length 10^12", request=lambda c: Req(
            "POST", "/search", {"content": REGION + b"}",
                                "headers": {**JSON, "content-length": str(10**12)}})),
        guarded("no token", _get("/slides")),
        guarded("wrong token", _get("/slides", {"Authorization": "Bearer wrong"})),
        guarded("token of another scheme", _get("/slides", {"Authorization": f"Basic {TOKEN}"})),
        guarded("empty bearer", _get("/slides", {"Authorization": "Bearer "})),
        guarded("non-ASCII token", lambda c: Req("GET", "/slides", {
            "headers": {"Authorization": "Bearer s3cr\u00e9t".encode()}})),
        guarded("malformed cookie", _get("/slides", {"cookie": 'cbir_token="unterminated; ;;='})),
        guarded("wrong token cookie", _get("/slides", {"cookie": "cbir_token=wrong"})),
        guarded("wrong token in the page URL", _get("/?token=wrong")),
        guarded("token in the query string of an API", _get(f"/slides?token={TOKEN}")),
        guarded("foreign Host", _get("/slides", {**AUTH, "host": "evil.example"})),
        guarded("foreign Host with port", _get("/slides", {**AUTH, "host": "evil.example:8000"})),
        guarded("Host suffix trick", _get("/slides", {**AUTH, "host": "127.0.0.1.evil.example"})),
        guarded("empty Host", _get("/slides", {**AUTH, "host": ""})),
        guarded("body over the limit", lambda c: Req("POST", "/search", {
            "content": big, "headers": {**AUTH, **JSON}})),
        guarded("upload over the limit", lambda c: Req("POST", "/search", {
            "files": {"image": ("q.png", big, "image/png")}, "headers": AUTH})),
        guarded("Content-Length over the limit", lambda c: Req("POST", "/search", {
            "content": b"{}", "headers": {**AUTH, **JSON, "content-length": str(1 << 30)}})),
    ]  # fmt: skip
    return cases


# -- the catalogue ----------------------------------------------------------------------


def catalogue() -> list[Case]:
    """Every case, in category order; ids are unique."""
    cases = [
        *_image_cases(),
        *_region_cases(),
        *_options_cases(),
        *_batch_cases(),
        *_manifest_cases(),
        *_segment_cases(),
        *_http_body_cases(),
        *_http_request_cases(),
    ]
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    return cases


def fast_subset(cases: list[Case], per: int = 4) -> list[Case]:
    """A few cases of each category (and of each command of the damaged-bundle ones),
    spread over the catalogue: the default test run."""
    groups: dict[str, list[Case]] = {}
    for c in cases:
        key = c.category
        if c.category in ("manifests", "segments"):
            key += "/" + c.name.rsplit(" / ", 1)[1]
        groups.setdefault(key, []).append(c)
    chosen: list[Case] = []
    for group in groups.values():
        n = 1 if group[0].category in ("manifests", "segments") else per
        step = max(1, len(group) // n)
        chosen += group[::step][:n]
    return chosen


def run_all(cases: list[Case], scratch: Path) -> list[Outcome]:
    base = Base.build(scratch / "base")
    try:
        return [run_case(c, base, scratch) for c in cases]
    finally:
        base.close()


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    per: dict[str, dict[str, int]] = {}
    for o in outcomes:
        row = per.setdefault(
            o.case.category,
            {"cases": 0, "tracebacks": 0, "changed_bundles": 0, "not_one_line": 0,
             "wrong_code": 0, "accepted": 0},
        )  # fmt: skip
        row["cases"] += 1
        row["tracebacks"] += o.traceback
        row["changed_bundles"] += o.changed
        row["not_one_line"] += o.not_one_line
        row["wrong_code"] += o.wrong_code
        row["accepted"] += o.code == 0 and o.ok
    total = {k: sum(r[k] for r in per.values()) for k in next(iter(per.values()), {})}
    failing = [
        {"case": o.case.id, "problems": o.problems(), "code": o.code, "output": o.output[-1500:]}
        for o in outcomes
        if not o.ok
    ]
    return {
        "categories": per,
        "total": total,
        "failing": failing,
        "seconds": round(sum(o.seconds for o in outcomes), 1),
    }


def _table(s: dict[str, Any]) -> str:
    cols = ("cases", "tracebacks", "changed_bundles", "not_one_line", "wrong_code", "accepted")
    rows = [("category", *cols)]
    rows += [(name, *(str(r[c]) for c in cols)) for name, r in s["categories"].items()]
    rows.append(("total", *(str(s["total"].get(c, 0)) for c in cols)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols) + 1)]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]  # fmt: skip
    for f in s["failing"]:
        lines.append(f"FAIL {f['case']}: {', '.join(f['problems'])} (code {f['code']})")
        lines += ["    " + line for line in f["output"].strip().splitlines()[-6:]]
    lines.append(f"{s['total'].get('cases', 0)} cases, {len(s['failing'])} failing, "
                 f"{s['seconds']} s")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--category", choices=CATEGORIES, action="append")
    parser.add_argument("--match", help="only cases whose id contains this text")
    parser.add_argument("--fast", action="store_true", help="the default test run's subset")
    parser.add_argument("--verbose", action="store_true", help="also print every case's line")
    args = parser.parse_args()
    cases = catalogue()
    if args.fast:
        cases = fast_subset(cases)
    if args.category:
        cases = [c for c in cases if c.category in args.category]
    if args.match:
        cases = [c for c in cases if args.match in c.id]
    with tempfile.TemporaryDirectory(prefix="cbir-bad-inputs-") as tmp:
        outcomes = run_all(cases, Path(tmp))
    s = summary(outcomes)
    if args.verbose:
        for o in outcomes:
            print(o.report().replace("\n", " | ")[:300])
    print(json.dumps(s) if args.json else _table(s))
    sys.exit(1 if s["failing"] else 0)


if __name__ == "__main__":
    main()
