"""``tcsa-uda phantom``: write the built-in cross-modality phantom benchmark (docs/phantom.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from tcsa_uda.cli.app import app
from tcsa_uda.data.phantom import DEFAULT_CASES, DEFAULT_SHAPE, generate_phantom


@app.command("phantom")
def phantom(
    out: Path = typer.Option(..., "--out", help="Dataset folder to create (must be empty or absent)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives identical arrays."),
    cases: int = typer.Option(DEFAULT_CASES, "--cases", help="Cases per domain (CT and MR)."),
    shape: tuple[int, int, int] = typer.Option(
        DEFAULT_SHAPE, "--shape", help="Volume size D H W: D axial slices of H x W pixels (each >= 16)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty folder."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Generate the cardiac CT/MR phantom benchmark (unpaired domains, MM-WHS classes)."""
    spec = generate_phantom(out, seed=seed, cases=cases, shape=shape, overwrite=overwrite, progress=not quiet)
    counts = ", ".join(
        f"{name}: " + " / ".join(f"{len(dom.select(split))} {split}" for split in ("train", "val", "test"))
        for name, dom in spec.domains.items()
    )
    typer.echo(f"wrote {spec.root / 'dataset.json'} ({counts})")
