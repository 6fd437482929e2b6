"""`cbir backbones` and `cbir recipes`: what can describe tiles, and how bundles are made."""

from __future__ import annotations

import typer

from cbir.cli.errors import cli_errors
from cbir.cli.options import DEFAULT_RECIPE, JsonOpt


def register(app: typer.Typer) -> None:
    """Add the listing commands to `app`."""

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
                    "pretrained": "packaged"
                    if packaged
                    else ("needed" if e.requires_weights else "-"),
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

        from cbir.pipeline import weights_needed
        from cbir.recipes import list_recipes, load_recipe

        recipes = [load_recipe(n) for n in list_recipes()]
        rows = [
            {
                **r.model_dump(mode="json"),
                "default": r.name == DEFAULT_RECIPE,
                "weights_from": weights_needed(r),
            }
            for r in recipes
        ]
        if json_out:
            typer.echo(json.dumps(rows))
            return
        for row in rows:
            marks = (["default"] if row["default"] else []) + (
                [f"needs --weights: {row['weights_from']}"] if row["weights_from"] else []
            )
            if row["descriptor"]["params"].get("precision") == "int8":
                marks.append("needs pip install 'cbir[fast]'")
            tag = f" [{'; '.join(marks)}]" if marks else ""
            typer.echo(f"{row['name']}{tag}: {row['description']}")
