"""A Ray worker killed (SIGKILL, from outside) in the middle of writing its segment, on
a real local Ray cluster (`ray.init(num_cpus=2)`): the build or add completes on the
restarted worker and the bundle equals a single-process build's (tiles, codes, search
results), with no attempt's stage left behind.

The kill is deterministic: the cluster's workers see CBIR_TEST_RAY_PAUSE (a directory).
While that directory exists, the first worker to reach the pause point of
`SegmentWorker.write_segment` (its first slide stored in the stage, the segment not
finished) writes its pid there and sleeps; this test sends it SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import cbir
from cbir.storage.manifest import META_DIR, read_manifest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'cbir[ray]')")

from test_ray import contents, same_search  # noqa: E402

PAUSE_ENV = "CBIR_TEST_RAY_PAUSE"


@pytest.fixture(scope="module")
def armed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pause directory the workers look for (absent: no worker pauses)."""
    return tmp_path_factory.mktemp("ray-pause") / "armed"


@pytest.fixture(scope="module")
def cluster(armed: Path) -> Iterator[str]:
    """A real Ray cluster on this machine whose workers know the pause directory."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {PAUSE_ENV: str(armed)}},
    )
    try:
        yield "auto"
    finally:
        ray.shutdown()


def kill_paused_writer(armed: Path, root: Path, timeout: float = 120.0) -> tuple[int, Path]:
    """Wait for a worker to pause mid-write, check its stage directory holds the
    segment's LMDB, and SIGKILL it. Returns (pid, that stage directory)."""
    deadline = time.monotonic() + timeout
    while not (armed / "pid").exists():
        if time.monotonic() > deadline:
            raise AssertionError("no Ray worker paused while writing its segment")
        time.sleep(0.02)
    pid = int((armed / "pid").read_text())
    assert pid != os.getpid()
    stages = open_stages(pid, root)
    assert len(stages) == 1, f"the paused writer {pid} has no stage of {root} open"
    os.kill(pid, signal.SIGKILL)
    return pid, stages.pop()


def open_stages(pid: int, root: Path) -> set[Path]:
    """The `.tmp-*` directories of `root` whose segment LMDB process `pid` has open."""
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = Path(os.readlink(fd))
        except OSError:
            continue
        if target.parent.parent.parent == root.resolve() and target.parent.name == META_DIR:
            if target.parent.parent.name.startswith(".tmp-") and target.name == "data.mdb":
                out.add(target.parent.parent)
    return out


def with_kill(armed: Path, root: Path, write: Callable[[], object]) -> tuple[int, Path]:
    """Run `write()` while a thread kills the worker that pauses mid-write."""
    shutil.rmtree(armed, ignore_errors=True)
    armed.mkdir()
    try:
        with ThreadPoolExecutor(1) as pool:
            killer = pool.submit(kill_paused_writer, armed, root)
            write()
            return killer.result(timeout=10)
    finally:
        shutil.rmtree(armed, ignore_errors=True)


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process `pid` has ended (reaped or a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_writer_killed_during_build_costs_only_its_retry(
    cluster: str, armed: Path, tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    """Two workers, each writing one slide's segment; one is killed mid-write."""
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    cbir.build_index([generated_slide, second_slide], local)
    pid, stage = with_kill(
        armed,
        on_ray,
        lambda: cbir.build_index(
            [generated_slide, second_slide], on_ray, ray=cluster, ray_workers=2
        ),
    )
    assert gone(pid)
    assert not stage.exists() and not list(on_ray.glob(".tmp-*"))
    assert len(read_manifest(on_ray).segments) == 2
    assert contents(local) == contents(on_ray)
    same_search(local, on_ray, f"{generated_slide}:448,224,448,448@40x")
    same_search(local, on_ray, f"{second_slide}:448,448,448,448@20x")


def test_writer_killed_during_add_costs_only_its_retry(
    cluster: str, armed: Path, tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    """The only worker of an add is killed mid-write: the restarted worker has lost the
    slides it described and describes them again."""
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    cbir.build_index([generated_slide], local)
    cbir.add_slides(local, [second_slide])
    cbir.build_index([generated_slide], on_ray, ray=cluster)
    pid, stage = with_kill(
        armed, on_ray, lambda: cbir.add_slides(on_ray, [second_slide], ray=cluster)
    )
    assert gone(pid)
    assert not stage.exists() and not list(on_ray.glob(".tmp-*"))
    assert contents(local) == contents(on_ray)
    same_search(local, on_ray, f"{second_slide}:448,448,448,448@20x")
