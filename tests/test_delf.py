"""DELF (seed 003): network, extraction, PCA, training, bundles with local features and
search --verify (votes + RANSAC, and reranking of a coarse list)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cbir.api import open_index
from cbir.cli.main import app
from cbir.delf.extract import DelfExtractor, top_nms
from cbir.delf.nms import box_nms
from cbir.delf.pca import LocalPCA
from cbir.index.local import LocalCodeIndex
from cbir.indexer import add_slides, build_index, remove_slides
from cbir.nn.delf import DELF_TRUNKS, SmallDenseTrunk
from cbir.nn.receptive import receptive_boxes
from cbir.nn.train.delf import DelfTrainConfig, train_delf
from cbir.slides import open_slide
from cbir.slides.sample import sample_image
from cbir.storage.compact import compact
from conftest import CMU, SHARED_DATA, needs_shared_data, tree_digest, write_two_classes

runner = CliRunner()


def small_local(max_features: int = 300) -> str:
    return (
        '[local]\nparams = { trunk = "small-dense", scales = [0.5, 0.7071, 1.0, 1.4142], '
        f"max_features = {max_features} }}\n"
    )


SMALL_LOCAL = small_local()


def write_recipe(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def delf_recipe(tmp: Path, mags: str = "[10, 20]", max_features: int = 300) -> Path:
    """delf-hnsw's shape with the small trunk: 448 px tiles, votes + RANSAC by default,
    local features stored compactly (the default IVF of PQ codes; SQ8 when few)."""
    return write_recipe(
        tmp / "delf-small.toml",
        f"""name = "delf-small"
