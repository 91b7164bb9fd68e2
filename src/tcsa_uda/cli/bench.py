"""``tcsa-uda bench SUITE.yaml --out DIR [--jobs N] [--threads T] [--dry-run] [--report-only] [--results MD]``.

Loads the suite (:mod:`tcsa_uda.bench.suite`), runs every unfinished cell as subprocesses of
``tcsa-uda train`` and ``tcsa-uda evaluate`` (:mod:`tcsa_uda.bench.runner`) and writes the
report (:mod:`tcsa_uda.bench.report`). Exits with status 1 and lists the failed cells when any
cell failed; the other cells and the report are still complete. Conventions: docs/bench.md.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tcsa_uda.cli.app import app

if TYPE_CHECKING:
    from tcsa_uda.bench.suite import Suite


@app.command("bench")
def bench_command(
    suite: Path = typer.Argument(..., help="Suite YAML (see configs/bench/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Bench folder: data/, cells/, bench.csv/md/tex/png."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Cells run side by side."),
    threads: int = typer.Option(1, "--threads", help="Torch CPU threads per cell (0: torch's default)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells, their state and commands; run nothing."),
    report_only: bool = typer.Option(False, "--report-only", help="Only rewrite the report from the complete cells."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar over the cells."),
    results: Path | None = typer.Option(
        None, "--results", help="Also write a results document (markdown + figures next to it), e.g. out/results.md."
    ),
) -> None:
    """Run a benchmark suite (entries x datasets x directions x seeds) and write its tables and figure."""
    from tcsa_uda.bench.report import write_report
    from tcsa_uda.bench.runner import BenchOptions, dataset_paths, plan, run_bench
    from tcsa_uda.bench.suite import load_suite

    spec = load_suite(suite)
    if dry_run:
        planned = plan(spec, out.resolve(), dataset_paths(spec, out.resolve()), sys.executable, threads)
        counts: dict[str, int] = {}
        for pc in planned:
            counts[pc.state] = counts.get(pc.state, 0) + 1
            extra = f" ({pc.reason})" if pc.reason else ""
            typer.echo(f"{pc.state:9s} {pc.cell.name}{extra}")
        typer.echo("cells: " + ", ".join(f"{n} {state}" for state, n in counts.items()) + f" of {len(planned)}")
        todo = [pc for pc in planned if pc.state in ("new", "resume", "evaluate")]
        if todo:
            first = todo[0]
            typer.echo(f"first cell to run ({first.cell.name}):")
            if first.state != "evaluate":
                typer.echo("  " + shlex.join(first.train))
            typer.echo("  " + shlex.join(first.evaluate))
        return
    command = shlex.join(["tcsa-uda", "bench", str(suite), "--out", str(out), "--jobs", str(jobs)])
    if results is not None:
        command += " " + shlex.join(["--results", str(results)])
    if report_only:
        files = write_report(spec, out)
        typer.echo("written: " + ", ".join(str(p) for p in files.values()))
        _write_results(spec, out, results, command)
        return
    result = run_bench(spec, BenchOptions(out=out, jobs=jobs, threads=threads, progress=progress), write_report)
    if result.files:
        typer.echo("written: " + ", ".join(str(p) for p in result.files.values()))
        _write_results(spec, out, results, command)
    if result.failures:
        typer.echo(f"{len(result.failures)} cell(s) failed:", err=True)
        for o in result.failures:
            where = f" (log: {o.log})" if o.log is not None else ""
            typer.echo(f"  {o.cell.name}: {o.message}{where}", err=True)
        raise typer.Exit(1)


def _write_results(spec: Suite, out: Path, page: Path | None, command: str) -> None:
    """The results document (:mod:`tcsa_uda.bench.results`), when ``--results`` was given."""
    from tcsa_uda.bench.results import write_results

    if page is not None:
        files = write_results(spec, out, page, command)
        typer.echo("results: " + ", ".join(str(p) for p in files.values()))
