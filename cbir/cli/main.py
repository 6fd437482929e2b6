"""`cbir` commands: thin wrappers over the Python API. Heavy imports happen inside them."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from cbir.cli.options import (
    BackboneOpt,
    BackboneWeightsOpt,
    BaseMagOpt,
    DeviceOpt,
    FineTuneOpt,
    HoldoutOpt,
    IndexArg,
    JsonOpt,
    KOpt,
    LabelledTilesOpt,
    LabelsOpt,
    MinTissueOpt,
    OutWeightsOpt,
    RecipeOpt,
    WeightsOpt,
)

app = typer.Typer(
    name="cbir",
    no_args_is_help=True,
    add_completion=False,
    help="Content-based image retrieval for whole-slide histology images.",
)

F = TypeVar("F", bound=Callable[..., Any])


SLIDE_SUFFIXES = {
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".svslide",
    ".png",
    ".jpg",
    ".jpeg",
}


def cli_errors(func: F) -> F:
    """Turn a CbirError into one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import lmdb

        from cbir.cli.render import setup_logging
        from cbir.errors import CbirError

        setup_logging()
        try:
            return func(*args, **kwargs)
        except CbirError as exc:
            typer.echo(f"cbir: error: {exc}", err=True)
            raise typer.Exit(2) from None
        except (OSError, lmdb.Error) as exc:  # disk full, permissions, a path that is a file
            typer.echo(f"cbir: error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def expand_slides(paths: list[Path]) -> list[Path]:
    """Files as given; directories expand to the slide and image files inside them."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in SLIDE_SUFFIXES))
        else:
            out.append(p)
    return out


def _recipe_with(  # type: ignore[no-untyped-def]
    recipe: str, magnifications: str | None, stride: int | None = None
):
    from pydantic import ValidationError

    from cbir.errors import RecipeError
    from cbir.recipes import TilingConfig, load_recipe

    base = load_recipe(recipe)
    update: dict[str, Any] = {}
    if magnifications:
        try:
            update["magnifications"] = tuple(
                sorted(float(m.strip().rstrip("x")) for m in magnifications.split(","))
            )
        except ValueError:
            raise RecipeError(
                f"--magnifications {magnifications!r}: expected e.g. 5,10,20"
            ) from None
    if stride is not None:
        update["stride"] = stride
    if not update:
        return base
    try:
        tiling = TilingConfig(**{**base.tiling.model_dump(), **update})
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise RecipeError(f"--magnifications/--stride: {msg}") from None
    return base.model_copy(update={"tiling": tiling})


@app.command("build-index")
@cli_errors
def build_index_cmd(
    slides: Annotated[list[Path], typer.Argument(help="Slides, images or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to create.")],
    recipe: RecipeOpt = "stats-lsh32",
    magnifications: Annotated[
        str | None,
        typer.Option(help="Comma-separated magnifications, e.g. 5,10,20 (default: the recipe's)."),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(
            help="Output px between tile origins (default: the recipe's, else the tile size); "
            "e.g. 112 overlaps 224 px tiles by half, so off-grid crops are found at their "
            "place, for 4x the tiles.",
        ),
    ] = None,
    base_magnification: BaseMagOpt = None,
    min_tissue: MinTissueOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite/--no-overwrite", help="Replace an existing bundle.")
    ] = False,
    weights: WeightsOpt = None,
    scale_weights: Annotated[
        Path | None,
        typer.Option(
            "--scale-weights", help="Scale comparator (cbir train scale) for --scale auto."
        ),
    ] = None,
    local_weights: Annotated[
        Path | None,
        typer.Option(
            "--local-weights",
            help="DELF weights (cbir train delf): also store local features, for --verify.",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Index slides into a new bundle."""
    from cbir.cli.render import RichProgress, show_report
    from cbir.indexer import build_index

    with RichProgress() as progress:
        report = build_index(
            expand_slides(slides),
            out,
            _recipe_with(recipe, magnifications, stride),
            base_magnification=base_magnification,
            min_tissue_fraction=min_tissue,
            overwrite=overwrite,
            progress=progress,
            weights=weights,
            device=device,
            scale_weights=scale_weights,
            local_weights=local_weights,
        )
    typer.echo(report.model_dump_json()) if json_out else show_report(report)


@app.command("add")
@cli_errors
def add_cmd(
    index: IndexArg,
    slides: Annotated[list[Path], typer.Argument(help="Slides, images or folders of them.")],
    replace: Annotated[
        bool, typer.Option("--replace/--no-replace", help="Re-index slides already in the bundle.")
    ] = False,
    recipe: Annotated[
        str | None,
        typer.Option("--recipe", "-r", help="Refuse unless the bundle was built with this recipe."),
    ] = None,
    base_magnification: BaseMagOpt = None,
    min_tissue: MinTissueOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add slides to a bundle (its stored standardisation and hyperplanes are reused)."""
    from cbir.cli.render import RichProgress, show_report
    from cbir.indexer import add_slides

    with RichProgress() as progress:
        report = add_slides(
            index,
            expand_slides(slides),
            recipe=recipe,
            replace=replace,
            base_magnification=base_magnification,
            min_tissue_fraction=min_tissue,
            progress=progress,
        )
    typer.echo(report.model_dump_json()) if json_out else show_report(report)


@app.command("remove")
@cli_errors
def remove_cmd(
    index: IndexArg,
    slides: Annotated[list[str], typer.Argument(help="Slide paths or file names.")],
    json_out: JsonOpt = False,
) -> None:
    """Remove slides from a bundle."""
    from cbir.cli.render import show_report
    from cbir.indexer import remove_slides

    report = remove_slides(index, slides)
    typer.echo(report.model_dump_json()) if json_out else show_report(report)


@app.command("search")
@cli_errors
def search_cmd(
    index: IndexArg,
    query: Annotated[
        Path | None,
        typer.Argument(help="Query image (one tile or larger: larger is a region query)."),
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="Region of a slide: SLIDE:x,y,w,h@MAGx, level-0 pixels.")
    ] = None,
    k: KOpt = None,
    scale: Annotated[
        str,
        typer.Option(
            help="Magnifications to search: all, auto (the bundle's scale comparator picks), "
            "or one such as 20x."
        ),
    ] = "all",
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify/--no-verify",
            help="Rank by local-feature RANSAC inliers (bundles with local features; "
            "default: the recipe's).",
        ),
    ] = None,
    allow_background: Annotated[
        bool,
        typer.Option(
            "--allow-background/--no-allow-background",
            help="Search a query without tissue (refused by default).",
        ),
    ] = False,
    min_similarity: Annotated[
        float | None,
        typer.Option(
            "--min-similarity",
            min=0.0,
            max=1.0,
            help="Drop hits with a similarity (0..1) below this; fewer than k may remain.",
        ),
    ] = None,
    expand: Annotated[
        int | None,
        typer.Option(
            "--expand",
            min=0,
            help="Query expansion of tile queries: search again with the query plus its N "
            "nearest tiles (unit-vector recipes; default: the recipe's; 0: off).",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Search a bundle with an image or a slide region."""
    from cbir.api import open_index
    from cbir.cli.render import show_hits
    from cbir.errors import QueryError
    from cbir.query import Region

    if (query is None) == (region is None):
        raise QueryError("give either a query image or --region, not both or neither")
    with open_index(index, device=device) as ix:
        result = ix.search(
            Region.parse(region) if region else query,
            k=k,
            scale=scale,
            verify=verify,
            allow_background=allow_background,
            min_similarity=min_similarity,
            expand=expand,
        )
    typer.echo(result.model_dump_json()) if json_out else show_hits(result)


@app.command("info")
@cli_errors
def info_cmd(index: IndexArg, json_out: JsonOpt = False) -> None:
    """Describe a bundle: recipe, index, slides, counts, size."""
    from cbir.api import open_index
    from cbir.cli.render import show_info

    with open_index(index) as ix:
        info = ix.info()
    typer.echo(info.model_dump_json()) if json_out else show_info(info)


@app.command("backbones")
@cli_errors
def backbones_cmd(json_out: JsonOpt = False) -> None:
    """List the registered backbones: dims, input normalisation, checkpoint layout."""
    import json

    from cbir.nn.backbones import backbone_entry, list_backbones

    rows = []
    for name in list_backbones():
        e = backbone_entry(name)
        packaged = e.default_weights()
        rows.append(
            {
                "name": name,
                "dim": e.dim,
                "map_channels": e.map_channels,
                "input_size": e.input_size,
                "normalization": e.normalization,
                "layout": e.layout,
                "pretrained": "packaged" if packaged else ("needed" if e.requires_weights else "-"),
            }
        )
    if json_out:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        typer.echo(
            f"{r['name']}: {r['dim']}-d, map {r['map_channels']} ch, {r['input_size']} px, "
            f"{r['normalization']} normalisation, {r['layout']} keys, weights {r['pretrained']}"
        )


@app.command("recipes")
@cli_errors
def recipes_cmd(json_out: JsonOpt = False) -> None:
    """List the index recipes."""
    import json

    from cbir.recipes import list_recipes, load_recipe

    recipes = [load_recipe(n) for n in list_recipes()]
    if json_out:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in recipes]))
    else:
        for r in recipes:
            typer.echo(f"{r.name}: {r.description}")


