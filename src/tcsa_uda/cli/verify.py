"""``tcsa-uda verify DATASET``: check a dataset folder before any training.

Prints every problem (or a summary of the dataset when there is none) and the warnings; exits
with status 1 when problems were found, 0 otherwise.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tcsa_uda.cli.app import app
from tcsa_uda.data.verify import verify_dataset


@app.command("verify")
def verify_command(
    dataset: Path = typer.Argument(
        ..., metavar="DATASET", help="Dataset folder holding dataset.json (or the path of the file)."
    ),
    progress: bool = typer.Option(False, "--progress/--no-progress", help="Show a progress bar over the cases."),
) -> None:
    """Check dataset.json and every image and label file; list all problems found."""
    report = verify_dataset(dataset, progress=progress)
    typer.echo(report.format())
    if not report.ok:
        raise typer.Exit(code=1)
