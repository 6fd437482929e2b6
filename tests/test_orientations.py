"""--orientations: a query flipped or turned finds the place it was cut from, and each hit
names the flip or turn that matched (cbir.search.orientation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cbir
from cbir.cli.main import app
from cbir.errors import QueryError
from cbir.search.orientation import ORIENTATIONS, merge
from cbir.slides.sample import sample_image

#: A 2 x 2 tile crop of the sample image at 40x (the generated slide's base), on the grid.
Y, X, SIDE = 448, 672, 448


@pytest.fixture(scope="module")
def bundle(generated_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("orient") / "idx"
    cbir.build_index([generated_slide], out, "stats-lsh32")
    return out


def _crop() -> np.ndarray:
    return sample_image()[Y : Y + SIDE, X : X + SIDE]


def test_the_eight_orientations_are_the_dihedral_group() -> None:
    a = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    images = [turn(a) for turn in ORIENTATIONS.values()]
    assert len(ORIENTATIONS) == 8 and list(ORIENTATIONS)[0] == "none"
    assert len({im.tobytes() + bytes(im.shape) for im in images}) == 8  # all different


@pytest.mark.parametrize("name", [n for n in ORIENTATIONS if n != "none"])
def test_a_turned_or_flipped_query_is_found_at_its_place(bundle: Path, name: str) -> None:
    query = ORIENTATIONS[name](_crop())
    with cbir.open_index(bundle) as ix:
        hit = ix.search(query, k=5, orientations=True).hits[0]
        # the orientation it names is the one that matched: the query turned so, searched
        # as it is, finds the same place at the same distance
        again = ix.search(ORIENTATIONS[hit.orientation](query), k=1).hits[0]
    assert (hit.x, hit.y, hit.w, hit.h, hit.magnification) == (X, Y, SIDE, SIDE, 40.0)
    assert (again.x, again.y, again.distance) == (hit.x, hit.y, hit.distance)


def test_without_the_option_nothing_is_turned(bundle: Path) -> None:
    with cbir.open_index(bundle) as ix:
        hits = ix.search(_crop(), k=5).hits
        with pytest.raises(QueryError, match="--orientations and --verify"):
            ix.search(_crop(), k=5, orientations=True, verify=True)
    assert {h.orientation for h in hits} == {"none"}
    assert (hits[0].x, hits[0].y) == (X, Y)


def test_merge_keeps_one_hit_per_place_by_best_distance(bundle: Path) -> None:
    with cbir.open_index(bundle) as ix:
        found = {n: ix.search(t(_crop()), k=5).hits for n, t in ORIENTATIONS.items()}
    merged = merge(found, 5)
    assert [h.rank for h in merged] == [1, 2, 3, 4, 5]
    assert [h.distance for h in merged] == sorted(h.distance for h in merged)
    places = {(h.slide_id, h.magnification, h.x, h.y) for h in merged}
    assert len(places) == 5


def test_cli_and_json_say_the_orientation(bundle: Path, tmp_path: Path) -> None:
    png = tmp_path / "turned.png"
    Image.fromarray(np.ascontiguousarray(np.rot90(_crop()))).save(png)
    res = CliRunner().invoke(
        app, ["search", str(bundle), str(png), "-k", "3", "--orientations", "--json"]
    )
    assert res.exit_code == 0, res.output
    hit = json.loads(res.stdout)["hits"][0]
    assert (hit["x"], hit["y"], hit["orientation"]) == (X, Y, "rot270")  # undoes rot90


def test_a_query_shorter_than_a_tile_is_resized_up(bundle: Path) -> None:
    """Between half a tile and a tile on its short side, a query is resized up to one
    tile and searched (the result says by how much); below half a tile it is refused."""
    crop = _crop()[:160, :300]  # 160 px high
    with cbir.open_index(bundle) as ix:
        result = ix.search(crop, k=3)
        assert result.query_resized == pytest.approx(224 / 160, abs=1e-3)
        assert result.hits and ix.search(_crop(), k=3).query_resized is None
        with pytest.raises(QueryError, match="smaller than the 112 px a side"):
            ix.search(crop[:100], k=3)
