"""`cbir serve` as a real process (uvicorn on 127.0.0.1, a free port): Deep Zoom tiles and
searches read while the real CLI publishes new generations, and the event loop answering
/healthz while a search holds a worker."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import cbir

pytest.importorskip("fastapi", reason="cbir[serve] is not installed")
httpx = pytest.importorskip("httpx")

from cbir.serve.process import free_port, start_server, stop_server  # noqa: E402

CLI = [sys.executable, "-c", "from cbir.cli.main import app; app()"]
DZ = "{http://schemas.microsoft.com/deepzoom/2008}"


@pytest.fixture()
def two_slide_bundle(tmp_path: Path, generated_slide: Path, second_slide: Path) -> Path:
    root = tmp_path / "idx"
    cbir.build_index([generated_slide, second_slide], root, "stats-lsh32")
    return root


@pytest.fixture()
def server(two_slide_bundle: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    proc, url = start_server(two_slide_bundle, free_port(), log=tmp_path / "server.log")
    try:
        yield proc, url
    finally:
        stop_server(proc)


def tile_addresses(client: httpx.Client, slide_id: int) -> list[str]:
    """Every tile URL of the three finest Deep Zoom levels of a slide."""
    size = ET.fromstring(client.get(f"/slides/{slide_id}.dzi").text).find(f"{DZ}Size")
    assert size is not None
    w, h = int(size.get("Width", 0)), int(size.get("Height", 0))
    dims = [(w, h)]
    while dims[-1] != (1, 1):
        dims.append((max(1, (dims[-1][0] + 1) // 2), max(1, (dims[-1][1] + 1) // 2)))
    dims.reverse()  # Deep Zoom level 0 is 1 x 1
    urls = []
    for level in range(len(dims) - 3, len(dims)):
        lw, lh = dims[level]
        for col in range(-(-lw // 254)):
            for row in range(-(-lh // 254)):
                urls.append(f"/slides/{slide_id}_files/{level}/{col}_{row}.jpeg")
    return urls


def test_server_survives_writers_publishing(
    server: tuple[subprocess.Popen, str], two_slide_bundle: Path
) -> None:
    """4 reader threads fetch Deep Zoom tiles and run region searches while `cbir label`
    publishes 20 generations: the server stays up and every answer is 200."""
    proc, url = server
    with httpx.Client(base_url=url, timeout=60) as client:
        start = client.get("/healthz").json()["generation"]
        urls = tile_addresses(client, 1) + tile_addresses(client, 2)
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                try:
                    if rng.random() < 0.1:
                        body = {"slide": rng.choice([1, 2]), "x": 448, "y": 448, "w": 448,
                                "h": 448, "magnification": 20, "k": 3}  # fmt: skip
                        r = c.post("/search", json=body)
                    else:
                        r = c.get(rng.choice(urls))
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return
                statuses[r.status_code] += 1
                if r.status_code != 200:
                    failures.append(f"{r.request.url.path}: {r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            cmd = [*CLI, "label", str(two_slide_bundle), "generated.tif", f"run={i}"]
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
            if proc.poll() is not None:
                break
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert proc.poll() is None, f"the server died (exit {proc.returncode})"
    assert not failures, failures[:5]
    assert statuses[200] > 100, statuses
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/healthz").json()["generation"] == start + 20


@pytest.fixture()
def in_process_server(two_slide_bundle: Path) -> Iterator[tuple[object, str]]:
    """uvicorn serving create_app() in a thread of this process (so a test can reach the
    app's state), with the settings `cbir serve` uses."""
    import uvicorn

    from cbir.serve.app import create_app
    from cbir.serve.config import ServeConfig
    from cbir.serve.limits import uvicorn_settings

    app = create_app(two_slide_bundle, device="cpu", config=ServeConfig.for_host("127.0.0.1"))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            **uvicorn_settings())  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            threading.Event().wait(0.1)
    try:
        yield app, url
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def test_healthz_answers_while_a_search_runs(in_process_server: tuple[object, str]) -> None:
    """A search that cannot finish (its generation's search lock is held here, as a slow
    search would hold it) leaves /healthz, /slides and tiles answering; then it ends 200."""
    app, url = in_process_server
    holder = app.state.holder  # type: ignore[attr-defined]
    body = {"slide": 1, "x": 448, "y": 448, "w": 448, "h": 448, "magnification": 20, "k": 3}
    done = threading.Event()
    result: dict[str, int] = {}

    def slow_search() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            result["status"] = c.post("/search", json=body).status_code
        done.set()

    with holder.lease() as gen:
        with gen.search_lock:
            searcher = threading.Thread(target=slow_search)
            searcher.start()
            with httpx.Client(base_url=url, timeout=30) as c:
                # more requests than search threads: the search pool is full too
                extra = [threading.Thread(target=slow_search) for _ in range(3)]
                for t in extra:
                    t.start()
                health = c.get("/healthz")
                slides = c.get("/slides")
                tile = c.get("/slides/1_files/8/0_0.jpeg")
            assert not done.is_set(), "the search ended while its lock was held"
            assert health.status_code == 200 and slides.status_code == 200
            assert tile.status_code == 200
    searcher.join(timeout=120)
    for t in extra:
        t.join(timeout=120)
    assert result["status"] == 200


