"""The web page in a real browser: Debian's chromium driven by playwright (never
`playwright install`). `cbir serve` runs as a subprocess on 127.0.0.1; the test uploads a
crop of a real slide, waits for the hits, opens hit 1 and checks the viewer shows that
slide with the hit's rectangle drawn at the hit's place; then draws a region on the slide
and checks its search. Screenshots go to the test's tmp dir (printed)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

import cbir
from cbir.slides.open import open_slide
from conftest import CMU, needs_shared_data

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
pytest.importorskip("fastapi", reason="cbir[serve] is not installed")
pytestmark = [
    needs_shared_data,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)"),
]

#: The page size of the tests' browser (px).
VIEWPORT = {"width": 1400, "height": 900}


@contextmanager
def browser_page(
    viewport: dict[str, int] | None = VIEWPORT,
) -> Iterator[playwright_api.Page]:
    """A new chromium page (`viewport`: its size; None: playwright's default)."""
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(**({"viewport": viewport} if viewport else {}))
            yield context.new_page()  # page.context.new_page() opens a second one
        finally:
            browser.close()


def open_and_search(page: playwright_api.Page, url: str, image: Path) -> None:
    """Open the page at `url`, upload `image` as the query and wait for its hits."""
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.set_input_files("#query-file", str(image))
    page.wait_for_selector("#hits .hit")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("browser") / "idx"
    cbir.build_index([CMU], root, "stats-lsh32")
    yield from serving(root)


@pytest.fixture(scope="module")
def labelled_server(
    tmp_path_factory: pytest.TempPathFactory, generated_slide: Path
) -> Iterator[str]:
    """Two slides, labelled diagnosis=A (CMU-1) and diagnosis=B (the generated one)."""
    root = tmp_path_factory.mktemp("browser-labelled") / "idx"
    labels = {
        str(CMU.resolve()): {"diagnosis": "A"},
        str(generated_slide.resolve()): {"diagnosis": "B"},
    }
    cbir.build_index([CMU, generated_slide], root, "stats-lsh32", labels=labels)
    yield from serving(root)


def serving(root: Path) -> Iterator[str]:
    """`cbir serve root` in a subprocess on a free port, until the test module ends. Its
    output (one access-log line a request) goes to a file beside the bundle: a pipe that
    nobody reads fills after a few hundred requests and blocks the server."""
    port = free_port()
    cmd = [sys.executable, "-c", "from cbir.cli.main import app; app()", "serve", str(root)]
    log_path = root.parent / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port), "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"cbir serve exited: {log_path.read_text()}")
                time.sleep(0.1)
        else:
            pytest.fail("cbir serve did not answer /healthz in 30 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def screen_point(page: playwright_api.Page, x: float, y: float) -> list[float]:
    """Page coordinates of level-0 slide pixel (x, y) in the viewer."""
    return page.evaluate(
        """([x, y]) => {
          const v = window.cbir.viewer;
          const p = v.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
          const r = v.element.getBoundingClientRect();
          return [p.x + r.left, p.y + r.top];
        }""",
        [x, y],
    )


def test_upload_a_crop_and_open_the_hit(server: str, tmp_path: Path) -> None:
    # a 224 px crop at 20x (the slide's base) where an indexed tile lies
    with open_slide(CMU) as slide:
        Image.fromarray(slide.read_region(896, 1120, 224, 224, 20)).save(tmp_path / "q.png")
    with browser_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        open_and_search(page, server, tmp_path / "q.png")
        assert "hits for q.png" in page.inner_text("#status")
        hit = page.evaluate("window.cbir.hits[0]")
        assert hit["slide"] == CMU.name and hit["magnification"] == 20
        assert (hit["x"], hit["y"], hit["w"], hit["h"]) == (896, 1120, 224, 224)
        # the thumbnail is the hit's crop, served by the API
        page.wait_for_function(
            "document.querySelector('#hits .hit img').naturalWidth > 0", timeout=10_000
        )
        page.click("#hits .hit >> nth=0")
        page.wait_for_function("window.cbir.overlayReady === true", timeout=20_000)
        page.wait_for_function(
            "window.cbir.viewer.world.getItemAt(0).getFullyLoaded()", timeout=20_000
        )
        shown = page.evaluate(
            """() => {
              const v = window.cbir.viewer;
              const o = v.currentOverlays[0];
              const r = v.viewport.viewportToImageRectangle(o.getBounds(v.viewport));
              const box = document.getElementById('hit-overlay').getBoundingClientRect();
              return {slide: window.cbir.slideId, url: v.world.getItemAt(0).source.tilesUrl,
                      x: r.x, y: r.y, w: r.width, h: r.height,
                      visible: box.width > 4 && box.height > 4};
            }"""
        )
        assert shown["slide"] == hit["slide_id"]
        assert shown["url"].endswith(f"/slides/{hit['slide_id']}_files/")
        for key in ("x", "y", "w", "h"):
            assert shown[key] == pytest.approx(hit[key], abs=1.0)
        assert shown["visible"]
        page.screenshot(path=str(tmp_path / "hit.png"))
        print(f"screenshot: {tmp_path / 'hit.png'}")

        # draw a region on the slide: it is searched and found at its place
        page.click("#draw-toggle")
        corner = screen_point(page, hit["x"], hit["y"])
        end = screen_point(page, hit["x"] + hit["w"], hit["y"] + hit["h"])
        page.mouse.move(*corner)
        page.mouse.down()
        page.mouse.move((corner[0] + end[0]) / 2, (corner[1] + end[1]) / 2, steps=5)
        page.mouse.move(*end, steps=5)
        page.mouse.up()
        page.wait_for_function(
            "document.getElementById('status').textContent.includes('region')",
            timeout=20_000,
        )
        page.wait_for_selector("#hits .hit")
        region_hit = page.evaluate("window.cbir.hits[0]")
        assert region_hit["slide_id"] == hit["slide_id"]
        assert abs(region_hit["x"] - hit["x"]) <= 8 and abs(region_hit["y"] - hit["y"]) <= 8
        page.screenshot(path=str(tmp_path / "region.png"))
        assert errors == []


def test_api_docs_render_offline(server: str, tmp_path: Path) -> None:
    """/docs in chromium with every request off 127.0.0.1 refused: Swagger UI renders the
    API's operations from files the server itself serves."""
    with browser_page(viewport=None) as page:
        outside: list[str] = []

        def only_local(route: playwright_api.Route) -> None:
            if route.request.url.startswith(server):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_local)
        page.goto(f"{server}/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        shot = tmp_path / "docs.png"
        page.screenshot(path=str(shot))
        print(f"screenshot: {shot}")
    assert "/search" in paths and "/healthz" in paths
    assert outside == []


def test_a_hits_rectangle_goes_when_the_slide_or_the_query_changes(
    server: str, tmp_path: Path
) -> None:
    with open_slide(CMU) as slide:
        Image.fromarray(slide.read_region(896, 1120, 224, 224, 20)).save(tmp_path / "q.png")
        Image.fromarray(slide.read_region(784, 1008, 448, 448, 20)).save(tmp_path / "q2.png")
    marks = """() => ({overlays: document.querySelectorAll('.hit-overlay').length,
                       selected: document.querySelectorAll('#hits .hit.selected').length,
                       rect: window.cbir.overlay,
                       caption: document.getElementById('viewer-caption').textContent})"""
    with browser_page() as page:
        open_and_search(page, server, tmp_path / "q.png")
        page.click("#hits .hit >> nth=0")
        page.wait_for_function("window.cbir.overlayReady === true", timeout=20_000)
        shown = page.evaluate(marks)
        assert shown["overlays"] == 1 and shown["selected"] == 1 and shown["rect"]
        assert " px at " in shown["caption"]
        # another slide chosen by hand (the same one again, reopened): no stale marks
        page.select_option("#slide-select", page.evaluate("String(window.cbir.slideId)"))
        page.dispatch_event("#slide-select", "change")
        page.wait_for_timeout(500)
        assert page.evaluate(marks) == {
            "overlays": 0,
            "selected": 0,
            "rect": None,
            "caption": CMU.name,
        }
        # a hit opened again, then a new query: its marks go with the old hits
        page.click("#hits .hit >> nth=0")
        page.wait_for_function("window.cbir.overlayReady === true", timeout=20_000)
        page.set_input_files("#query-file", str(tmp_path / "q2.png"))
        page.wait_for_function("document.getElementById('status').textContent.includes('q2.png')")
        page.wait_for_selector("#hits .hit")
        assert page.evaluate(marks) == {
            "overlays": 0,
            "selected": 0,
            "rect": None,
            "caption": CMU.name,
        }
        page.screenshot(path=str(tmp_path / "cleared.png"))
        print(f"screenshot: {tmp_path / 'cleared.png'}")


def test_the_search_controls(server: str, tmp_path: Path) -> None:
    """min similarity drops weak hits, allow background searches glass, a vote shows."""
    with open_slide(CMU) as slide:
        Image.fromarray(slide.read_region(896, 1120, 224, 224, 20)).save(tmp_path / "q.png")
    Image.new("RGB", (300, 300), (245, 245, 245)).save(tmp_path / "glass.png")

    def search(page: playwright_api.Page, image: Path) -> str:
        done = page.evaluate("window.cbir.searches")
        page.set_input_files("#query-file", str(image))
        page.wait_for_function(f"window.cbir.searches > {done}", timeout=30_000)
        return page.inner_text("#status")

    with browser_page() as page:
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']")
        assert "hits for q.png" in search(page, tmp_path / "q.png")
        every = page.evaluate("window.cbir.hits.map(h => h.similarity)")
        page.fill("#opt-min-sim", "0.9")
        page.fill("#opt-vote", "diagnosis")
        assert "for q.png" in search(page, tmp_path / "q.png")  # "4 hits (4 of k=10)"
        strong = page.evaluate("window.cbir.hits.map(h => h.similarity)")
        assert strong and all(s >= 0.9 for s in strong) and len(strong) < len(every)
        assert page.inner_text("#vote") == "diagnosis: no hit is labelled"
        page.fill("#opt-min-sim", "")
        refused = search(page, tmp_path / "glass.png")
        assert "glass.png: no tissue" in refused and "--" not in refused  # the API's words
        page.check("#opt-background")
        assert "for glass.png" in search(page, tmp_path / "glass.png")
        page.screenshot(path=str(tmp_path / "controls.png"))
        print(f"screenshot: {tmp_path / 'controls.png'}")


def test_step_through_the_hits_beside_the_query(server: str, tmp_path: Path) -> None:
    """n / p and the buttons walk the hits; each is shown beside the query; every other
    hit on the slide is a numbered marker."""
    with open_slide(CMU) as slide:
        Image.fromarray(slide.read_region(896, 1120, 224, 224, 20)).save(tmp_path / "q.png")
    now = """() => ({current: window.cbir.current,
                     selected: [...document.querySelectorAll('#hits .hit')].findIndex(
                         el => el.classList.contains('selected')),
                     compare: !document.getElementById('compare').hidden,
                     hitImage: document.getElementById('compare-hit').getAttribute('src'),
                     markers: document.querySelectorAll('.hit-marker').length,
                     rect: window.cbir.overlay})"""
    with browser_page() as page:
        open_and_search(page, server, tmp_path / "q.png")
        hits = page.evaluate("window.cbir.hits")
        page.keyboard.press("n")  # the first hit
        page.wait_for_function("window.cbir.overlayReady === true", timeout=20_000)
        first = page.evaluate(now)
        assert (first["current"], first["selected"], first["compare"]) == (0, 0, True)
        assert first["rect"]["x"] == hits[0]["x"] and first["rect"]["y"] == hits[0]["y"]
        on_slide = sum(h["slide_id"] == hits[0]["slide_id"] for h in hits)
        assert first["markers"] == on_slide - 1
        page.click("#hit-next")
        page.wait_for_function("window.cbir.current === 1")
        second = page.evaluate(now)
        assert second["selected"] == 1 and second["rect"]["x"] == hits[1]["x"]
        assert second["hitImage"] != first["hitImage"]
        page.keyboard.press("p")
        page.wait_for_function("window.cbir.current === 0")
        page.click("#hit-prev")  # wraps to the last
        page.wait_for_function(f"window.cbir.current === {len(hits) - 1}")
        page.wait_for_function(
            "document.getElementById('compare-hit').naturalWidth > 0", timeout=10_000
        )
        page.screenshot(path=str(tmp_path / "compare.png"))
        print(f"screenshot: {tmp_path / 'compare.png'}")


def test_the_page_state_is_in_its_url(server: str, tmp_path: Path) -> None:
    """A region query, its options, the open hit and the view come back from the URL,
    on a new page (a shared link) and on reload."""
    state = """() => ({hits: window.cbir.hits.length, current: window.cbir.current,
                       region: window.cbir.region, k: document.getElementById('opt-k').value,
                       minSim: document.getElementById('opt-min-sim').value,
                       background: document.getElementById('opt-background').checked,
                       rect: window.cbir.overlay,
                       centre: window.cbir.viewer.viewport.getCenter(),
                       zoom: window.cbir.viewer.viewport.getZoom()})"""
    with browser_page() as page:
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']")
        slide_id = page.evaluate("window.cbir.slides[0].slide_id")
        link = (
            f"{server}/#slide={slide_id}&region=896,1120,448,448&k=5&hit=2"
            "&min_similarity=0.2&allow_background=1"
        )
        shared = page.context.new_page()
        shared.goto(link)
        shared.wait_for_selector("body[data-ready='1']", timeout=60_000)
        got = shared.evaluate(state)
        assert got["hits"] == 5 and got["current"] == 1 and got["k"] == "5"
        assert got["region"] == {"x": 896, "y": 1120, "w": 448, "h": 448}
        assert got["minSim"] == "0.2" and got["background"] is True
        hit = shared.evaluate("window.cbir.hits[1]")
        assert (got["rect"]["x"], got["rect"]["y"]) == (hit["x"], hit["y"])
        url = shared.url
        assert "hit=2" in url and "view=" in url and "region=896%2C1120" in url
        shared.reload()  # the same view again
        shared.wait_for_selector("body[data-ready='1']", timeout=60_000)
        again = shared.evaluate(state)
        assert (again["hits"], again["current"], again["rect"]) == (5, 1, got["rect"])
        assert again["zoom"] == pytest.approx(got["zoom"], rel=1e-3)
        assert again["centre"]["x"] == pytest.approx(got["centre"]["x"], abs=1e-4)
        shared.screenshot(path=str(tmp_path / "from-url.png"))
        print(f"screenshot: {tmp_path / 'from-url.png'}")


def test_scale_bar_and_magnification_readout(server: str, tmp_path: Path) -> None:
    read = """() => ({mag: document.getElementById('scale-mag').textContent,
                      bar: document.getElementById('scale-bar').textContent,
                      width: document.getElementById('scale-bar').getBoundingClientRect().width,
                      hidden: document.getElementById('scale-bar').hidden,
                      mpp: window.cbir.slides[0].mpp})"""
    with browser_page() as page:
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_function("document.getElementById('scale-mag').textContent !== ''")
        before = page.evaluate(read)
        assert before["mpp"] and not before["hidden"]  # CMU-1 states its mpp
        page.evaluate("window.cbir.viewer.viewport.zoomBy(4, null, true)")
        page.wait_for_timeout(300)
        after = page.evaluate(read)
        mag = lambda text: float(text.split("x")[0])  # noqa: E731
        assert mag(after["mag"]) == pytest.approx(4 * mag(before["mag"]), rel=0.02)
        for shown in (before, after):  # the bar's length is the length it says
            value, unit = shown["bar"].split(" ")
            um = float(value) * (1000 if unit == "mm" else 1)
            zoom = mag(shown["mag"]) / 20  # screen px per level-0 px (CMU-1: 20x)
            assert shown["width"] == pytest.approx(um / shown["mpp"] * zoom, rel=0.05, abs=4)
        page.screenshot(path=str(tmp_path / "scale.png"))
        print(f"screenshot: {tmp_path / 'scale.png'}")


def test_the_region_tool_says_and_takes_its_magnification(server: str) -> None:
    with browser_page() as page:
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']")
        offered = page.eval_on_selector_all("#region-mag option", "os => os.map(o => o.value)")
        mags = page.evaluate("window.cbir.slides[0].magnifications")
        assert offered == ["", *[f"{m:g}" for m in sorted(mags, reverse=True)]]
        region = "{x: 896, y: 1120, w: 896, h: 896}"
        page.evaluate(f"searchRegion({region})")  # the highest that fits: 20x here
        assert "(region read at 20x)" in page.inner_text("#status")
        page.select_option("#region-mag", "10")
        page.evaluate(f"searchRegion({region})")
        status = page.inner_text("#status")
        assert "@10x" in status and "(region read at 10x)" in status


def test_slide_gallery_and_label_filter(labelled_server: str, tmp_path: Path) -> None:
    with open_slide(CMU) as slide:
        Image.fromarray(slide.read_region(896, 1120, 224, 224, 20)).save(tmp_path / "q.png")
    gallery = """() => [...document.querySelectorAll('#gallery li')].map(
        li => [li.querySelector('div').textContent, li.querySelector('.labels').textContent])"""
    with browser_page() as page:
        page.goto(labelled_server + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.click("#gallery-panel summary")
        shown = sorted(page.evaluate(gallery))
        assert shown == [[CMU.name, "diagnosis=A"], ["generated.tif", "diagnosis=B"]]
        page.fill("#label-filter", "diagnosis=B")
        assert page.evaluate(gallery) == [["generated.tif", "diagnosis=B"]]
        done = page.evaluate("window.cbir.searches")
        page.set_input_files("#query-file", str(tmp_path / "q.png"))
        page.wait_for_function(f"window.cbir.searches > {done}", timeout=30_000)
        slides = set(page.evaluate("window.cbir.hits.map(h => h.slide)"))
        assert slides == {"generated.tif"}  # only the slides the filter lets through
        page.click("#gallery li >> nth=0")  # opens that slide
        page.wait_for_function("window.cbir.viewer.world.getItemCount() > 0")
        slide_id = page.evaluate("window.cbir.slideId")
        names = page.evaluate("window.cbir.slides")
        assert next(s["name"] for s in names if s["slide_id"] == slide_id) == "generated.tif"
        page.wait_for_function(
            "[...document.querySelectorAll('#gallery img')].every(i => i.naturalWidth > 0)",
            timeout=10_000,
        )
        page.screenshot(path=str(tmp_path / "gallery.png"))
        print(f"screenshot: {tmp_path / 'gallery.png'}")


def test_export_from_the_page(server: str, tmp_path: Path) -> None:
    import zipfile

    with open_slide(CMU) as slide:
        Image.fromarray(slide.read_region(896, 1120, 224, 224, 20)).save(tmp_path / "q.png")
    with browser_page() as page:
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']")
        assert page.is_disabled("#export")  # nothing to export yet
        page.set_input_files("#query-file", str(tmp_path / "q.png"))
        page.wait_for_selector("#hits .hit")
        with page.expect_download(timeout=60_000) as download:
            page.click("#export")
        saved = tmp_path / "export.zip"
        download.value.save_as(saved)
        names = set(zipfile.ZipFile(saved).namelist())
        assert {"query.png", "montage.png", "report.html", "result.json"} <= names
        assert sum(n.startswith("hits/") for n in names) == 10
        assert page.inner_text("#status") == "exported: cbir-export.zip"


def test_all_hits_at_once(labelled_server: str, tmp_path: Path) -> None:
    """After a search, every hit on the shown slide is a marker there and a dot on the
    overview; the hits per slide are listed, and each opens its slide with its markers."""
    with open_slide(CMU) as slide:
        Image.fromarray(slide.read_region(896, 1120, 224, 224, 20)).save(tmp_path / "q.png")
    count = """() => ({markers: document.querySelectorAll('#viewer .hit-marker').length,
                       dots: document.querySelectorAll('.nav-marker').length})"""
    with browser_page() as page:
        open_and_search(page, labelled_server, tmp_path / "q.png")
        hits = page.evaluate("window.cbir.hits")
        per_slide = page.eval_on_selector_all(
            "#per-slide button", "bs => bs.map(b => [Number(b.dataset.slideId), b.textContent])"
        )
        expected = {}
        for h in hits:
            expected[h["slide_id"]] = expected.get(h["slide_id"], 0) + 1
        assert {sid: int(text.rsplit("(", 1)[1].rstrip(")")) for sid, text in per_slide} == expected
        for slide_id, n in expected.items():
            page.click(f"#per-slide button[data-slide-id='{slide_id}']")
            page.wait_for_function(
                f"window.cbir.slideId === {slide_id} && "
                f"document.querySelectorAll('#viewer .hit-marker').length === {n}",
                timeout=20_000,
            )
            assert page.evaluate(count) == {"markers": n, "dots": n}
        page.screenshot(path=str(tmp_path / "all-hits.png"))
        print(f"screenshot: {tmp_path / 'all-hits.png'}")


def test_query_and_hit_are_shown_at_the_same_scale(server: str, tmp_path: Path) -> None:
    """Beside the query, a hit is drawn at the query's scale: a region read at 10x that
    matches at 20x covers half the level-0 px, so it is drawn half as wide."""
    sizes = """() => ({query: [document.getElementById('compare-query').clientWidth,
                                document.getElementById('compare-query').clientHeight],
                       hit: [document.getElementById('compare-hit').clientWidth,
                             document.getElementById('compare-hit').clientHeight],
                       caption: document.getElementById('compare-scale').textContent})"""
    with browser_page() as page:
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']")
        base = page.evaluate("window.cbir.slides[0].base_magnification")
        page.select_option("#region-mag", "10")
        page.evaluate("searchRegion({x: 896, y: 1120, w: 448, h: 448})")
        hits = page.evaluate("window.cbir.hits")
        assert {h["magnification"] for h in hits} >= {10.0, 20.0}, hits
        for i, hit in enumerate(hits):
            page.evaluate(f"openHit({i})")
            page.wait_for_function(  # showCompare sizes both, then writes the captions
                "document.getElementById('compare-hit-caption').textContent"
                f".startsWith('hit {hit['rank']} of')"
            )
            got = page.evaluate(sizes)
            scale = 160 / max(448 / base, hit["w"] / base, hit["h"] / base)
            assert got["query"] == pytest.approx([448 / base * scale] * 2, abs=1)
            assert got["hit"] == pytest.approx(
                [hit["w"] / base * scale, hit["h"] / base * scale], abs=1
            )
            assert got["caption"] == f"both at {scale:.1f}x on screen"
        page.screenshot(path=str(tmp_path / "same-scale.png"))
        print(f"screenshot: {tmp_path / 'same-scale.png'}")


def test_similar_slides(labelled_server: str, tmp_path: Path) -> None:
    """ "Similar slides" on the shown slide lists the other slides with scores; opening one
    numbers its matched tiles on it, and the same numbers on the query slide's tiles."""
    pairs = "document.querySelectorAll('#viewer .pair-marker').length"
    with browser_page() as page:
        page.goto(labelled_server + "/")
        page.wait_for_selector("body[data-ready='1']")
        query = page.evaluate("window.cbir.slideId")
        page.click("#similar-slides")
        page.wait_for_selector("#hits .slide-hit")
        result = page.evaluate("window.cbir.slideQuery.result")
        assert result["hits"] and all(h["slide_id"] != query for h in result["hits"])
        assert "similarity" in page.inner_text("#hits .slide-hit")
        n = len(result["hits"])
        assert page.inner_text("#status").startswith(f"{n} slide{'s' if n > 1 else ''} like")
        page.keyboard.press("n")  # the first ranked slide
        hit = result["hits"][0]
        shown = min(10, len(hit["pairs"]))
        page.wait_for_function(
            f"window.cbir.slideId === {hit['slide_id']} && {pairs} === {shown}", timeout=20_000
        )
        assert not page.evaluate("document.getElementById('compare').hidden")
        page.wait_for_function("document.getElementById('compare-hit').naturalWidth > 0")
        page.screenshot(path=str(tmp_path / "similar-hit.png"))
        page.select_option("#slide-select", str(query))  # the query slide: the same pairs
        page.wait_for_function(
            f"window.cbir.slideId === {query} && {pairs} === {shown}", timeout=20_000
        )
        page.screenshot(path=str(tmp_path / "similar-query.png"))
        print(f"screenshots: {tmp_path}")
        page.click("#hits .slide-hit >> nth=0")  # the first ranked slide again: in the URL
        page.wait_for_function(f"window.cbir.slideId === {hit['slide_id']} && {pairs} === {shown}")
        url = page.url
        assert f"similar={query}" in url and "slidehit=1" in url and "region=" not in url
        page.goto("about:blank")
        page.goto(url)  # a shared link: the same slide query, ranked slide and pairs
        page.wait_for_function(
            f"window.cbir.slideQuery && window.cbir.slideQuery.current === 0 "
            f"&& window.cbir.slideId === {hit['slide_id']} && {pairs} === {shown}",
            timeout=30_000,
        )
        assert page.locator("#hits .slide-hit").count() == n
        assert not page.evaluate("document.getElementById('compare').hidden")
        page.set_input_files("#query-file", str(tmp_path / "similar-hit.png"))
        page.wait_for_function("window.cbir.slideQuery === null")  # a patch search replaces it


def test_the_page_follows_a_new_generation(
    tmp_path_factory: pytest.TempPathFactory, generated_slide: Path, tmp_path: Path
) -> None:
    """A writer replaces the shown slide while the page is open (its id changes): the page
    notices the new generation, reloads its slide list and reopens the slide under its new
    id, and says so; before, it kept asking for the old id's tiles (404s)."""
    root = tmp_path_factory.mktemp("browser-generation") / "idx"
    cbir.build_index([CMU, generated_slide], root, "stats-lsh32")
    with contextmanager(serving)(root) as url, browser_page() as page:
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")
        slides = page.evaluate("window.cbir.slides")
        old = next(s["slide_id"] for s in slides if s["name"] == "generated.tif")
        page.select_option("#slide-select", str(old))
        page.wait_for_function(f"window.cbir.slideId === {old}")
        generation = page.evaluate("window.cbir.generation")
        cbir.add_slides(root, [generated_slide], replace=True)
        page.evaluate("checkGeneration()")
        page.wait_for_function(f"window.cbir.generation > {generation}", timeout=10_000)
        new = page.evaluate("window.cbir.slideId")
        assert new != old
        names = {s["slide_id"]: s["name"] for s in page.evaluate("window.cbir.slides")}
        assert names[new] == "generated.tif" and old not in names
        options = page.evaluate(
            "[...document.querySelectorAll('#slide-select option')].map(o => o.value)"
        )
        assert str(new) in options and str(old) not in options
        assert page.input_value("#slide-select") == str(new)
        assert f"generated.tif is now slide {new}" in page.text_content("#status")
        assert f"2 slides, generation {generation + 1}" in page.text_content("#bundle-info")
        page.wait_for_function(
            f"window.cbir.viewer.world.getItemCount() > 0 && "
            f"window.cbir.viewer.world.getItemAt(0).source.tilesUrl.includes('/{new}_files')"
        )
        page.screenshot(path=str(tmp_path / "generation.png"))


def test_the_page_keeps_its_footing(server: str, tmp_path: Path) -> None:
    """What a user trial broke: two searches in flight list only the last one's hits; a
    link with a malformed hit or view leaves the page working; Export is off while a slide
    query's results are shown; a TIFF upload (no preview) still shows a hit beside it; a
    drag past the slide's edge searches the part on the slide."""
    hit_items = "document.querySelectorAll('#hits .hit').length"
    with browser_page() as page:
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']")
        assert ", 1 slide, generation" in page.text_content("#bundle-info")  # not "1 slides"
        done = page.evaluate("window.cbir.searches")
        page.evaluate(
            "searchRegion({x: 0, y: 0, w: 1200, h: 1200}); "
            "searchRegion({x: 500, y: 500, w: 600, h: 600})"
        )
        page.wait_for_function(f"window.cbir.searches >= {done + 2}", timeout=30_000)
        assert page.evaluate(hit_items) == len(page.evaluate("window.cbir.hits")) <= 10
        assert page.evaluate("window.cbir.region.x") == 500
        page.click("#similar-slides")  # one slide here: answered "nothing to search"
        page.wait_for_function(
            "!document.getElementById('status').textContent.startsWith('searching')",
            timeout=30_000,
        )
        assert page.evaluate("document.getElementById('export').disabled")
        # a rectangle dragged from the slide to far past its bottom-right corner
        page.evaluate("setDrawing(true)")
        box = page.locator("#viewer").bounding_box()
        assert box is not None
        done = page.evaluate("window.cbir.searches")
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2, steps=5)
        page.mouse.up()
        page.wait_for_function(f"window.cbir.searches > {done}", timeout=30_000)
        r = page.evaluate("window.cbir.region")
        slide = page.evaluate("window.cbir.slides.find(s => s.slide_id === window.cbir.slideId)")
        assert r["x"] + r["w"] <= slide["width"] and r["y"] + r["h"] <= slide["height"]
        assert "past the slide" not in page.text_content("#status")
    for fragment in ("slide=1&region=500,500,600,600&hit=abc", "slide=1&view=NaN,abc,xyz"):
        with browser_page() as page:
            page.goto(f"{server}/#{fragment}")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert "Cannot read" not in page.text_content("#status")
            assert "NaN" not in page.evaluate("location.hash")
    with open_slide(CMU) as slide:
        crop = slide.read_region(896, 1120, 448, 448, 20)
    Image.fromarray(crop).save(tmp_path / "q.tif")  # a query the browser cannot preview
    with browser_page() as page:
        open_and_search(page, server, tmp_path / "q.tif")
        page.keyboard.press("n")
        page.wait_for_function("!document.getElementById('compare').hidden", timeout=10_000)