@app.command("evaluate")
@cli_errors
def evaluate_cmd(
    tiles: Annotated[
        Path,
        typer.Option(
            "--tiles",
            help="Labelled tiles: class sub-folders, or a labels.csv with columns path,label.",
        ),
    ],
    recipe: RecipeOpt = "stats-lsh32",
    labels: Annotated[
        Path | None, typer.Option(help="CSV path,label (default: TILES/labels.csv if present).")
    ] = None,
    weights: WeightsOpt = None,
    space: Annotated[
        str,
        typer.Option(
            help="Rank by Hamming on the recipe's codes (code) or L2 on descriptors (float)."
        ),
    ] = "code",
    split_from: Annotated[
        Path | None,
        typer.Option(
            help="Leave out the tiles this weights file was trained on (compare recipes on "
            "the same held-out tiles)."
        ),
    ] = None,
    bits_sweep: Annotated[
        str | None,
        typer.Option(
            "--bits-sweep",
            help="e.g. 12,24,32,48,64,128: train and compare LSH, deephash and "
            "ssdh at each code length on the same frozen backbone (see --backbone)",
        ),
    ] = None,
    backbone: BackboneOpt = "small",
    expand: Annotated[
        int | None,
        typer.Option("--expand", min=0, help="Query expansion (default: the recipe's; 0: off)."),
    ] = None,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Leave-one-out retrieval quality on labelled tiles: seed-000 MAP@10, mAP@10, P@k,
    majority vote@5, per class and averaged over classes. With --weights, the tiles the
    weights were trained on are left out."""
    from cbir.cli.render import show_eval
    from cbir.eval import evaluate_tiles

    if bits_sweep:
        import json

        from cbir.eval.bits_sweep import bits_sweep as sweep

        result = sweep(tiles, [int(b) for b in bits_sweep.split(",")], backbone, None, device)
        typer.echo(json.dumps(result) if json_out else json.dumps(result, indent=2))
        return
    report = evaluate_tiles(
        tiles,
        recipe,
        labels,
        weights=weights,
        space=space,
        device=device,
        split_from=split_from,
        expand=expand,
    )
    typer.echo(report.model_dump_json()) if json_out else show_eval(report)


train_app = typer.Typer(no_args_is_help=True, help="Train the networks of learned recipes.")
app.add_typer(train_app, name="train")


@train_app.command("cnn")
@cli_errors
def train_cnn_cmd(
    tiles: LabelledTilesOpt,
    out: OutWeightsOpt,
    labels: LabelsOpt = None,
    epochs: Annotated[int, typer.Option(min=1)] = 60,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    lr: Annotated[float, typer.Option(min=0.0)] = 3e-3,
    holdout: HoldoutOpt = 0.5,
    backbone: Annotated[
        str,
        typer.Option(
            help="alexnet-like (seed 000's narrow tower), alexnet (torchvision's layout), or "
            "any registered backbone (cbir backbones), e.g. efficientnet_lite0"
        ),
    ] = "alexnet-like",
    backbone_weights: BackboneWeightsOpt = None,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Train seed 000's AlexNet-like trunk as a tissue classifier; weights for `cnn`.

    Augmentation: flips, 90-degree rotations, colour jitter."""
    from cbir.cli.render import RichProgress, show_verdict, stdout
    from cbir.nn.train_cnn import CnnTrainConfig, train_cnn

    cfg = CnnTrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        holdout=holdout,
        seed=seed,
        backbone=backbone,
        backbone_weights=str(backbone_weights) if backbone_weights else None,
    )
    with RichProgress() as progress:
        report = train_cnn(tiles, out, cfg, labels, device, progress)
    show_verdict(report.verdict)
    if json_out:
        typer.echo(report.model_dump_json())
    else:
        acc = "n/a" if report.holdout_accuracy is None else f"{report.holdout_accuracy:.3f}"
        stdout.print(
            f"wrote {report.weights} ({report.train_tiles} training tiles, "
            f"{len(report.classes)} classes, loss {report.first_epoch_loss:.3f} -> "
            f"{report.last_epoch_loss:.3f}, held-out accuracy {acc}, "
            f"{report.seconds:.1f} s on {report.device})"
        )


