"""``tcsa-uda demo [--out DIR]``: the main job on the built-in phantom benchmark."""

from __future__ import annotations

from pathlib import Path

import typer

from tcsa_uda.cli.app import app


@app.command("demo")
def demo_command(
    out: Path = typer.Option(
        Path("tcsa_uda_demo"), "--out", "-o", help="Output folder (an earlier demo's is reused; else it must be empty)."
    ),
    direction: str = typer.Option("MR2CT", "--direction", help="MR2CT or CT2MR."),
    seed: int = typer.Option(0, "--seed", help="Seed of the phantom and of training."),
    cases: int = typer.Option(10, "--cases", help="Phantom cases per domain."),
    size: int = typer.Option(96, "--size", help="Slice size for prepare."),
    iterations_scale: float = typer.Option(
        1.0, "--iterations-scale", help="Scale every stage's iterations (e.g. 0.05 for a smoke run)."
    ),
    override: list[str] = typer.Option(
        [], "--set", help="Config override key.sub=value applied to both trainings (repeatable)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Write into a non-empty folder that an earlier demo did not write."
    ),
) -> None:
    """phantom -> prepare -> train source-only and TCSA-UDA -> evaluate -> results.md/json + figure."""
    from tcsa_uda.demo import DemoSettings, results_markdown, run_demo

    res = run_demo(
        DemoSettings(
            out=out,
            direction=direction,
            seed=seed,
            cases=cases,
            size=size,
            iterations_scale=iterations_scale,
            overrides=tuple(override),
            progress=progress,
            overwrite=overwrite,
        )
    )
    typer.echo(results_markdown(res))
    typer.echo(f"written: {out / 'results.md'}, {out / 'results.json'}, {out / 'figure.png'}")
