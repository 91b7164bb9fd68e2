"""The ``tcsa-uda`` command line: one sub-command per pipeline stage.

Each sub-command lives in its own module of this package, parses its arguments and calls one
Python function of the library. User-facing errors (:class:`tcsa_uda.errors.TcsaUdaError`) are
printed without a traceback and exit with status 2.
"""

from __future__ import annotations

import importlib
import sys

from tcsa_uda.cli.app import app
from tcsa_uda.errors import TcsaUdaError

# Modules that register sub-commands on ``app`` when imported (one per command or command group).
COMMAND_MODULES: tuple[str, ...] = (
    "phantom",
    "verify",
    "prepare",
    "embed_text",
    "train",
    "demo",
    "evaluate",
    "predict",
    "convert",
    "report",
    "bench",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"tcsa_uda.cli.{_name}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status.

    Click handles usage errors itself (usage text, status 2); a :class:`TcsaUdaError` is printed
    as one line without a traceback (status 2); a command's ``typer.Exit(code)`` is returned.
    """
    try:
        app(args=argv, prog_name="tcsa-uda")
    except TcsaUdaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
