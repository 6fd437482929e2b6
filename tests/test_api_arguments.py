"""The Python API checks its arguments as the CLI and HTTP API do (cbir.search.arguments):
numpy integers are whole numbers, floats and words are refused in one line, one slide
name is one name (not its letters), an empty filter is refused, a closed Index says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cbir
from cbir.errors import CbirError, QueryError
from cbir.slides.sample import sample_image


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, generated_slide: Path) -> Path:
    root = tmp_path_factory.mktemp("api-args") / "idx"
    cbir.build_index([generated_slide], root, "stats-lsh32")
    return root


QUERY = np.ascontiguousarray(sample_image()[600:1048, 600:1048])


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"k": 2.5}, "k must be a whole number, not 2.5"),  # a region query returned 37
        ({"k": "5"}, "k must be a whole number"),
        ({"k": True}, "k must be a whole number"),
        ({"k": 0}, "k must be >= 1"),
        ({"expand": -1}, "expand must be >= 0"),
        ({"min_similarity": 2}, "min_similarity must be a number in [0, 1]"),
        ({"min_similarity": float("nan")}, "min_similarity must be a number in [0, 1]"),
        ({"slides": []}, "slides: an empty list keeps no slide"),
    ],
)
def test_wrong_arguments_are_one_query_error(bundle: Path, options: dict, words: str) -> None:
    with cbir.open_index(bundle) as ix, pytest.raises(QueryError) as err:
        ix.search(QUERY, **options)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_numpy_integers_and_one_name_are_taken(bundle: Path, generated_slide: Path) -> None:
    with cbir.open_index(bundle) as ix:
        tile = QUERY[:224, :224]
        assert len(ix.search(tile, k=np.int64(3)).hits) == 3  # reached Faiss's SWIG: TypeError
        one = ix.search(QUERY, k=2, slides=generated_slide.name)  # was split into letters
        assert {h.slide for h in one.hits} == {generated_slide.name}
        (sid,) = ix.slides
        assert ix.search_slide(np.int64(sid), k=1).query_slide_id == sid  # was a file "1"
        with pytest.raises(QueryError, match="k must be a whole number"):
            ix.search_slide(sid, k=2.5)


def test_a_closed_index_says_so(bundle: Path) -> None:
    ix = cbir.open_index(bundle)
    ix.close()
    for call in (lambda: ix.search(QUERY, k=2), lambda: ix.info(), lambda: ix.search_slide(1)):
        with pytest.raises(CbirError, match="this Index is closed"):
            call()


def test_writers_take_one_path_or_name(bundle: Path, generated_slide: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "idx"
    shutil.copytree(bundle, root)
    cbir.label_slide(root, generated_slide.name, {"grade": "2"})
    cbir.label_slide(root, generated_slide.name, {}, unset="grade")  # not "g", "r", ...
    with cbir.open_index(root) as ix:
        assert "grade" not in next(iter(ix.slides.values())).labels
    with pytest.raises(CbirError, match="a label value of None"):
        cbir.label_slide(root, generated_slide.name, {"grade": None})  # type: ignore[dict-item]
    cbir.remove_slides(root, generated_slide.name)  # not its letters
    with cbir.open_index(root) as ix:
        assert not ix.slides
    cbir.add_slides(root, str(generated_slide))
    with cbir.open_index(root) as ix:
        assert [r.info.name for r in ix.slides.values()] == [generated_slide.name]


def test_arrays_are_read_as_files_of_those_pixels_are(bundle: Path, tmp_path: Path) -> None:
    """A uint16 array is scaled as a 16-bit file is (it was refused), an RGBA array is
    composited onto white as an RGBA file is (its alpha was ignored); a float TIFF is
    named as unreadable by PIL (truncated, or pixels it does not take)."""
    import tifffile

    with cbir.open_index(bundle) as ix:
        as_8 = ix.search(QUERY, k=3).hits
        as_16 = ix.search(QUERY.astype(np.uint16) * 257, k=3).hits
        assert [(h.x, h.y) for h in as_16] == [(h.x, h.y) for h in as_8]
        clear = np.concatenate([QUERY, np.zeros((*QUERY.shape[:2], 1), np.uint8)], axis=2)
        with pytest.raises(QueryError, match="no tissue"):
            ix.search(clear, k=3)  # fully transparent: white, as a PNG of it is
        tif = tmp_path / "float.tif"
        tifffile.imwrite(tif, QUERY.astype(np.float32) / 255.0)
        with pytest.raises(
            CbirError, match="a TIFF that PIL cannot read: truncated or damaged, or of pixels"
        ):
            ix.search(str(tif), k=3)