[tiling]
tile_size = 448
magnifications = {mags}
[descriptor]
name = "delf"
params = {{ trunk = "small-dense" }}
[encoder]
name = "float"
[index]
float_factory = "Flat"
[search]
k = 5
verify = true
{small_local(max_features)}candidates_from = "votes"
""",
    )


def test_small_trunk_receptive_field_by_hand() -> None:
    # conv5/2, conv5/2, conv3/2, conv3/2, conv3/1: size 1 + 4 + 4*2 + 2*4 + 2*8 + 2*16,
    # padding 2 + 2*2 + 1*4 + 1*8 + 1*16, stride 16.
    rf = SmallDenseTrunk.receptive_field()
    assert (rf.size, rf.stride, rf.padding) == (69, 16, 34)
    assert DELF_TRUNKS["resnet50"].receptive_field.size == 267
    # The map of a 224 input is 14 x 14, as the stride says.
    import torch

    out = SmallDenseTrunk()(torch.zeros(1, 3, 224, 224))
    assert out.shape[2:] == (14, 14)


def test_keypoints_are_box_centres_mapped_through_the_pyramid() -> None:
    ex = DelfExtractor(trunk="small-dense", scales=[0.5, 1.0, 2.0], max_features=1024, iou=1.0)
    f = ex.extract(sample_image()[:224, :224])
    for s in (0.5, 1.0, 2.0):
        xy = f.xy[f.scales == s]
        assert len(xy)
        # centre of feature j at scale s: (j * 16 - 34 + 69 / 2) / s in the original image
        j = xy * s - 0.5
        assert np.allclose(j / 16, np.round(j / 16), atol=1e-3)
    assert f.descriptors.shape == (len(f), 256)
    assert np.allclose(np.linalg.norm(f.descriptors, axis=1), 1, atol=1e-4)
    assert (f.attention >= 0).all()
    assert np.all(np.diff(f.attention) <= 0)  # highest attention first


def test_extraction_is_seeded_and_capped() -> None:
    image = sample_image()[:300, :260]
    a = DelfExtractor(trunk="small-dense", max_features=100).extract(image)
    b = DelfExtractor(trunk="small-dense", max_features=100).extract(image)
    assert len(a) == 100
    assert np.array_equal(a.xy, b.xy) and np.array_equal(a.descriptors, b.descriptors)
    with pytest.raises(ValueError, match="max_features"):
        DelfExtractor(trunk="small-dense", max_features=5000)


def test_top_nms_equals_full_nms() -> None:
    rng = np.random.default_rng(0)
    boxes = receptive_boxes(30, 30, 1.0, 69, 16, 34)
    scores = rng.random(len(boxes)).astype(np.float32)
    for keep in (5, 50, 400):
        assert np.array_equal(top_nms(boxes, scores, 0.5, keep), box_nms(boxes, scores, 0.5, keep))


def test_pca_shapes_normalisation_and_state() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 64)).astype(np.float32)
    pca = LocalPCA(40).fit(x)
    y = pca.transform(x)
    assert y.shape == (500, 40) and y.dtype == np.float32
    assert np.allclose(np.linalg.norm(y, axis=1), 1, atol=1e-5)
    other = LocalPCA(40)
    other.load_state(pca.state())
    assert np.allclose(other.transform(x[:7]), y[:7], atol=1e-6)
    few = LocalPCA(40).fit(x[:10])  # rank 10: the rest of the components are zero
    assert few.transform(x).shape == (500, 40)
    with pytest.raises(ValueError, match="components"):
        LocalPCA(20).load_state(pca.state())


def test_train_delf_two_phases_and_weights_load(tmp_path: Path) -> None:
    tiles = write_two_classes(tmp_path / "tiles", n=6, size=96)
    cfg = DelfTrainConfig(trunk="small-dense", trunk_epochs=3, attention_epochs=3, tile_size=96)
    report = train_delf(tiles, tmp_path / "delf.pt", cfg, device="cpu")
    assert report.classes == ["dark", "pink"]
    assert report.holdout_accuracy_trunk is not None
    assert report.holdout_accuracy_attention is not None
    ex = DelfExtractor(weights=tmp_path / "delf.pt", device="cpu")
    assert ex.spec["trunk"] == "small-dense" and ex.spec["weights_sha256"] == report.sha256
    random = DelfExtractor(trunk="small-dense", device="cpu")
    image = sample_image()[:224, :224]
    assert not np.array_equal(ex.extract(image).descriptors, random.extract(image).descriptors)


@pytest.fixture(scope="module")
def delf_bundle(tmp_path_factory: pytest.TempPathFactory, generated_slide: Path) -> Path:
    tmp = tmp_path_factory.mktemp("delf")
    build_index([generated_slide], tmp / "idx", delf_recipe(tmp), device="cpu", untrained=True)
    return tmp / "idx"


def test_bundle_stores_every_local_feature(delf_bundle: Path) -> None:
    with open_index(delf_bundle) as ix:
        lm = ix.bundle.manifest.local
        assert lm is not None and lm.spec["pca_dim"] == 40
        n = ix.bundle.local_index.ntotal
        assert n == lm.features == ix.bundle.meta.local_feature_count() > 0
        assert ix.bundle.local_index.dim == 40
        tile_ids = np.concatenate([g.ids[g.valid] for g in ix.bundle.meta.all_grids()])
        points = ix.bundle.meta.locals_of(tile_ids)
        # keypoints (level-0) lie within about a tile of their tile
        for tid, (pts, desc) in list(points.items())[:5]:
            rec = ix.bundle.meta.tile(tid)
            assert desc is not None and desc.shape == (len(pts), 40)
            assert (pts[:, 0] > rec.x - rec.w).all() and (pts[:, 0] < rec.x + 2 * rec.w).all()


def test_crop_is_found_at_its_place_by_votes_and_ransac(
    delf_bundle: Path, generated_slide: Path
) -> None:
    # generated slide: 40x at level 0; a 448 x 448 crop at 20x from level-0 (600, 800)
    x0, y0, side = 600, 800, 896
    with open_slide(generated_slide) as slide:
        crop = slide.read_region(x0, y0, side, side, 20.0)
    with open_index(delf_bundle) as ix:
        first = ix.search(crop, k=3)
        again = ix.search(crop, k=3)
    assert first.verified and first.hits
    top = first.hits[0]
    assert top.magnification == 20.0 and top.inliers >= 20
    centre = np.array(top.affine) @ np.array([224, 224, 1.0])
    assert np.hypot(*(centre - [x0 + side / 2, y0 + side / 2])) < 40
    assert [h.model_dump() for h in again.hits] == [h.model_dump() for h in first.hits]


def test_add_and_remove_keep_the_local_index_consistent(
    tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    recipe = delf_recipe(tmp_path, "[20]")
    build_index([generated_slide], tmp_path / "idx", recipe, device="cpu", untrained=True)
    add_slides(tmp_path / "idx", [second_slide])
    with open_index(tmp_path / "idx") as ix:
        both = ix.bundle.local_index.ntotal
        assert both == ix.bundle.meta.local_feature_count()
    remove_slides(tmp_path / "idx", ["generated.tif"])
    with open_index(tmp_path / "idx") as ix:
        left = ix.bundle.local_index.ntotal
        assert 0 < left < both and left == ix.bundle.meta.local_feature_count()
        ids = ix.bundle.local_index.search(np.eye(40, dtype=np.float32)[:1], 5)[1]
        assert all(ix.bundle.meta.tile(int(i) >> 10).slide_id != 1 for i in ids[0])
    # segments with local features merge: rows kept with their ids, search unchanged
    add_slides(tmp_path / "idx", [generated_slide])
    with open_slide(second_slide) as slide:
        crop = slide.read_region(448, 448, 448, 448, 20.0)
    with open_index(tmp_path / "idx") as ix:
        assert len(ix.bundle.segments) == 2
        before = [h.model_dump() for h in ix.search(crop, k=3).hits]
        rows = ix.bundle.local_index.ntotal
    assert before and before[0]["slide"] == "second.tif"
    report = compact(tmp_path / "idx")
    assert report.segments_after == 1
    with open_index(tmp_path / "idx") as ix:
        assert ix.bundle.local_index.ntotal == rows == ix.bundle.meta.local_feature_count()
        assert ix.bundle.manifest.local.features == rows
        after = [h.model_dump() for h in ix.search(crop, k=3).hits]
    # the merge copies the codes: one IVF holding the same codes, the same hits
    assert after == before


def test_verify_reranks_a_coarse_list_and_reports_transforms(
    tmp_path: Path, generated_slide: Path
) -> None:
    recipe = write_recipe(
        tmp_path / "stats-local.toml",
        'name = "stats-local"\n[tiling]\nmagnifications = [20]\n[descriptor]\nname = "stats"\n'
        '[encoder]\nname = "lsh"\nparams = { bits = 32, seed = 0, standardize = true }\n'
        + SMALL_LOCAL
        + "candidates = 40\n",  # the default local storage: decoded from the local index
    )
    out = tmp_path / "idx"
    code = runner.invoke(
        app, ["build-index", str(generated_slide), "--out", str(out), "--recipe", str(recipe)]
    ).exit_code
    assert code == 0
    region = f"{generated_slide}:896,1344,448,448@20x"
    res = runner.invoke(app, ["search", str(out), "--region", region, "-k", "5", "--json"])
    assert res.exit_code == 0, res.stderr
    plain = json.loads(res.stdout)
    assert not plain["verified"] and plain["hits"][0]["inliers"] is None
    res = runner.invoke(
        app, ["search", str(out), "--region", region, "-k", "5", "--verify", "--json"]
    )
    assert res.exit_code == 0, res.stderr
    verified = json.loads(res.stdout)
    hits = verified["hits"]
    assert verified["verified"] and len(hits) == 5
    assert [h["inliers"] for h in hits] == sorted((h["inliers"] for h in hits), reverse=True)
    top = hits[0]
    assert (top["x"], top["y"]) == (896, 1344) and top["inliers"] > hits[1]["inliers"]
    affine = np.array(top["affine"])  # query px (20x) -> level-0 (40x): about 2 x identity
    assert np.allclose(affine[:, :2], 2 * np.eye(2), atol=0.1)
    assert np.allclose(affine[:, 2], [896, 1344], atol=20)


def test_verify_without_local_features_is_one_clear_error(
    tmp_path: Path, generated_slide: Path
) -> None:
    out = tmp_path / "idx"
    build_index([generated_slide], out, "stats-lsh32")
    before = tree_digest(out)
    res = runner.invoke(
        app, ["search", str(out), "--region", f"{generated_slide}:0,0,448,448@20x", "--verify"]
    )
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1
    assert "no local features" in lines[0] and str(out) in lines[0]
    assert tree_digest(out) == before


def test_wrong_local_weights_are_refused_before_writing(
    tmp_path: Path, generated_slide: Path
) -> None:
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not weights")
    res = runner.invoke(
        app,
        [
            "build-index",
            str(generated_slide),
            "--out",
            str(tmp_path / "idx"),
            "--local-weights",
            str(bogus),
        ],
    )
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "bogus.pt" in lines[0]
    assert not (tmp_path / "idx").exists()


@pytest.fixture(scope="module")
def crc9_delf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small-dense DELF trained briefly on the labelled colorectal tiles."""
    out = tmp_path_factory.mktemp("crc9delf") / "delf.pt"
    cfg = DelfTrainConfig(trunk="small-dense", trunk_epochs=10, attention_epochs=6, lr=3e-3)
    train_delf(SHARED_DATA / "tiles-crc9", out, cfg, device="cpu")
    return out


