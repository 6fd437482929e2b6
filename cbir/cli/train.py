"""`cbir train <method>`: one command per method of cbir.nn.train, built from the method's
declaration (cbir.nn.train.method.TrainMethod) when the command is used: the methods are
listed by module name, and `cbir --help` imports none of them (nor pydantic). A command's
options are the described fields of its method's config model, with their names,
defaults, bounds and help; the options every method has (what it trains on, --out,
--device, --json) are added here. A command runs its method under a progress bar, prints
the training verdict on stderr and the report as JSON or the method's summary line."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

import typer
from typer.core import TyperGroup

from cbir.cli.errors import cli_errors
from cbir.cli.options import BaseMagOpt, DeviceOpt, JsonOpt, LabelsOpt, OutWeightsOpt
from cbir.cli.paths import expand_slides

if TYPE_CHECKING:
    import click  # typer >= 0.2x vendors click: not installed on its own
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

    from cbir.nn.train.method import TrainMethod


class _Methods(TyperGroup):
    """The `cbir train` group: its commands are the methods, each built on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from cbir.nn.train.method import method_names

        return method_names()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return method_command(name)


def method_command(name: str) -> click.Command | None:
    """The click command of `cbir train <name>` (None: no such method)."""
    from cbir.nn.train.method import load_method, method_names

    if name not in method_names():
        return None
    return _command(load_method(name))


train_app = typer.Typer(
    cls=_Methods,
    no_args_is_help=True,
    help="Train the networks of learned recipes.",
    rich_markup_mode=None,  # as cbir's: click's help, whole option names at any width
)

KW = inspect.Parameter.KEYWORD_ONLY

_TILES_HELP = {
    "labelled-tiles": "Labelled tiles: class sub-folders, or a labels.csv with columns path,label.",
    "tiles": "Tiles: any folder of images (labels, if present, only stratify the split).",
    "images": "Labelled tiles or images: class sub-folders, or a labels.csv (path,label).",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option(name: str, field: FieldInfo) -> inspect.Parameter:
    """The command-line option of a described config field."""
    import annotated_types

    assert field.description is not None
    kwargs: dict[str, Any] = {"help": field.description}
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Ge):
            kwargs["min"] = bound.ge
        elif isinstance(bound, annotated_types.Le):
            kwargs["max"] = bound.le
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    kind, default, decls = field.annotation, field.default, [_flag(name)]
    if extra.get("path"):
        folder = extra["path"] == "folder"
        kind = Path | None if default is None else Path
        kwargs.update(exists=True, dir_okay=folder, file_okay=not folder)
    elif kind is bool:
        decls = [f"{_flag(name)}/--no-{name.replace('_', '-')}"]
    elif get_origin(kind) is Literal:
        kind = str
        kwargs["help"] += f" ({' or '.join(get_args(field.annotation))})"
    elif get_origin(kind) is tuple:
        kind, default = str, ",".join(f"{v:g}" for v in default)
    option = typer.Option(*decls, **kwargs)
    return inspect.Parameter(name, KW, default=default, annotation=Annotated[kind, option])


def _input_options(method: TrainMethod) -> list[inspect.Parameter]:
    if method.inputs == "slides":
        slides = typer.Option(
            "--slides",
            exists=True,  # checked before torch is imported
            help="Slides or folders of them (repeat the option for several).",
        )
        return [
            inspect.Parameter("slides", KW, annotation=Annotated[list[Path], slides]),
            inspect.Parameter("base_magnification", KW, default=None, annotation=BaseMagOpt),
        ]
    tiles = typer.Option(
        "--tiles",
        exists=True,  # checked before any network code is imported
        file_okay=False,
        help=_TILES_HELP[method.inputs],
    )
    return [
        inspect.Parameter("tiles", KW, annotation=Annotated[Path, tiles]),
        inspect.Parameter("labels", KW, default=None, annotation=LabelsOpt),
    ]


def _config(model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """The config from option values; one line naming the option when one is invalid."""
    from pydantic import ValidationError

    from cbir.errors import CbirError, validation_line

    values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise CbirError(validation_line(exc, {k: _flag(k) for k in values})) from None


def _command(method: TrainMethod) -> click.Command:
    fields = {n: f for n, f in method.config.model_fields.items() if f.description}

    def command(**given: Any) -> None:
        from cbir.cli.progress import stderr_progress
        from cbir.cli.render import show_verdict, stdout
        from cbir.nn.train.method import TrainInputs
        from cbir.nn.weights import check_weights_target

        json_out, device, out = given.pop("json_out"), given.pop("device"), given.pop("out")
        check_weights_target(Path(out))
        inputs = TrainInputs(
            tiles=given.pop("tiles", None),
            labels=given.pop("labels", None),
            slides=expand_slides(given.pop("slides")) if "slides" in given else None,
            base_magnification=given.pop("base_magnification", None),
        )
        cfg = _config(method.config, given)
        with stderr_progress() as progress:
            report = method.run(inputs, out, cfg, device, progress)
        show_verdict(report.verdict)
        if json_out:
            typer.echo(report.model_dump_json())
        else:
            stdout.print(method.summary(report))

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            *_input_options(method),
            inspect.Parameter("out", KW, annotation=OutWeightsOpt),
            *(_option(n, f) for n, f in fields.items()),
            inspect.Parameter("device", KW, default="auto", annotation=DeviceOpt),
            inspect.Parameter("json_out", KW, default=False, annotation=JsonOpt),
        ]
    )
    command.__doc__ = method.help
    command.__name__ = f"train_{method.name}"
    one = typer.Typer(add_completion=False, rich_markup_mode=None)
    one.command(method.name)(cli_errors(command))
    return typer.main.get_command(one)
