"""`cbir` commands: thin wrappers over the Python API. Heavy imports happen inside them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cbir.cli.errors import OneLineErrors, cli_errors
from cbir.cli.labels import register as register_label
from cbir.cli.listing import register as register_listing
from cbir.cli.options import (
    DEFAULT_RECIPE,
    BackboneOpt,
    BaseMagOpt,
    DeviceOpt,
    IndexArg,
    JsonOpt,
    MinTissueOpt,
    RayOpt,
    RecipeOpt,
    SkipErrorsOpt,
    WeightsOpt,
)
from cbir.cli.paths import expand_slides
from cbir.cli.search import register as register_search
from cbir.cli.serve import serve_cmd
from cbir.cli.storage import register_storage
from cbir.cli.train import train_app

app = typer.Typer(
    name="cbir",
    cls=OneLineErrors,  # usage errors are one line on stderr, exit code 2
    no_args_is_help=True,
    add_completion=False,
    help="Content-based image retrieval for whole-slide histology images.",
    rich_markup_mode=None,  # click's help: wraps at any width, never cuts an option's name
)


def _recipe_with(  # type: ignore[no-untyped-def]
    recipe: str, magnifications: str | None, stride: int | None = None
):
    from pydantic import ValidationError

    from cbir.errors import RecipeError, validation_line
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
        options = {"magnifications": f"--magnifications {magnifications}", "stride": "--stride"}
        if stride is not None:
            options["stride"] = f"--stride {stride}"
        raise RecipeError(validation_line(exc, options)) from None
    return base.model_copy(update={"tiling": tiling})


@app.command("build-index")
@cli_errors
def build_index_cmd(
    slides: Annotated[list[Path], typer.Argument(help="Slides, images or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to create.")],
    recipe: RecipeOpt = DEFAULT_RECIPE,
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
            "--scale-weights",
            help="Scale comparator (cbir train scale): Index.scale_probabilities.",
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
    skip_errors: SkipErrorsOpt = False,
    ray: RayOpt = None,
    untrained: Annotated[
        bool,
        typer.Option(
            "--untrained",
            help="Let a learned recipe without --weights index with seeded random weights "
            "(a baseline).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Index slides into a new bundle."""
    from cbir.cli.progress import stderr_progress
    from cbir.indexer import build_index

    with stderr_progress() as progress:
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
            skip_errors=skip_errors,
            ray=ray,
            untrained=untrained,
        )
    _finish(report, json_out)