@train_app.command("vae")
@cli_errors
def train_vae_cmd(
    tiles: Annotated[
        Path,
        typer.Option(
            "--tiles",
            help="Tiles: any folder of images (labels, if present, only stratify the split).",
        ),
    ],
    out: OutWeightsOpt,
    latent: Annotated[int, typer.Option(min=32, max=512, help="Latent size.")] = 128,
    labels: LabelsOpt = None,
    epochs: Annotated[int, typer.Option(min=1)] = 40,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    holdout: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Fraction of tiles held out.")
    ] = 0.5,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Train seed 000's tile VAE; its posterior mean mu is the `vae` descriptor."""
    from cbir.cli.render import RichProgress, show_verdict, stdout
    from cbir.nn.train_vae import VaeTrainConfig, train_vae

    cfg = VaeTrainConfig(
        latent=latent, epochs=epochs, batch_size=batch_size, lr=lr, holdout=holdout, seed=seed
    )
    with RichProgress() as progress:
        report = train_vae(tiles, out, cfg, labels, device, progress)
    show_verdict(report.verdict)
    if json_out:
        typer.echo(report.model_dump_json())
    else:
        mse = report.holdout_reconstruction_mse
        stdout.print(
            f"wrote {report.weights} ({report.train_tiles} training tiles, loss "
            f"{report.first_epoch_loss:.1f} -> {report.last_epoch_loss:.1f}, held-out "
            f"reconstruction MSE {'n/a' if mse is None else f'{mse:.4f}'}, "
            f"{report.seconds:.1f} s on {report.device})"
        )


