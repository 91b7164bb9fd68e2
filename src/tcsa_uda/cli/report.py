"""``tcsa-uda report RUN``: report.md with the evaluation table and PNG figures of a run.

Parses the options and calls :func:`tcsa_uda.evaluation.report.build_report`; prints the files
written. What the report holds and how each figure is made: docs/evaluation.md (Reports).
"""

from __future__ import annotations

from pathlib import Path

import typer

from tcsa_uda.cli.app import app


@app.command("report")
def report_command(
    run: Path = typer.Argument(..., metavar="RUN", help="Run folder (final.pt and stage<k>_<method>/ folders)."),
    dataset: Path | None = typer.Option(
        None, "--dataset", "-d", help="Prepared folder (default: the checkpoint's config data.prepared)."
    ),
    domain: str | None = typer.Option(None, "--domain", help="Domain to show and evaluate (default: the target)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report folder (default: RUN/report)."),
    before: Path | None = typer.Option(
        None, "--before", help="'Before adaptation' run folder or checkpoint for the t-SNE (default: stage 1's)."
    ),
    slices: int = typer.Option(5, "--slices", help="Target test slices in the overlay and Grad-CAM figures."),
    tsne_slices: int = typer.Option(12, "--tsne-slices", help="Most test slices per domain for the t-SNE."),
    tsne_pixels: int = typer.Option(100, "--tsne-pixels", help="Most pixels per class per domain in the t-SNE."),
    feature: str = typer.Option("f_hi", "--feature", help="t-SNE features: f_hi (backbone layer4) or f_vis."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pixel sampling and of t-SNE."),
    batch_size: int = typer.Option(8, "--batch-size", help="Slices per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    progress: bool = typer.Option(False, "--progress/--no-progress", help="Show the evaluation's progress bar."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Write into OUT even over files report did not create there."
    ),
) -> None:
    """Evaluate a run on the target test split and write report.md with training curves, overlays,
    Grad-CAM maps and a t-SNE before and after adaptation."""
    from tcsa_uda.engine.device import resolve_device
    from tcsa_uda.evaluation.report import ReportOptions, build_report

    options = ReportOptions(
        n_slices=slices,
        tsne_slices=tsne_slices,
        tsne_per_class=tsne_pixels,
        feature=feature,
        seed=seed,
        batch_size=batch_size,
    )
    result = build_report(
        run, dataset=dataset, domain=domain, out=out, before=before, options=options,
        device=resolve_device(device), progress=progress, overwrite=overwrite,
    )  # fmt: skip
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"report: {result.path}")
    typer.echo("figures: " + ", ".join(str(p) for p in result.figures.values()))
