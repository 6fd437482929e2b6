"""The `cbir` command line (typer)."""