@train_app.command("deephash")
@cli_errors
def train_deephash_cmd(
    tiles: LabelledTilesOpt,
    out: OutWeightsOpt,
    bits: Annotated[int, typer.Option(min=8, max=256, help="Hash bits q.")] = 48,
    backbone: BackboneOpt = "small",
    backbone_weights: BackboneWeightsOpt = None,
    labels: LabelsOpt = None,
    epochs: Annotated[int, typer.Option(min=1)] = 300,
    holdout: HoldoutOpt = 0.5,
    fine_tune_steps: FineTuneOpt = 0,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Train seed 001's deep hashing (tied autoencoder + classifier on frozen backbone
    features); weights for the deephash<q>-ivf recipes."""
    from cbir.cli.render import RichProgress, show_verdict, stdout
    from cbir.nn.train_deephash import DeepHashTrainConfig, train_deephash

    cfg = DeepHashTrainConfig(
        fine_tune_steps=fine_tune_steps,
        backbone=backbone,
        bits=bits,
        epochs=epochs,
        holdout=holdout,
        seed=seed,
        backbone_weights=str(backbone_weights) if backbone_weights else None,
    )
    with RichProgress() as progress:
        report = train_deephash(tiles, out, cfg, labels, device, progress)
    show_verdict(report.verdict)
    if json_out:
        typer.echo(report.model_dump_json())
    else:
        st = report.bit_statistics
        stdout.print(
            f"wrote {report.weights} ({report.bits} bits on {report.backbone}; loss "
            f"{report.first_loss:.2f} -> {report.last_loss:.2f}; bit balance "
            f"{st['bit_balance']:.3f}, mean |bit correlation| "
            f"{st['bit_correlation']:.3f}; {report.seconds:.1f} s on {report.device})"
        )


@train_app.command("metric")
@cli_errors
def train_metric_cmd(
    tiles: LabelledTilesOpt,
    out: OutWeightsOpt,
    loss: Annotated[
        str, typer.Option(help="triplet (semi-hard, online mining) or crossentropy")
    ] = "triplet",
    backbone: BackboneOpt = "small",
    backbone_weights: BackboneWeightsOpt = None,
    labels: LabelsOpt = None,
    steps: Annotated[int, typer.Option(min=1)] = 400,
    margin: Annotated[float, typer.Option(min=0.0)] = 0.2,
    holdout: HoldoutOpt = 0.5,
    fine_tune_steps: FineTuneOpt = 0,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Train seed 002's 512-d embedding (shift/zoom/rotation/flip augmentation, frozen
    backbone); weights for the metric-flat / metric-hnsw recipes."""
    from cbir.cli.render import RichProgress, show_verdict, stdout
    from cbir.errors import CbirError
    from cbir.nn.train_metric import MetricTrainConfig, train_metric

    if loss not in ("triplet", "crossentropy"):
        raise CbirError(f"--loss {loss!r}: expected triplet or crossentropy")
    cfg = MetricTrainConfig(
        fine_tune_steps=fine_tune_steps,
        loss=loss,
        backbone=backbone,
        steps=steps,
        margin=margin,
        holdout=holdout,
        seed=seed,
        backbone_weights=str(backbone_weights) if backbone_weights else None,
    )
    with RichProgress() as progress:
        report = train_metric(tiles, out, cfg, labels, device, progress)
    show_verdict(report.verdict)
    if json_out:
        typer.echo(report.model_dump_json())
    else:
        knn = report.holdout_knn_accuracy
        stdout.print(
            f"wrote {report.weights} ({report.loss} loss {report.first_loss:.3f} -> "
            f"{report.last_loss:.3f}; held-out 1-NN accuracy "
            f"{'n/a' if knn is None else f'{knn:.3f}'}; {report.seconds:.1f} s)"
        )


