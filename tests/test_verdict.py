"""Training verdicts: a run at chance, with a flat loss or dead bits says it did not
learn, in its report, its weights file, and when the weights are loaded."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cbir.cli.main import app
from cbir.nn.verdict import judge
from cbir.nn.weights import load_weights, save_weights
from conftest import write_two_classes


def test_judge_by_hand() -> None:
    assert judge(2.0, 0.5, accuracy=0.9, chance=0.5).learned
    at_chance = judge(2.0, 0.5, accuracy=0.49, chance=0.5)
    assert not at_chance.learned and "at chance" in at_chance.line
    flat = judge(0.70, 0.69, accuracy=0.9, chance=0.1)
    assert not flat.learned and "loss barely moved" in flat.line
    dead = judge(2.0, 1.0, 0.8, 0.1, {"constant_bits": 20, "bit_balance": 0.45}, 48)
    assert not dead.learned and "constant" in dead.line and "unbalanced" in dead.line


def test_loading_weights_that_did_not_learn_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    verdict = judge(0.7, 0.7, 0.5, 0.5)
    path = tmp_path / "w.pt"
    save_weights(path, "cnn", {"verdict": verdict.model_dump()}, {})
    with caplog.at_level(logging.WARNING, logger="cbir"):
        load_weights(path, "cnn")
    assert "did not learn" in caplog.text and "at chance" in caplog.text


def test_train_reports_its_verdict(tmp_path: Path) -> None:
    tiles = write_two_classes(tmp_path / "tiles", n=6, size=64)
    res = CliRunner().invoke(
        app,
        [
            "train",
            "cnn",
            "--tiles",
            str(tiles),
            "--out",
            str(tmp_path / "c.pt"),
            "--epochs",
            "1",
            "--lr",
            "0",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["verdict"]["learned"] is False  # lr 0: nothing can change
    assert "DID NOT LEARN" in res.stderr
