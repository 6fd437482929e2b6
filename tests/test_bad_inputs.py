"""The bad-input catalogue of tools/bad_inputs.py (issue 21), one test per case: query
images, regions, options, batches, damaged manifests and segment files through every
command, HTTP bodies and requests. Each case: no traceback (no exception but SystemExit
out of the CLI, no 5xx), its exit code (2; verify's damage report 1) or a 4xx, one line
on stderr or in `detail`, and every file of the bundle byte-identical afterwards.

The whole catalogue takes about 40 s on a loaded 2-core machine, so every case runs by
default; `python tools/bad_inputs.py [--fast]` prints the same as a table."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import bad_inputs  # noqa: E402

CASES = bad_inputs.catalogue()


def _param(case: bad_inputs.Case) -> object:
    marks = []
    if case.request is not None:
        marks.append(pytest.mark.skipif(not _has_serve(), reason="cbir[serve] not installed"))
    return pytest.param(case, id=case.id, marks=marks)


def _has_serve() -> bool:
    try:
        import fastapi  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bad_inputs.Base]:
    b = bad_inputs.Base.build(tmp_path_factory.mktemp("bad-inputs"))
    yield b
    b.close()


def test_the_catalogue_is_large_and_covers_every_category() -> None:
    assert len(CASES) >= 180
    assert {c.category for c in CASES} == set(bad_inputs.CATEGORIES)
    fast = bad_inputs.fast_subset(CASES)
    assert {c.category for c in fast} == set(bad_inputs.CATEGORIES) and len(fast) < 60


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_is_refused_in_one_line(
    case: bad_inputs.Case, base: bad_inputs.Base, tmp_path: Path
) -> None:
    outcome = bad_inputs.run_case(case, base, tmp_path)
    assert outcome.ok, outcome.report()