def _finish(report: Any, json_out: bool) -> None:
    """Print an index report; name each skipped slide on stderr; exit 3 if an unreadable
    one was (--skip-errors; a slide without tissue is only a warning)."""
    from cbir.cli.render import show_report
    from cbir.cli.words import plural

    typer.echo(report.model_dump_json()) if json_out else show_report(report)
    for text in report.same_content:
        typer.echo(f"cbir: warning: {text}", err=True)
    empty = [s for s in report.skipped if s.no_tissue]
    unreadable = [s for s in report.skipped if not s.no_tissue]
    for s in empty:
        typer.echo(f"cbir: warning: skipped, no tissue: {s.reason}", err=True)
    for s in unreadable:
        typer.echo(f"cbir: skipped: {s.reason}", err=True)
    if empty:
        typer.echo(f"cbir: {plural(len(empty), 'slide')} without tissue left out", err=True)
    if unreadable:
        count = plural(len(unreadable), "unreadable slide")
        typer.echo(f"cbir: {count} skipped (--skip-errors)", err=True)
        raise typer.Exit(3)


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
    skip_errors: SkipErrorsOpt = False,
    ray: RayOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add slides to a bundle (its stored standardisation and hyperplanes are reused)."""
    from cbir.cli.progress import stderr_progress
    from cbir.indexer import add_slides

    with stderr_progress() as progress:
        report = add_slides(
            index,
            expand_slides(slides),
            recipe=recipe,
            replace=replace,
            base_magnification=base_magnification,
            min_tissue_fraction=min_tissue,
            progress=progress,
            skip_errors=skip_errors,
            ray=ray,
        )
    _finish(report, json_out)


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


register_search(app)  # cbir/cli/search.py: one query or a batch, filters, exports
register_label(app)  # cbir/cli/labels.py: cbir label BUNDLE SLIDE key=value ...
register_storage(app)  # cbir/cli/storage.py: compact, upgrade, rebuild


@app.command("info")
@cli_errors
def info_cmd(index: IndexArg, json_out: JsonOpt = False) -> None:
    """Describe a bundle: recipe, index, slides, counts, size."""
    from cbir.api import open_index
    from cbir.cli.render import note_readonly, show_info

    with open_index(index) as ix:
        info = ix.info()
        note_readonly(ix)
    if json_out:
        typer.echo(info.model_dump_json())
    else:
        from cbir.cli.labels import show_labels

        show_info(info)
        show_labels(info)


register_listing(app)  # cbir/cli/listing.py: backbones, recipes


@app.command("evaluate")
@cli_errors
def evaluate_cmd(
    tiles: Annotated[
        Path | None,
        typer.Option(
            "--tiles",
            help="Labelled tiles: class sub-folders, or a labels.csv with columns path,label.",
        ),
    ] = None,
    slides: Annotated[
        Path | None,
        typer.Option(
            "--slides",
            help="Labelled slides (a folder; --labels: CSV slide,label[,case]): each slide "
            "queries an index of the others, its case left out.",
        ),
    ] = None,
    recipe: RecipeOpt = DEFAULT_RECIPE,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="CSV path,label (tiles) or slide,label[,case] (slides) (default: "
            "labels.csv in the folder)."
        ),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="Slides: rank by pooled, median or mosaic (as cbir search --slide-ranking)."
        ),
    ] = "pooled",
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
    untrained: Annotated[
        bool,
        typer.Option(
            "--untrained",
            help="Let a learned recipe without --weights run on seeded random weights "
            "(a baseline).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Leave-one-out retrieval quality on labelled tiles: seed-000 MAP@10, mAP@10, P@k,
    majority vote@5, per class and averaged over classes. With --weights, the tiles the
    weights were trained on are left out. With --slides: leave-one-case-out slide
    retrieval, Acc@1/3/5, MV@1/3/5, mAP@5 and macro-F1."""
    from cbir.cli.render import show_eval, show_slide_eval
    from cbir.errors import CbirError
    from cbir.eval import evaluate_tiles

    if (tiles is None) == (slides is None):
        raise CbirError("evaluate: give one of --tiles DIR or --slides DIR")
    if slides is not None:
        from cbir.eval.slides import evaluate_slides

        found = evaluate_slides(
            slides, labels, recipe, method=method, weights=weights, device=device
        )
        typer.echo(found.model_dump_json()) if json_out else show_slide_eval(found)
        return
    assert tiles is not None

    if bits_sweep:
        import json

        from cbir.eval.bits_sweep import bits_sweep as sweep
        from cbir.eval.bits_sweep import code_lengths

        result = sweep(tiles, code_lengths(bits_sweep), backbone, None, device)
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
        allow_untrained=untrained,
    )
    typer.echo(report.model_dump_json()) if json_out else show_eval(report)


app.add_typer(train_app, name="train")
app.command("serve")(serve_cmd)


@app.command("demo")
@cli_errors
def demo_cmd(
    workdir: Annotated[Path, typer.Option(help="Where the sample slide and index go.")] = Path(
        "cbir-demo"
    ),
    json_out: JsonOpt = False,
) -> None:
    """Index the embedded sample slide (scikit-image IHC) and search a rectangle of it."""
    from cbir.cli.progress import stderr_progress
    from cbir.cli.render import show_hits, show_report, stdout
    from cbir.demo import run_demo

    with stderr_progress() as progress:
        demo = run_demo(workdir, progress)
    if json_out:
        typer.echo(demo.model_dump_json())
    else:
        stdout.print(f"sample slide: {demo.slide}, recipe {demo.recipe}")
        show_report(demo.report)
        stdout.print(
            f"query: {demo.query}, a {demo.expected_w} x {demo.expected_h} rectangle of the "
            f"slide at x={demo.expected_x} y={demo.expected_y} (level-0 px), off the tile "
            f"grid, read at {demo.magnification:g}x"
        )
        show_hits(demo.result)
        verdict = "found at rank 1" if demo.found_at_rank_1 else "NOT found at rank 1"
        stdout.print(f"the rectangle's own place: {verdict} (IoU {demo.iou:.2f})")
    if not demo.found_at_rank_1:
        sys.exit(1)