@train_app.command("delf")
@cli_errors
def train_delf_cmd(
    tiles: Annotated[
        Path,
        typer.Option(
            "--tiles",
            help="Labelled tiles or images: class sub-folders, or a labels.csv (path,label).",
        ),
    ],
    out: OutWeightsOpt,
    trunk: Annotated[str, typer.Option(help="resnet50 (conv4_x, 1024-d) or small-dense")] = (
        "resnet50"
    ),
    backbone_weights: Annotated[
        Path | None,
        typer.Option(
            "--backbone-weights", help="torchvision ResNet-50 state_dict (.pth), read locally"
        ),
    ] = None,
    labels: LabelsOpt = None,
    trunk_epochs: Annotated[int, typer.Option("--trunk-epochs", min=0)] = 20,
    attention_epochs: Annotated[int, typer.Option("--attention-epochs", min=1)] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    holdout: HoldoutOpt = 0.5,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Train seed 003's DELF network in two phases: the trunk as a classifier, then the
    attention head (trunk frozen, random rescales); weights for delf-hnsw and
    --local-weights."""
    from cbir.cli.render import RichProgress, show_verdict, stdout
    from cbir.nn.train_delf import DelfTrainConfig, train_delf

    cfg = DelfTrainConfig(
        trunk=trunk,
        backbone_weights=str(backbone_weights) if backbone_weights else None,
        trunk_epochs=trunk_epochs,
        attention_epochs=attention_epochs,
        batch_size=batch_size,
        lr=lr,
        holdout=holdout,
        seed=seed,
    )
    with RichProgress() as progress:
        report = train_delf(tiles, out, cfg, labels, device, progress)
    show_verdict(report.verdict)
    if json_out:
        typer.echo(report.model_dump_json())
    else:

        def acc(a: float | None) -> str:
            return "n/a" if a is None else f"{a:.3f}"

        stdout.print(
            f"wrote {report.weights} ({report.trunk}; held-out accuracy: trunk "
            f"{acc(report.holdout_accuracy_trunk)}, attention "
            f"{acc(report.holdout_accuracy_attention)}; {report.seconds:.1f} s)"
        )


@train_app.command("ssdh")
@cli_errors
def train_ssdh_cmd(
    tiles: LabelledTilesOpt,
    out: OutWeightsOpt,
    bits: Annotated[int, typer.Option(min=8, max=256, help="Latent bits q.")] = 24,
    rol: Annotated[
        bool,
        typer.Option(
            "--rol/--no-rol",
            help="Reliability Object Layer; needs --masks. Without masks "
            "there is nothing to train the segmentation head on, so plain SSDH is trained.",
        ),
    ] = False,
    masks: Annotated[
        Path | None,
        typer.Option(
            help="Folder of label images (class id per pixel, 0 = background), same relative "
            "names as the tiles."
        ),
    ] = None,
    backbone: BackboneOpt = "small",
    backbone_weights: BackboneWeightsOpt = None,
    labels: LabelsOpt = None,
    epochs: Annotated[int, typer.Option(min=1)] = 300,
    holdout: HoldoutOpt = 0.5,
    fine_tune_steps: FineTuneOpt = 0,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Train seed 004's SSDH (latent sigmoid layer before the classifier), optionally with
    the ROL; weights for the ssdh<q>-ivf recipes."""
    from cbir.cli.render import RichProgress, show_verdict, stdout
    from cbir.nn.train_ssdh import SSDHTrainConfig, train_ssdh

    cfg = SSDHTrainConfig(
        fine_tune_steps=fine_tune_steps,
        backbone=backbone,
        bits=bits,
        rol=rol,
        masks=str(masks) if masks else None,
        epochs=epochs,
        holdout=holdout,
        seed=seed,
        backbone_weights=str(backbone_weights) if backbone_weights else None,
    )
    with RichProgress() as progress:
        report = train_ssdh(tiles, out, cfg, labels, device, progress)
    show_verdict(report.verdict)
    if json_out:
        typer.echo(report.model_dump_json())
    else:
        st = report.bit_statistics
        stdout.print(
            f"wrote {report.weights} ({report.bits} bits{' + ROL' if report.rol else ''}"
            f"; loss {report.first_loss:.2f} -> {report.last_loss:.2f}; bit balance "
            f"{st['bit_balance']:.3f}; {report.seconds:.1f} s)"
        )


@train_app.command("lda")
@cli_errors
def train_lda_cmd(
    tiles: LabelledTilesOpt,
    out: OutWeightsOpt,
    base_recipe: Annotated[
        str,
        typer.Option(
            "--base-recipe", help="Recipe whose (frozen) descriptor the projection is fitted on."
        ),
    ] = "effnet-d4-flat",
    shrinkage: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Within-class covariance shrinkage.")
    ] = 0.5,
    labels: LabelsOpt = None,
    holdout: HoldoutOpt = 0.5,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Fit a Fisher discriminant (shrinkage LDA) on a frozen descriptor of labelled tiles;
    weights for the effnet-lda-flat recipe."""
    from cbir.cli.render import show_verdict, stdout
    from cbir.nn.train_lda import LdaTrainConfig, train_lda

    cfg = LdaTrainConfig(base_recipe=base_recipe, shrinkage=shrinkage, holdout=holdout, seed=seed)
    report = train_lda(tiles, out, cfg, labels, device)
    show_verdict(report.verdict)
    if json_out:
        typer.echo(report.model_dump_json())
    else:
        acc = "n/a" if report.holdout_accuracy is None else f"{report.holdout_accuracy:.3f}"
        stdout.print(
            f"wrote {report.weights} ({report.dim}-d projection of {report.base_recipe}; "
            f"accuracy train {report.train_accuracy:.3f}, held-out {acc}; {report.seconds:.1f} s)"
        )


@train_app.command("scale")
@cli_errors
def train_scale_cmd(
    slides: Annotated[
        list[Path],
        typer.Option("--slides", help="Slides or folders of them (repeat the option for several)."),
    ],
    out: OutWeightsOpt,
    magnifications: Annotated[
        str, typer.Option(help="Comma-separated magnifications to tell apart.")
    ] = "5,10,15,20,25,30,35,40",
    tiles_per_magnification: Annotated[int, typer.Option(min=2)] = 64,
    train_pairs: Annotated[int, typer.Option(min=10)] = 2000,
    epochs: Annotated[int, typer.Option(min=1)] = 12,
    holdout: Annotated[
        float, typer.Option(min=0.05, max=0.9, help="Bottom fraction of each slide held out.")
    ] = 0.3,
    arch: Annotated[
        str, typer.Option(help="siamese, or stacked (seed 000's 6-channel convolutions)")
    ] = "siamese",
    base_magnification: BaseMagOpt = None,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Train seed 000's scale comparator on same/different-magnification tile pairs cut
    from your slides; reports accuracy on pairs from held-out slide parts."""
    from cbir.cli.render import RichProgress, show_verdict, stdout
    from cbir.nn.train_scale import ScaleTrainConfig, train_scale

    mags = tuple(float(m.strip().rstrip("x")) for m in magnifications.split(","))
    cfg = ScaleTrainConfig(
        magnifications=mags,
        tiles_per_magnification=tiles_per_magnification,
        train_pairs=train_pairs,
        epochs=epochs,
        holdout=holdout,
        seed=seed,
        arch=arch,
    )
    with RichProgress() as progress:
        report = train_scale(expand_slides(slides), out, cfg, device, base_magnification, progress)
    show_verdict(report.verdict)
    if json_out:
        typer.echo(report.model_dump_json())
    else:
        stdout.print(
            f"wrote {report.weights}: {report.train_pairs} training pairs over "
            f"{', '.join(f'{m:g}x' for m in report.magnifications)}; held-out pair "
            f"accuracy {report.held_accuracy:.3f} ({report.held_pairs} pairs, "
            f"{report.seconds:.1f} s on {report.device})"
        )


@app.command("demo")
@cli_errors
def demo_cmd(
    workdir: Annotated[Path, typer.Option(help="Where the sample slide and index go.")] = Path(
        "cbir-demo"
    ),
    json_out: JsonOpt = False,
) -> None:
    """Index the embedded sample slide (scikit-image IHC) and search a crop of it."""
    from cbir.cli.render import RichProgress, show_hits, show_report, stdout
    from cbir.demo import run_demo

    with RichProgress() as progress:
        demo = run_demo(workdir, progress)
    if json_out:
        typer.echo(demo.model_dump_json())
    else:
        stdout.print(f"sample slide: {demo.slide}")
        show_report(demo.report)
        stdout.print(
            f"query: {demo.query}, a crop of the slide at x={demo.expected_x} "
            f"y={demo.expected_y} (level-0 px), {demo.magnification:g}x"
        )
        show_hits(demo.result)
        verdict = "found at rank 1" if demo.found_at_rank_1 else "NOT found at rank 1"
        stdout.print(f"the crop's own place: {verdict}")
    if not demo.found_at_rank_1:
        sys.exit(1)
