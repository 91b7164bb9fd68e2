"""The typer application that every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="tcsa-uda",
    help="Cross-modality unsupervised domain adaptation for medical image segmentation (TCSA-UDA).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
