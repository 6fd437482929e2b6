"""`cbir train`: every command is built from its method's declaration (cbir.nn.train):
options, defaults and bounds are the config model's, and a method module imports no
torch until it trains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from typer.testing import CliRunner

from cbir.cli.main import app
from cbir.cli.train import method_command
from cbir.nn.train.method import load_method, method_names

METHODS = ["cnn", "deephash", "delf", "lda", "metric", "scale", "ssdh", "vae"]


def _command(name: str) -> click.Command:
    command = method_command(name)
    assert command is not None
    return command


def test_every_method_module_is_a_command() -> None:
    assert method_names() == METHODS
    assert [load_method(n).name for n in METHODS] == METHODS


@pytest.mark.parametrize("name", METHODS)
def test_options_are_the_config_fields(name: str) -> None:
    method = load_method(name)
    options = {p.name: p for p in _command(name).params}
    described = {n: f for n, f in method.config.model_fields.items() if f.description}
    assert described, "a method exposes its settings"
    for field_name, field in described.items():
        option = options[field_name]
        assert f"--{field_name.replace('_', '-')}" in option.opts
        assert option.help == field.description or option.help.startswith(field.description)
        if isinstance(field.default, (int, float, str)) and not isinstance(field.default, bool):
            assert option.default == field.default
    for undescribed in set(method.config.model_fields) - set(described):
        assert undescribed not in options  # internal settings stay off the command line
    common = {"out", "device", "json_out"} | (
        {"slides", "base_magnification"} if method.inputs == "slides" else {"tiles", "labels"}
    )
    assert set(options) - set(described) == common


def test_bounds_and_choices_come_from_the_model(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    runner = CliRunner()
    args = ["train", "metric", "--tiles", str(tmp_path), "--out", str(tmp_path / "m.pt")]
    bad_loss = runner.invoke(app, [*args, "--loss", "bogus"])
    assert bad_loss.exit_code == 2
    assert "--loss" in bad_loss.output and "triplet" in bad_loss.output
    vae = ["train", "vae", "--tiles", str(tmp_path), "--out", str(tmp_path / "v.pt")]
    too_small = runner.invoke(app, [*vae, "--latent", "8"])
    assert too_small.exit_code == 2 and "--latent" in too_small.output


def test_method_modules_import_no_torch() -> None:
    code = (
        "import json, sys\n"
        "from cbir.nn.train.method import load_method, method_names\n"
        "[load_method(n) for n in method_names()]\n"
        "print(json.dumps(sorted(m for m in ('torch', 'sklearn', 'cv2') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_backbone_help_is_one_text() -> None:
    from cbir.cli.options import BACKBONE_HELP as cli_help
    from cbir.nn.train.method import BACKBONE_HELP

    assert cli_help == BACKBONE_HELP


def _bounds(field) -> tuple[object, object]:  # type: ignore[no-untyped-def]
    import annotated_types

    lo = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
    hi = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
    return lo, hi


def _param(command: str, name: str) -> click.Parameter:
    import typer

    root = typer.main.get_command(app)
    cmd = root.get_command(click.Context(root), command)  # type: ignore[attr-defined]
    assert cmd is not None
    return next(p for p in cmd.params if p.name == name)


def test_other_commands_options_are_checked_against_their_models() -> None:
    """Options written by hand beside a config model keep its defaults and bounds:
    `cbir serve --workers` is ServeConfig.pixel_threads, `--log-requests` its
    log_requests; `build-index --min-tissue` is the recipe's min_tissue_fraction."""
    from cbir.recipes import TilingConfig
    from cbir.serve.config import ServeConfig

    fields = ServeConfig.model_fields
    workers = _param("serve", "workers")
    assert workers.default == fields["pixel_threads"].default
    assert (workers.min, workers.max) == _bounds(fields["pixel_threads"])  # type: ignore[attr-defined]
    assert _param("serve", "log_requests").default == fields["log_requests"].default
    tissue = _param("build-index", "min_tissue")
    assert (tissue.min, tissue.max) == _bounds(  # type: ignore[attr-defined]
        TilingConfig.model_fields["min_tissue_fraction"]
    )
