"""`cbir label`: set, unset or show the labels of a bundle's slide."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cbir.cli.errors import cli_errors
from cbir.cli.options import IndexArg, JsonOpt

if TYPE_CHECKING:
    from cbir.api import IndexInfo


def label_cmd(
    index: IndexArg,
    slide: Annotated[
        str, typer.Argument(help="The slide: its path or file name.", show_default=False)
    ],
    labels: Annotated[
        list[str] | None,
        typer.Argument(
            help="key=value pairs, e.g. diagnosis=LUAD case=TCGA-05-4244 (none: show them).",
            show_default=False,
        ),
    ] = None,
    unset: Annotated[
        list[str] | None,
        typer.Option("--unset", metavar="KEY", help="Remove this label (repeatable)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Set, unset or show the labels of a slide (e.g. diagnosis=LUAD).

    Labels are stored in the bundle, written atomically like add and remove. Hits carry
    their slide's labels; `cbir search --vote KEY` takes the majority vote of the top k
    hits' values."""
    import json

    from cbir.storage.labels import LabelError, label_slide, parse_labels
    from cbir.storage.slide_names import find_slide

    new = parse_labels(labels or [])
    if new or unset:
        record = label_slide(index, slide, new, unset or [])
    else:
        from cbir.storage.bundle import Bundle

        with Bundle.open(index) as bundle:
            record = find_slide(bundle.meta.slide_list(), slide, index, LabelError)
    if json_out:
        out = {"slide": record.info.name, "path": record.info.path, "labels": record.labels}
        typer.echo(json.dumps(out))
    else:
        typer.echo(f"{record.info.name}: {_text(record.labels)}")


def _text(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "no labels"


def show_labels(info: IndexInfo) -> None:
    """One line per labelled slide, under `cbir info`'s table."""
    from cbir.cli.render import plain, stdout

    for s in info.slides:
        if s.labels:
            plain(stdout, f"labels of {s.name}: {_text(s.labels)}")


def register(app: typer.Typer) -> None:
    """Add `cbir label` to the CLI."""
    app.command("label")(cli_errors(label_cmd))
