"""``tcsa-uda predict --checkpoint CKPT --input FILE|DIR --out DIR``.

Parses the options and calls :func:`tcsa_uda.evaluation.predict.predict_paths`; prints one line
per written label map, and one line on stderr per input that failed (a folder of inputs goes on
past a bad file); exits with status 1 when an input failed (listed in ``predict.json``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from tcsa_uda.cli.app import app


@app.command("predict")
def predict_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Checkpoint file or run folder (its final.pt)."),
    input_path: Path = typer.Option(
        ..., "--input", "-i", help="NIfTI file, or folder of NIfTI files and/or DICOM series (searched recursively)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for <name>.nii.gz label maps."),
    domain: str | None = typer.Option(
        None, "--domain", help="Domain (modality) of the inputs, one of the checkpoint's (default: its target)."
    ),
    probabilities: bool = typer.Option(
        False, "--probabilities", help="Also write float32 (X, Y, Z, C) probability maps."
    ),
    batch_size: str = typer.Option(
        "auto", "--batch-size", help="Slices per forward pass; auto: from free GPU memory, 16 on CPU."
    ),
    precision: str = typer.Option(
        "auto", "--precision", help="Inference autocast: auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16."
    ),
    flip: bool = typer.Option(False, "--flip", help="Horizontal-flip test-time augmentation."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    channel: int | None = typer.Option(None, "--channel", help="Volume of a 4D NIfTI input to use (0-based)."),
    classes: str | None = typer.Option(
        None,
        "--classes",
        help="Comma-separated class names you expect (background first); checked against the checkpoint.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar over the volumes."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace files in OUT that predict did not write (never inputs or a dataset's labels).",
    ),
) -> None:
    """Segment NIfTI volumes or DICOM series; label maps keep the input's grid and affine."""
    from tcsa_uda.engine.device import resolve_device
    from tcsa_uda.evaluation.batching import parse_batch_size
    from tcsa_uda.evaluation.predict import predict_paths

    expected = [c.strip() for c in classes.split(",")] if classes else None
    records = predict_paths(
        checkpoint,
        input_path,
        out,
        domain=domain,
        probabilities=probabilities,
        batch_size=parse_batch_size(batch_size),
        flip=flip,
        device=resolve_device(device),
        channel=channel,
        classes=expected,
        progress=progress,
        precision=precision,
        overwrite=overwrite,
    )
    for r in records:
        if r.ok:
            extra = f" (+ {r.probabilities.name})" if r.probabilities is not None else ""
            typer.echo(f"{r.input} -> {r.labels}{extra}")
        else:
            typer.echo(f"failed: {r.error}", err=True)
    failed = sum(not r.ok for r in records)
    if failed:
        typer.echo(f"error: {failed} of {len(records)} input(s) failed; see {out / 'predict.json'}.", err=True)
        raise typer.Exit(code=1)