@pytest.fixture(scope="module")
def cmu_delf(tmp_path_factory: pytest.TempPathFactory, crc9_delf: Path) -> Path:
    root = tmp_path_factory.mktemp("cmu-delf") / "idx"
    recipe = delf_recipe(tmp_path_factory.mktemp("r"), max_features=1000)
    build_index([CMU], root, recipe, weights=crc9_delf)
    return root


@pytest.mark.slow
@needs_shared_data
def test_local_features_of_a_real_slide_cost_pq_codes_and_quantised_keypoints(
    cmu_delf: Path,
) -> None:
    """Over 9,984 features: trained as PQ20 codes (21-22 B with the list number, 28 B
    in the IVF with the id) and 8 B of keypoint in LMDB, against 520 B before."""
    import lmdb

    with open_index(cmu_delf) as ix:
        index = ix.bundle.segments[0].local_index
        features = index.ntotal
        assert isinstance(index, LocalCodeIndex) and index.index.pq.M == 20
    seg = next(cmu_delf.glob("seg-*"))
    env = lmdb.open(str(seg / "meta.lmdb"), readonly=True, lock=False, max_dbs=8)
    with env.begin() as txn:
        records = sum(len(v) for _, v in txn.cursor(db=env.open_db(b"locals", txn=txn)))
    env.close()
    assert records / features < 9
    # beyond the trained tables every segment shares: 20 B of code and 8 B of id a row
    empty = next(cmu_delf.glob("state-*")) / "locals.empty.faiss"
    rows = (seg / "locals.faiss").stat().st_size - empty.stat().st_size
    assert rows <= 28 * features + 8 * index.nlist


