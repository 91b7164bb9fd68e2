"""``tcsa-uda evaluate RUN|CHECKPOINT --dataset DIR --out DIR`` (or ``--pred DIR``).

Parses the options and calls :func:`tcsa_uda.evaluation.evaluate.run_evaluation`; prints the
markdown summary and the files written. Conventions: docs/evaluation.md.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tcsa_uda.cli.app import app


@app.command("evaluate")
def evaluate_command(
    run: Path | None = typer.Argument(
        None, metavar="[RUN|CHECKPOINT]", help="Run folder (uses its final.pt) or checkpoint file; omit with --pred."
    ),
    dataset: Path = typer.Option(
        ..., "--dataset", "-d", help="Prepared folder (index.json) or raw dataset folder (dataset.json)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: metrics.csv/json, summary.md/tex."),
    domain: str | None = typer.Option(None, "--domain", help="Domain to evaluate (default: the checkpoint's target)."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: train, val or test."),
    metrics: str = typer.Option("all", "--metrics", help="all (Dice, ASSD both variants, HD95) or dice."),
    units: str | None = typer.Option(None, "--units", help="Distance units: mm (default), vox or both."),
    assd_variant: str | None = typer.Option(
        None, "--assd-variant", help="ASSD shown in the tables: pooled (default) or mean_of_means."
    ),
    empty_policy: str | None = typer.Option(
        None,
        "--empty-policy",
        help="Missing structure: nan (default), sifa_mpscl (ASSD 1), mpscl (ASSD 1, both empty: Dice 0) or adr "
        "(ASSD 100).",
    ),
    parity: str | None = typer.Option(
        None,
        "--parity",
        help="mpscl: the released MPSCL/TCSA-UDA evaluation exactly (voxels, mean_of_means, missing -> ASSD 1, both "
        "empty -> Dice 0, last D mod 32 slices background); sifa: the SIFA-era metric conventions on whole volumes.",
    ),
    tail_policy: str | None = typer.Option(
        None,
        "--tail-policy",
        help="none (default: every slice predicted) or released_batch32 (last D mod 32 slices left background).",
    ),
    hd95_variant: str | None = typer.Option(
        None,
        "--hd95-variant",
        help="HD95: max_directed (default, MONAI; column hd95_<unit>) or pooled (medpy; column hd95_<unit>_pooled).",
    ),
    pred: Path | None = typer.Option(None, "--pred", help="Score label maps on disk (<case>.nii.gz, any nesting)."),
    allow_missing: bool = typer.Option(
        False, "--allow-missing", help="With --pred: score cases without a file as empty predictions (listed)."
    ),
    resample_to_gt: bool = typer.Option(
        False,
        "--resample-to-gt",
        help="With --pred: resample label maps on another grid onto the ground truth's (nearest neighbour in world "
        "space) instead of failing; recorded in metrics.json.",
    ),
    flip: bool = typer.Option(False, "--flip", help="Horizontal-flip test-time augmentation."),
    batch_size: str = typer.Option(
        "auto",
        "--batch-size",
        help="Slices per forward pass (no slice is dropped); auto: from free GPU memory, 16 on CPU.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option(
        "auto", "--precision", help="Inference autocast: auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16."
    ),
    save_predictions: bool = typer.Option(
        False, "--save-predictions", help="Also write the label maps to OUT/predictions/<case>.nii.gz."
    ),
    label: str | None = typer.Option(None, "--label", help="Row name in the tables (default: the method)."),
    model_selection: str | None = typer.Option(
        None,
        "--model-selection",
        help="How the model was chosen, printed in the tables (default: from the checkpoint).",
    ),
    class_order: str | None = typer.Option(
        None, "--class-order", help="Comma-separated class names in table column order (default: id order)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar over the volumes."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Write into OUT even over files evaluate did not create, or into a dataset folder."
    ),
) -> None:
    """Per-volume Dice/ASSD/HD95 of a model (or of label maps on disk) on one domain and split."""
    from tcsa_uda.engine.device import resolve_device
    from tcsa_uda.evaluation.batching import parse_batch_size
    from tcsa_uda.evaluation.evaluate import run_evaluation
    from tcsa_uda.evaluation.settings import resolve_settings

    settings = resolve_settings(
        metrics, units, assd_variant, empty_policy, parity, tail_policy=tail_policy, hd95_variant=hd95_variant
    )
    order = [c.strip() for c in class_order.split(",")] if class_order else None
    result = run_evaluation(
        dataset,
        out,
        checkpoint=run,
        pred_dir=pred,
        domain=domain,
        split=split,
        settings=settings,
        flip=flip,
        batch_size=parse_batch_size(batch_size),
        device=resolve_device(device) if pred is None else "cpu",
        allow_missing=allow_missing,
        save_predictions=save_predictions,
        label=label,
        model_selection=model_selection,
        class_order=order,
        progress=progress,
        precision=precision,
        resample_to_gt=resample_to_gt,
        overwrite=overwrite,
    )
    typer.echo(result.markdown)
    typer.echo("written: " + ", ".join(str(p) for p in result.files.values()))
