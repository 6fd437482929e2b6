"""The CLI runs on the main dependencies alone: typer >= 0.2x vendors click, so `click`
itself may be absent (a plain `pip install cbir` has none)."""

from __future__ import annotations

import subprocess
import sys


def test_cli_works_without_a_click_package() -> None:
    code = (
        "import sys; sys.modules['click'] = None\n"  # any `import click` now fails
        "from cbir.cli.main import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['train', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['train', 'cnn', '--help'])\n"
        "assert r.exit_code == 0 and '--epochs' in r.output, r.output\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