@needs_shared_data
@pytest.mark.parametrize(("angle", "scale"), [(15.0, 1.0), (10.0, 0.75), (0.0, 1.3)])
def test_rotated_rescaled_crop_of_a_real_slide_is_found_at_its_place(
    cmu_delf: Path, angle: float, scale: float
) -> None:
    root = cmu_delf
    cx, cy, half = 1100, 1500, 350  # level-0 = 20x on this slide
    with open_slide(CMU) as slide:
        patch = slide.read_region(cx - half, cy - half, 2 * half, 2 * half, 20.0)
    m = cv2.getRotationMatrix2D((half, half), angle, scale)
    query = cv2.warpAffine(patch, m, (2 * half, 2 * half), borderMode=cv2.BORDER_REFLECT)
    query = np.ascontiguousarray(query[half - 200 : half + 200, half - 200 : half + 200])
    with open_index(root) as ix:
        result = ix.search(query, k=3)
    top = result.hits[0]
    assert top.magnification == 20.0 and top.inliers >= 20
    centre = np.array(top.affine) @ np.array([200, 200, 1.0])
    assert np.hypot(centre[0] - cx, centre[1] - cy) < 30

    # the recovered rotation and scale are those of the inverse of the applied transform
    def angle_and_scale(a: np.ndarray) -> tuple[float, float]:
        angle = np.degrees(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]))
        return float(angle), float(np.sqrt(abs(np.linalg.det(a))))

    got_angle, got_scale = angle_and_scale(np.array(top.affine)[:, :2])
    want_angle, want_scale = angle_and_scale(np.linalg.inv(m[:, :2]))
    assert abs(got_angle - want_angle) < 5 and abs(got_scale / want_scale - 1) < 0.1


