"""The first hour on the command line (issue 24): what a new user meets."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cbir.cli.main import app

runner = CliRunner()


def run(*args: object) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code: int, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("cbir: error: "), stderr
    return lines[0]


@pytest.mark.parametrize(("recipe", "train"), [("cnn-lsh32", "cnn"), ("vae-flat", "vae")])
def test_a_learned_recipe_without_weights_is_refused(
    tmp_path: Path, generated_slide: Path, recipe: str, train: str
) -> None:
    out = tmp_path / "idx"
    code, _, stderr = run("build-index", generated_slide, "--out", out, "--recipe", recipe)
    line = one_line_error(code, stderr)
    assert f"cbir train {train}" in line and "--weights" in line and "--untrained" in line
    assert not out.exists()
    code, _, stderr = run(
        "build-index", generated_slide, "--out", out, "--recipe", recipe, "--untrained",
        "--magnifications", "10",
    )  # fmt: skip
    assert code == 0, stderr
    assert (out / "manifest.json").is_file()
