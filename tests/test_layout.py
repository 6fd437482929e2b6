"""The package's layering (docs/architecture.md), checked by tools/import_graph.py: no
import cycle, no import that climbs a layer, at most 15 modules at the top of cbir/ and
none over 400 lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _report() -> dict:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "import_graph.py"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def test_no_cycles_and_no_climbing_imports() -> None:
    report = _report()
    assert report["modules"] > 100  # the whole package was read
    assert report["cycles"] == []
    assert report["climbing_imports"] == []


def test_top_level_and_module_sizes() -> None:
    report = _report()
    assert report["top_level_modules"] <= 15, report["top_level"]
    assert report["over_400_lines"] == {}


def test_the_checker_sees_a_cycle_and_a_climb(tmp_path: Path) -> None:
    """The checker can fail: a package copy with two modules importing each other and a
    slide reader importing the API."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import import_graph
    finally:
        sys.path.pop(0)
    pkg = tmp_path / "cbir"
    (pkg / "slides").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "slides" / "__init__.py").write_text("")
    (pkg / "api.py").write_text("from cbir.slides.base import x\n")
    (pkg / "slides" / "base.py").write_text("def f():\n    from cbir.api import y\n")
    old = import_graph.ROOT, import_graph.PACKAGE
    import_graph.ROOT, import_graph.PACKAGE = tmp_path, pkg
    try:
        report = import_graph.report()
    finally:
        import_graph.ROOT, import_graph.PACKAGE = old
    assert report["cycles"] == [["cbir.api", "cbir.slides.base"]]
    assert len(report["climbing_imports"]) == 1
    assert "cbir.slides.base" in report["climbing_imports"][0]
