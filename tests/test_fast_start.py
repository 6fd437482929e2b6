"""Fast start: a stats bundle, `cbir info`, `cbir recipes` and error paths import neither
torch nor scikit-learn (a fresh interpreter each), and registries import a component's
module only when it is first created."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from cbir.errors import UnknownComponentError
from cbir.registry import Registry
from cbir.slides.sample import sample_image

HEAVY = ("torch", "sklearn")


#: Defined before the code `fresh_python` runs: cli(*args) runs `cbir ARGS` in that
#: process and returns its exit code (None: 0).
CLI_FUNCTION = """
from cbir.cli.main import app

def cli(*args):
    try:
        app(list(args))
    except SystemExit as exc:
        return exc.code
    return None
"""


def fresh_python(code: str, *args: str) -> dict:
    """Run `code` (after CLI_FUNCTION) in a new interpreter; it prints one JSON object last."""
    proc = subprocess.run(
        [sys.executable, "-c", CLI_FUNCTION + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_stats_bundle_api_and_cli_import_neither_torch_nor_sklearn(
    generated_slide: Path, tmp_path: Path
) -> None:
    query = tmp_path / "query.png"
    Image.fromarray(sample_image()[800:1024, 800:1024]).save(query)
    out = fresh_python(
        """
        import json, sys
        import cbir

        slide, bundle, query, tmp = sys.argv[1:5]
        cbir.build_index([slide], bundle, recipe="stats-lsh32")
        with cbir.open_index(bundle) as ix:
            hits = len(ix.search(query, k=5).hits)
        after_api = sorted(m for m in ("torch", "sklearn") if m in sys.modules)

        codes = {
            "search": cli("search", bundle, query, "-k", "3"),
            "info": cli("info", bundle),
            "recipes": cli("recipes"),
            "missing query": cli("search", bundle, tmp + "/missing.png"),
            "missing slide": cli("build-index", tmp + "/missing.svs", "--out", tmp + "/x"),
            "bad option": cli("build-index", slide, "--out", tmp + "/y", "--magnifications", "0"),
            "usage": cli("search"),
            "missing tiles": cli("train", "cnn", "--tiles", tmp + "/none", "--out", tmp + "/c.pt"),
            "missing weights": cli(
                "build-index", slide, "--out", tmp + "/z", "-r", "cnn-lsh32",
                "--weights", tmp + "/none.pt",
            ),
        }
        heavy = sorted(m for m in ("torch", "sklearn") if m in sys.modules)
        print(json.dumps({"hits": hits, "after_api": after_api, "codes": codes, "heavy": heavy}))
        """,
        str(generated_slide),
        str(tmp_path / "idx"),
        str(query),
        str(tmp_path),
    )
    assert out["hits"] == 5
    assert out["after_api"] == [], "the API path of a stats bundle imported " + str(out)
    assert out["codes"] == {
        "search": 0,
        "info": 0,
        "recipes": 0,
        "missing query": 2,
        "missing slide": 2,
        "bad option": 2,
        "usage": 2,
        "missing tiles": 2,
        "missing weights": 2,
    }
    assert out["heavy"] == [], f"a stats bundle's CLI imported {out['heavy']}"


def test_cli_start_imports_no_heavy_module() -> None:
    """`cbir --help` and the registries' name lists import no component module."""
    out = fresh_python(
        """
        import json, sys
        from cbir.descriptors import list_descriptors
        from cbir.encoders import list_encoders
        try:
            app(["--help"])
        except SystemExit:
            pass
        names = list_descriptors() + list_encoders()
        loaded = sorted(m for m in sys.modules if m.startswith(("cbir.descriptors.", "cbir.nn")))
        heavy = sorted(m for m in ("torch", "sklearn", "scipy", "skimage") if m in sys.modules)
        print(json.dumps({"names": names, "loaded": loaded, "heavy": heavy}))
        """
    )
    assert {"stats", "cnn", "delf", "lsh", "float"} <= set(out["names"])
    assert out["loaded"] == ["cbir.descriptors.base"]
    assert out["heavy"] == []


