"""``tcsa-uda prepare DATASET --out DIR``: volumes -> normalised 2D training slices.

Parses the options and calls :func:`tcsa_uda.data.prepare.prepare_dataset`; prints one line per
domain and split with the number of cases and slices.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from tcsa_uda.cli.app import app
from tcsa_uda.data.prepare import prepare_dataset
from tcsa_uda.data.prepared import INDEX_FILE, PreparedIndex
from tcsa_uda.errors import ConfigError


@app.command("prepare")
def prepare_command(
    dataset: Path = typer.Argument(..., help="Dataset folder holding dataset.json."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the slices and index.json."),
    axis: str = typer.Option(
        "axial", "--axis", help="Slicing axis: axial, coronal, sagittal (from each affine) or an array axis 0, 1, 2."
    ),
    size: int = typer.Option(256, "--size", help="Side of the square output slices in pixels."),
    clip_percentiles: tuple[float, float] = typer.Option(
        (0.5, 99.5), "--clip-percentiles", help="LOW HIGH intensity percentiles each volume is clipped to."
    ),
    normalization: str = typer.Option(
        "percentile_zscore",
        "--normalization",
        help="Intensity map to [-1, 1]: percentile_zscore (per volume), fixed (per-domain LO..HI -> -1..1, no "
        "clipping; for data already z-scored like the SIFA release) or none (data already in [-1, 1]).",
    ),
    fixed_range: list[str] | None = typer.Option(
        None,
        "--fixed-range",
        help="With --normalization fixed: DOMAIN=LO,HI (repeatable); overrides --fixed-preset and dataset.json.",
    ),
    fixed_preset: str | None = typer.Option(
        None, "--fixed-preset", help="With --normalization fixed: sifa = MR -1.8,4.4 and CT -2.8,3.2."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar over the cases."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Write into a non-empty folder that is not a previous prepare of this dataset."
    ),
) -> None:
    """Normalise every volume and cut it into square 2D slices (reuses what is already prepared).

    Every case passes the checks of `tcsa-uda verify` first. --out must be empty, absent or a
    previous prepare of the same dataset unless --overwrite is given.
    """
    index = prepare_dataset(
        dataset,
        out,
        axis=axis,
        size=size,
        clip_percentiles=clip_percentiles,
        progress=progress,
        normalization=normalization,
        fixed_ranges=parse_fixed_ranges(fixed_range or []),
        fixed_preset=fixed_preset,
        overwrite=overwrite,
    )
    typer.echo(summary(index))


def parse_fixed_ranges(items: list[str]) -> dict[str, tuple[float, float]]:
    """``["MR=-1.8,4.4", ...]`` -> ``{"MR": (-1.8, 4.4)}``.

    Raises:
        ConfigError: an item not of the form DOMAIN=LO,HI, or a domain given twice.
    """
    out: dict[str, tuple[float, float]] = {}
    for item in items:
        domain, sep, values = item.partition("=")
        parts = values.split(",")
        try:
            if not sep or not domain.strip() or len(parts) != 2:
                raise ValueError(item)
            pair = (float(parts[0]), float(parts[1]))
        except ValueError as exc:
            raise ConfigError(f"--fixed-range: expected DOMAIN=LO,HI (e.g. MR=-1.8,4.4), found {item!r}.") from exc
        if domain.strip() in out:
            raise ConfigError(f"--fixed-range: domain {domain.strip()!r} is given twice.")
        out[domain.strip()] = pair
    return out


def summary(index: PreparedIndex) -> str:
    """One line per domain and split: cases (labelled) and slices."""
    lines = [f"{index.root / INDEX_FILE}: {len(index.all_cases)} case(s), {index.size}x{index.size} slices"]
    for domain in index.domains:
        cases = index.cases(domain)
        splits = Counter(c.split for c in cases)
        for split in sorted(splits):
            sel = [c for c in cases if c.split == split]
            labelled = sum(c.labelled for c in sel)
            slices = sum(c.n_slices for c in sel)
            lines.append(
                f"  {domain} ({index.modalities[domain]}) {split}: {len(sel)} case(s), {labelled} labelled, {slices} "
                "slices"
            )
    return "\n".join(lines)
