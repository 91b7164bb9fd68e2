"""``tcsa-uda train CONFIG [key.sub=value ...] --out DIR [--resume | --overwrite]``.

Loads the typed :class:`~tcsa_uda.train_config.TrainConfig` from YAML with overrides and
calls :func:`tcsa_uda.engine.trainer.train`. Works the same under ``torchrun``. A folder that
holds a run is refused unless ``--resume`` or ``--overwrite`` is given
(:mod:`tcsa_uda.engine.run_folder`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from tcsa_uda.cli.app import app
from tcsa_uda.config import load_config
from tcsa_uda.paths import results_root
from tcsa_uda.train_config import TrainConfig


@app.command("train", context_settings={"allow_extra_args": False})
def train_command(
    config: Path = typer.Argument(..., help="YAML training config (see configs/)."),
    overrides: list[str] = typer.Argument(
        None, help="Overrides of the form key.sub=value, e.g. stages.0.iterations=100."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (default: $TCSA_UDA_RESULTS/<config name>)."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the run in --out from its last checkpoint; the config may differ only in iteration counts "
        "and logging keys (docs/training.md).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the run in --out (its files are removed once every check passed)."
    ),
) -> None:
    """Train one or more stages (e.g. TCSA stage 1 + stage 2) as the config describes."""
    from tcsa_uda.engine.trainer import train

    cfg = load_config(TrainConfig, config, overrides or [])
    run_dir = out if out is not None else results_root() / config.stem
    result = train(cfg, run_dir, resume=resume, overwrite=overwrite)
    typer.echo(f"final checkpoint: {result.final_checkpoint}")
