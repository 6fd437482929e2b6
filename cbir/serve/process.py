"""`cbir serve` as a child process on 127.0.0.1 (tests, tools/bench_serve*.py): start it
on a free port, wait until /healthz answers, stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cbir.errors import CbirError

CLI = [sys.executable, "-c", "from cbir.cli.main import app; app()"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    bundle: str | os.PathLike[str],
    port: int,
    *extra: str,
    log: Path | None = None,
    wait_s: float = 120.0,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `cbir serve bundle --port port --device cpu *extra`; return the process and
    its base URL once /healthz answers 200 (CbirError if it exits or never answers)."""
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    cmd = [*CLI, "serve", str(bundle), "--port", str(port), "--device", "cpu", *extra]
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CbirError(f"cbir serve exited with {proc.returncode} before answering")
        try:
            req = urllib.request.Request(f"{url}/healthz", headers=_auth(env))
            with urllib.request.urlopen(req, timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.1)
    stop_server(proc)
    raise CbirError(f"cbir serve did not answer /healthz within {wait_s:g} s")


def _auth(env: dict[str, str] | None) -> dict[str, str]:
    token = (env or {}).get("CBIR_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM of /proc/<pid>/status) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise CbirError(f"/proc/{pid}/status has no VmHWM")


def tree_peak_rss_mb(pid: int) -> float:
    """The sum of the peak resident memories of a live process and its descendants (the
    worker processes of `cbir serve --processes N`), in MB: an upper bound of their
    peak together."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += peak_rss_mb(p)
        except (OSError, CbirError):
            continue
        todo += children.get(p, [])
    return total
