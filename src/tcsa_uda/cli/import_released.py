"""``tcsa-uda import-released CKPT --direction MR2CT|CT2MR --out model.pt``.

Parses the options and calls :func:`tcsa_uda.evaluation.released.import_released`; prints what was
mapped, the ignored unused modules and the recorded test-time preprocessing.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tcsa_uda.cli.app import app


@app.command("import-released")
def import_released_command(
    checkpoint: Path = typer.Argument(..., help="The authors' released checkpoint, e.g. ours_MR2CT_best.pth."),
    direction: str = typer.Option(..., "--direction", help="Adaptation direction of the checkpoint: MR2CT or CT2MR."),
    out: Path = typer.Option(..., "--out", "-o", help="tcsa-uda checkpoint to write (evaluate/predict read it)."),
    classes: str | None = typer.Option(
        None,
        "--classes",
        help="Comma-separated class names in label order, background first (default: the release's MM-WHS "
        "classes: background, myocardium, left atrium blood cavity, left ventricle blood cavity, ascending aorta).",
    ),
    size: int = typer.Option(256, "--size", help="Slice side evaluate/predict resize to (the release: 256)."),
) -> None:
    """Import an authors' released TCSA-UDA checkpoint (read with weights_only=True) as a tcsa-uda checkpoint."""
    from tcsa_uda.evaluation.released import UNUSED_MODULES, import_released, release_preprocessing

    names = [c.strip() for c in classes.split(",")] if classes else None
    summary = import_released(checkpoint, direction, out, classes=names, size=size)
    prep = release_preprocessing(size)
    typer.echo(f"read {checkpoint} ({summary.unwrapped}; sha256 {summary.sha256[:16]}...)")
    typer.echo(
        f"mapped {summary.mapped} keys onto deeplabv2_r101 (released variant); text embeddings: organ_embedding "
        f"row 0 -> MR, row 1 -> CT; source {summary.source}, target {summary.target}"
    )
    typer.echo(f"ignored {len(summary.ignored)} keys of the unused modules {', '.join(UNUSED_MODULES)}:")
    for key in summary.ignored:
        typer.echo(f"  {key}")
    ranges = ", ".join(f"{d} {lo:g}/{hi:g}" for d, (lo, hi) in prep["release"]["ranges"].items())
    typer.echo(
        f"recorded: classes {summary.class_names}; preprocessing: fixed normalisation ({ranges}), "
        f"{size}x{size} {prep['prepare']['axis']} slices, input encoding caffe_bgr; text row of the evaluated "
        f"domain (the release: the target)"
    )
    typer.echo(f"wrote {summary.out}")
