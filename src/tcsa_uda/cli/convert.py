"""``tcsa-uda convert mmwhs|mmwhs-sifa|abdomen|brats``: raw downloads -> dataset folders.

Each command parses its options, calls one converter of :mod:`tcsa_uda.data.convert` and prints
the summary (cases per domain and split, voxels per class, notes, verification result). The
dataset folder it writes is ready for ``tcsa-uda prepare``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tcsa_uda.cli.app import app
from tcsa_uda.data.convert.splits import DEFAULT_VAL_FRACTION
from tcsa_uda.data.convert.writer import ConversionResult
from tcsa_uda.outputs import OutputFolder

convert_app = typer.Typer(
    name="convert",
    help="Convert a public benchmark download into a dataset folder (dataset.json + NIfTI), with the literature split.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(convert_app, name="convert")

_OUT = typer.Option(
    ..., "--out", "-o", help="Output dataset folder (dataset.json, NIfTI volumes, split.json, summary.json)."
)
_VAL = typer.Option(
    DEFAULT_VAL_FRACTION,
    "--val-fraction",
    help="Share of each domain's training cases moved to 'val' when it has >= 10 (0 disables).",
)
_SEED = typer.Option(0, "--seed", help="Seed of the random split steps.")
_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")
_OVERWRITE = typer.Option(
    False, "--overwrite", help="Write into a non-empty --out folder that an earlier conversion did not write."
)


def _report(result: ConversionResult) -> None:
    typer.echo(result.format())


def _claim(out: Path, overwrite: bool) -> None:
    """--out must be absent, empty or an earlier conversion's folder (unless --overwrite)."""
    OutputFolder(out, "convert", overwrite=overwrite).claim_folder()


@convert_app.command("mmwhs")
def mmwhs_command(
    ct: Path = typer.Option(..., "--ct", help="Folder with the MM-WHS CT files ct_train_10XX_image/_label.nii.gz."),
    mr: Path = typer.Option(..., "--mr", help="Folder with the MM-WHS MR files mr_train_10XX_image/_label.nii.gz."),
    out: Path = _OUT,
    val_fraction: float = _VAL,
    seed: int = _SEED,
    crop_margin: float | None = typer.Option(
        None,
        "--crop-margin",
        help="Crop each volume to its labelled heart structures plus this margin in mm (the SIFA heart-centred crop); "
        "default: keep the whole field of view.",
    ),
    progress: bool = _PROGRESS,
    overwrite: bool = _OVERWRITE,
) -> None:
    """MM-WHS 2017 CT + MR NIfTI: codes 205/420/500/820 -> MYO/LAC/LVC/AA, SIFA test ids, RAS+ (coronal slices)."""
    from tcsa_uda.data.convert.mmwhs import convert_mmwhs

    _claim(out, overwrite)
    _report(
        convert_mmwhs(ct, mr, out, val_fraction=val_fraction, seed=seed, crop_margin_mm=crop_margin, progress=progress)
    )


@convert_app.command("mmwhs-sifa")
def mmwhs_sifa_command(
    root: Path = typer.Option(
        ...,
        "--root",
        help="Folder of the SIFA / PnP-AdaNet release (tfrecords, image_/gth_ test NIfTI) or of its MPSCL numpy copy "
        "(data_np with the datalists).",
    ),
    out: Path = _OUT,
    slice_values: str = typer.Option(
        "unit",
        "--slice-values",
        help="Intensities of .npy training slices: unit (MPSCL, already in [-1, 1]) or zscore (like the test volumes).",
    ),
    progress: bool = _PROGRESS,
    overwrite: bool = _OVERWRITE,
) -> None:
    """The SIFA/MPSCL MM-WHS release (z-scores; then prepare --axis coronal --normalization fixed)."""
    from tcsa_uda.data.convert.mmwhs_sifa import convert_mmwhs_sifa

    _claim(out, overwrite)
    _report(convert_mmwhs_sifa(root, out, slice_values=slice_values, progress=progress))


@convert_app.command("abdomen")
def abdomen_command(
    chaos: Path = typer.Option(
        ..., "--chaos", help="Folder of the CHAOS download (searched for <patient>/T2SPIR folders)."
    ),
    btcv: Path = typer.Option(..., "--btcv", help="Folder of the BTCV download (img00XX.nii.gz, label00XX.nii.gz)."),
    out: Path = _OUT,
    val_fraction: float = _VAL,
    seed: int = _SEED,
    progress: bool = _PROGRESS,
    overwrite: bool = _OVERWRITE,
) -> None:
    """CHAOS T2-SPIR MRI + BTCV CT: liver / right kidney / left kidney / spleen, literature test ids, axial."""
    from tcsa_uda.data.convert.abdomen import convert_abdomen

    _claim(out, overwrite)
    _report(convert_abdomen(chaos, btcv, out, val_fraction=val_fraction, seed=seed, progress=progress))


@convert_app.command("brats")
def brats_command(
    root: Path = typer.Option(
        ..., "--root", help="Folder of the BraTS download (<case>_flair, <case>_t2, <case>_seg NIfTI files)."
    ),
    out: Path = _OUT,
    split: Path | None = typer.Option(
        None, "--split", help="Reuse the split.json of an earlier conversion instead of drawing one."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the patient split (FLAIR / T2 halves, test and val draws)."),
    test_fraction: float = typer.Option(
        0.2, "--test-fraction", help="Share of each domain's patients used for testing."
    ),
    val_fraction: float = _VAL,
    progress: bool = _PROGRESS,
    overwrite: bool = _OVERWRITE,
) -> None:
    """BraTS: whole tumour, FLAIR and T2 domains over disjoint patients (seeded split written to split.json)."""
    from tcsa_uda.data.convert.brats import convert_brats

    _claim(out, overwrite)
    _report(
        convert_brats(
            root, out, split=split, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction, progress=progress
        )
    )