def _status_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_oversized_upload_is_cut_off_while_streaming(
    in_process_server: tuple[object, str],
) -> None:
    """A chunked multipart upload (no Content-Length) of 80 MiB: the server answers 413
    once it has counted past its limit and stops reading; the rest is never accepted."""
    from cbir.serve.limits import MAX_BODY_BYTES

    _, url = in_process_server
    port = int(url.rsplit(":", 1)[1])
    total, chunk = 80 << 20, b"\0" * (1 << 20)
    head = (b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n")  # fmt: skip
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        try:
            sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status = _status_line(sock)
    assert status.startswith(b"HTTP/1.1 413"), status
    assert sent < total, "the server accepted the whole oversized body"
    assert sent <= MAX_BODY_BYTES + (16 << 20)  # the limit plus socket buffers


def test_declared_oversized_body_is_refused_before_reading(
    in_process_server: tuple[object, str],
) -> None:
    _, url = in_process_server
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n{}" % (1 << 40))  # fmt: skip
        status = _status_line(sock)
    assert status.startswith(b"HTTP/1.1 413"), status


@pytest.mark.parametrize("size", [17 << 10, 120_000])
def test_headers_over_16k_sent_at_once_are_refused(
    in_process_server: tuple[object, str], size: int
) -> None:
    """Request line and headers are bounded even when they arrive in one write (h11's own
    bound holds only while they are incomplete: 120 KB of headers used to get 200)."""
    _, url = in_process_server
    port = int(url.rsplit(":", 1)[1])
    for extra, expected in ((size, b"HTTP/1.1 400"), (8 << 10, b"HTTP/1.1 200")):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * extra
                         + b"\r\nConnection: close\r\n\r\n")  # fmt: skip
            status = _status_line(sock)
        assert status.startswith(expected), (extra, status)


def test_a_client_leaving_mid_upload_is_no_server_error(
    in_process_server: tuple[object, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A client that hangs up before its body is in: no 500 and no traceback in the log
    (anyone could fill it so); the access log says 499."""
    import logging

    _, url = in_process_server
    port = int(url.rsplit(":", 1)[1])
    caplog.set_level(logging.INFO)
    part = b'--b\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n\r\nPNG'
    starts = [
        (b"/search", b"application/json", b'{"slide": 1'),
        (b"/search", b"multipart/form-data; boundary=b", part),
        (b"/search/slide", b"application/json", b'{"slide": 1'),
    ]
    for route, kind, start in starts:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
                         b"Content-Length: 100000\r\n\r\n%s" % (route, kind, start))  # fmt: skip
            threading.Event().wait(0.3)
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    threading.Event().wait(0.5)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info], text
    assert " 500 " not in text and "Exception in ASGI" not in text, text
    assert text.count(" 499 ") == 3, text


def test_slow_headers_are_cut_off(
    in_process_server: tuple[object, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slowloris: a client sending one header line every 0.2 s never completes its request;
    the server closes the connection (after HEADER_TIMEOUT_S, here 1 s) instead of waiting
    for ever."""
    import cbir.serve.limits

    monkeypatch.setattr(cbir.serve.limits, "HEADER_TIMEOUT_S", 1.0)
    _, url = in_process_server
    port = int(url.rsplit(":", 1)[1])
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for i in range(150):  # 30 s of trickling if nothing stops it
            try:
                sock.sendall(b"X-Slow-%d: a\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.settimeout(0.2)
            try:
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed = True
                break
    assert closed, "a client trickling headers kept its connection"


def fresh(url: str, path: str) -> dict:
    """GET on a new connection (the kernel deals new connections to the processes)."""
    r = httpx.get(url + path, headers={"Connection": "close"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_several_processes_serve_and_follow_a_publish(
    two_slide_bundle: Path, tmp_path: Path
) -> None:
    """`--processes 2`: both worker processes answer, and after a publish every answer
    comes from the new generation."""
    proc, url = start_server(
        two_slide_bundle, free_port(), "--processes", "2", log=tmp_path / "server.log"
    )
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            first = {fresh(url, "/healthz")["generation"] for _ in range(20)}
            assert len(first) == 1
            r = client.post("/search", json={"slide": 1, "x": 0, "y": 0, "w": 896, "h": 896})
            assert r.status_code == 200 and r.json()["hits"], r.text
            done = subprocess.run(
                [*CLI, "label", str(two_slide_bundle), "generated.tif", "kind=tumour"],
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, done.stderr
            after = {fresh(url, "/healthz")["generation"] for _ in range(20)}
            assert after == {first.pop() + 1}
        assert proc.poll() is None
    finally:
        stop_server(proc)
    # several processes and one Ray shard set do not mix: refused in one line
    done = subprocess.run(
        [*CLI, "serve", str(two_slide_bundle), "--processes", "2", "--ray", "auto"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