def test_pca_is_fitted_early_and_later_tiles_projected_at_once(
    tmp_path: Path, generated_slide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cbir.delf.stage as stage

    monkeypatch.setattr(stage, "FIT_POOL", 500)  # fit after the first two tiles
    seen: list[tuple[bool, int]] = []
    original = stage.LocalStage.observe

    def spy(self: stage.LocalStage, feats: list) -> None:
        original(self, feats)
        seen.append((self.fitted, len(self._pending)))

    monkeypatch.setattr(stage.LocalStage, "observe", spy)
    build_index(
        [generated_slide], tmp_path / "idx", delf_recipe(tmp_path), device="cpu", untrained=True
    )
    assert seen[0][0] is False and seen[-1] == (True, 0)  # nothing waits once fitted
    with open_index(tmp_path / "idx") as ix:
        assert ix.bundle.local_index.ntotal == ix.bundle.meta.local_feature_count()
        with open_slide(generated_slide) as slide:
            crop = slide.read_region(600, 800, 896, 896, 20.0)
        assert ix.search(crop, k=1).hits[0].magnification == 20.0


def test_train_delf_starts_from_a_local_resnet50_file(tmp_path: Path) -> None:
    import torch

    from cbir.nn.backbones import ResNet50Features
    from cbir.nn.weights import load_weights

    full = ResNet50Features()  # torchvision layout, with layer4 (ignored by DELF)
    state = {**full.state_dict(), "fc.weight": torch.zeros(1000, 2048)}
    torch.save(state, tmp_path / "resnet50.pth")
    tiles = write_two_classes(tmp_path / "tiles", n=3, size=64)
    cfg = DelfTrainConfig(
        trunk="resnet50",
        backbone_weights=str(tmp_path / "resnet50.pth"),
        trunk_epochs=0,  # phase 2 only: the trunk must stay the file's
        attention_epochs=1,
        tile_size=64,
        holdout=0.0,
    )
    train_delf(tiles, tmp_path / "delf.pt", cfg, device="cpu")
    _, saved = load_weights(tmp_path / "delf.pt", "delf")
    assert torch.equal(saved["trunk.layer3.5.conv3.weight"], state["layer3.5.conv3.weight"])
    assert not any(k.startswith("trunk.layer4") for k in saved)


def test_bundle_written_before_local_features_still_opens(
    tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    import lmdb

    out = tmp_path / "idx"
    build_index([generated_slide], out, "stats-lsh32")
    meta_dir = next(out.glob("seg-*")) / "meta.lmdb"
    env = lmdb.open(str(meta_dir), max_dbs=8)
    with env.begin(write=True) as txn:  # as a bundle of the previous cbir: no locals db
        txn.drop(env.open_db(b"locals", txn=txn), delete=True)
    env.close()
    (meta_dir / "lock.mdb").unlink(missing_ok=True)
    _record_as_written(out, meta_dir / "data.mdb")  # the old cbir's manifest named this file
    with open_index(out) as ix:
        assert ix.bundle.meta.stores[0].locals is None
        assert ix.search(f"{generated_slide}:896,1344,448,448@20x", k=1).hits
    add_slides(out, [second_slide])
    remove_slides(out, ["generated.tif"])
    with open_index(out) as ix:
        assert len(ix.slides) == 1


def _record_as_written(root: Path, data: Path) -> None:
    """Record `data`'s checksum and size in the manifest, as the writer of a bundle
    whose segment held this file would have."""
    import json

    from cbir.files import sha256_file

    manifest = json.loads((root / "manifest.json").read_text())
    seg = next(s for s in manifest["segments"] if s["name"] == data.parent.parent.name)
    rel = f"{data.parent.name}/{data.name}"
    seg["sha256"][rel] = sha256_file(data)
    seg["bytes"] += data.stat().st_size - seg["sizes"][rel]
    seg["sizes"][rel] = data.stat().st_size
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_votes_search_at_one_magnification_takes_a_query_smaller_than_a_tile(
    delf_bundle: Path, generated_slide: Path
) -> None:
    with open_slide(generated_slide) as slide:
        crop = slide.read_region(600, 800, 600, 600, 20.0)  # 300 px < the 448 px tiles
    with open_index(delf_bundle) as ix:
        result = ix.search(crop, k=2, scale="20x")
    assert result.searched_magnifications == [20.0]
    assert all(h.magnification == 20.0 for h in result.hits)


def test_an_image_larger_than_max_side_is_shrunk_to_it() -> None:
    ex = DelfExtractor(trunk="small-dense", scales=[1.0, 2.0], max_side=112)
    f = ex.extract(sample_image()[:224, :224])
    assert len(f) and np.allclose(f.scales, 0.5)
    assert f.xy.max() < 224


def test_one_forward_pass_gives_local_features_and_the_global_descriptor(
    tmp_path: Path,
) -> None:
    """A delf descriptor on the local stage's own network: the scale-1 pass of the local
    extraction gives the global vectors, equal to the descriptor's own pass."""
    from cbir.descriptors import create_descriptor
    from cbir.recipes import load_recipe

    recipe = load_recipe(str(delf_recipe(tmp_path, "[20]")))
    descriptor = create_descriptor("delf", tile_size=448, trunk="small-dense", device="cpu")
    from cbir.delf.stage import LocalStage

    stage = LocalStage(recipe.local, None, "cpu")
    assert descriptor.pooled_from(stage)
    tiles = np.random.default_rng(0).integers(0, 256, (5, 448, 448, 3), dtype=np.uint8)
    feats, pooled = stage.extract_tiles_pooled(tiles)
    assert pooled is not None and len(feats) == 5
    np.testing.assert_allclose(pooled, descriptor.describe(tiles), rtol=1e-4, atol=1e-5)
    assert [len(f) for f in feats] == [len(f) for f in stage.extract_tiles(tiles)]
    other = create_descriptor("delf", tile_size=448, trunk="small-dense", device="cpu")
    other.spec.params["weights_sha256"] = "another network"
    assert not other.pooled_from(stage)