def test_a_network_descriptor_is_imported_on_first_create() -> None:
    out = fresh_python(
        """
        import json, sys
        from cbir.descriptors import DESCRIPTORS, create_descriptor
        before = DESCRIPTORS.loaded("cnn"), "torch" in sys.modules
        d = create_descriptor("cnn", tile_size=64, device="cpu")
        after = DESCRIPTORS.loaded("cnn"), "torch" in sys.modules
        print(json.dumps({"before": before, "after": after, "dim": d.spec.dim}))
        """
    )
    assert out["before"] == [False, False]
    assert out["after"] == [True, True] and out["dim"] > 0


def test_every_declared_name_is_registered_by_its_module() -> None:
    from cbir.descriptors import DESCRIPTORS
    from cbir.encoders import ENCODERS

    for registry in (DESCRIPTORS, ENCODERS):
        for name in registry.names():
            factory = registry.factory(name)
            assert registry.loaded(name) and callable(factory)


def test_a_declared_registry_is_strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "fake_components"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "silent.py").write_text("# registers nothing\n")
    (pkg / "good.py").write_text(
        "from fake_components import REG\n@REG.register('good')\ndef make(**p):\n    return p\n"
    )
    (pkg / "stray.py").write_text(
        "from fake_components import REG\n@REG.register('stray')\ndef make(**p):\n    return p\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[dict] = Registry("thing")
    import fake_components

    monkeypatch.setattr(fake_components, "REG", reg, raising=False)
    reg.declare("good", "fake_components.good")
    reg.declare("silent", "fake_components.silent")
    reg.declare("elsewhere", "fake_components.other")
    assert reg.names() == ["elsewhere", "good", "silent"]
    assert not reg.loaded("good")
    assert reg.create("good", a=1) == {"a": 1} and reg.loaded("good")
    with pytest.raises(ValueError, match="does not register thing 'silent'"):
        reg.create("silent")
    with pytest.raises(ValueError, match="not declared"):
        __import__("fake_components.stray")
    with pytest.raises(ValueError, match="declared in fake_components.other"):
        reg.register("elsewhere")(lambda: None)
    with pytest.raises(ValueError, match="registered twice"):
        reg.declare("good", "fake_components.good")
    with pytest.raises(UnknownComponentError, match="valid names: elsewhere, good, silent"):
        reg.create("nope")


def test_a_pretrained_bundle_is_read_and_edited_without_torch(
    tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    """`cbir info`, `label`, `remove` and `compact` on an effnet-flat bundle build no
    network (torch stays out); a search then builds it, once."""
    import cbir
    from cbir.nn.efficientnet import packaged_lite0_weights
    from cbir.recipes import load_recipe

    if packaged_lite0_weights() is None:
        pytest.skip("no Lite0 weights package")
    recipe = load_recipe("effnet-flat")
    recipe = recipe.model_copy(
        update={"tiling": recipe.tiling.model_copy(update={"magnifications": (10.0,)})}
    )
    bundle = tmp_path / "idx"
    cbir.build_index([generated_slide, second_slide], bundle, recipe, device="cpu")
    out = fresh_python(
        """
        import json, sys

        bundle, slide = sys.argv[1:3]

        codes = [
            cli("info", bundle),
            cli("label", bundle, "second.tif", "diagnosis=LUAD"),
            cli("remove", bundle, "second.tif"),
            cli("compact", bundle),
            cli("info", bundle),
        ]
        before = "torch" in sys.modules
        codes.append(cli("search", bundle, "--region", slide + ":448,224,896,896@10x", "-k", "1"))
        after = "torch" in sys.modules
        print(json.dumps({"codes": codes, "torch_before": before, "torch_after": after}))
        """,
        str(bundle),
        str(generated_slide),
    )
    assert out["codes"] == [0, 0, 0, 0, 0, 0]
    assert out["torch_before"] is False and out["torch_after"] is True
