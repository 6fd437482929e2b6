"""`cbir compact`, `cbir upgrade`, `cbir rebuild`, `cbir verify`: whole-bundle storage
commands."""

from __future__ import annotations

from typing import Annotated

import typer

from cbir.cli.errors import cli_errors
from cbir.cli.options import IndexArg, JsonOpt
from cbir.cli.words import plural


def register_storage(app: typer.Typer) -> None:
    @app.command("compact")
    @cli_errors
    def compact_cmd(index: IndexArg, json_out: JsonOpt = False) -> None:
        """Merge a bundle's segments into one, dropping removed tiles."""
        from cbir.storage.compact import compact

        r = compact(index)
        line = (
            f"{index}: {plural(r.segments_before, 'segment')} -> {r.segments_after}, "
            f"{plural(r.tiles, 'tile')} "
            f"({r.tombstoned_tiles_dropped} removed tiles dropped), {r.index_kind} index, "
            f"{r.bytes_written / 1e6:.1f} MB written in {r.seconds:.2f} s"
        )
        typer.echo(r.model_dump_json() if json_out else line)

    @app.command("upgrade")
    @cli_errors
    def upgrade_cmd(index: IndexArg, json_out: JsonOpt = False) -> None:
        """Convert a bundle of an older format (2) to this cbir's, in place."""
        from cbir.upgrade import upgrade

        r = upgrade(index)
        line = (
            f"{index}: format {r.from_format} -> {r.to_format}, {plural(r.slides, 'slide')}, "
            f"{plural(r.tiles, 'tile')} in {r.seconds:.2f} s"
            if r.upgraded
            else f"{index}: already bundle format {r.to_format}; nothing to do"
        )
        typer.echo(r.model_dump_json() if json_out else line)

    @app.command("rebuild")
    @cli_errors
    def rebuild_cmd(
        index: IndexArg,
        json_out: JsonOpt = False,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda, mps.")] = "auto",
        skip_errors: Annotated[
            bool, typer.Option("--skip-errors", help="Leave out slides that cannot be read.")
        ] = False,
    ) -> None:
        """Index every slide of a bundle again, refitting its collection state."""
        from cbir.cli.render import show_report
        from cbir.upgrade import rebuild

        report = rebuild(index, device=device, skip_errors=skip_errors)
        typer.echo(report.model_dump_json()) if json_out else show_report(report)  # type: ignore[attr-defined]

    @app.command("verify")
    @cli_errors
    def verify_cmd(index: IndexArg, json_out: JsonOpt = False) -> None:
        """Check every file of a bundle against its manifest's checksums and counts; exit
        1 with one line per damaged file."""
        from cbir.storage.verify import verify_bundle

        report = verify_bundle(index)
        if json_out:
            typer.echo(report.model_dump_json())
        else:
            for d in report.damaged:
                typer.echo(f"cbir: damaged: {index}/{d.path}: {d.problem}", err=True)
            if report.ok:
                left = (
                    f"; {len(report.unreferenced)} directories no manifest names "
                    f"({', '.join(report.unreferenced)}: the next writer sweeps them)"
                    if report.unreferenced
                    else ""
                )
                typer.echo(
                    f"{index}: ok, generation {report.generation}, {report.segments} "
                    f"segment{'s' * (report.segments != 1)}, {report.files} "
                    f"file{'s' * (report.files != 1)} ({report.bytes / 1e6:.1f} MB) match "
                    f"their checksums{left}"
                )
        if not report.ok:
            raise typer.Exit(1)
