"""Run every cell of a suite as subprocesses of the ``tcsa-uda`` command line, resumably.

Each cell (:class:`~tcsa_uda.bench.suite.Cell`) is two commands, run with the same Python as the
bench (and the same ``tcsa_uda`` package, prepended to ``PYTHONPATH``)::

    python -m tcsa_uda train CONFIG OVERRIDES data.prepared=P data.source=S data.target=T seed=K \
        num_threads=1 progress=false --out CELL/run [--resume]
    python -m tcsa_uda evaluate CELL/run --dataset P --domain T --split test --out CELL/eval --no-progress

so the bench depends only on the command line and on the files these commands write, not on
internal APIs. A cell folder ``OUT/cells/ENTRY/DATASET/DIRECTION/seedK/`` holds ``run/``,
``eval/``, ``train.log``, ``evaluate.log`` (every attempt appended) and ``cell.json`` (the cell's
spec, status, step, return code, last error line and wall time per step).

**Resuming.** Before running, each cell gets a state (:func:`cell_state`): ``done`` (the four
evaluation files exist: skipped), ``evaluate`` (``run/final.pt`` exists: evaluate only),
``resume`` (``run/config.yaml`` exists: ``train --resume`` continues from the last checkpoint),
``new``. A cell whose recorded spec (config file content, overrides, domains, seed, dataset,
evaluation options) differs from the suite's is ``stale``: it is reported as a failure and left
untouched, since mixing results of two specs would be wrong; delete its folder to rerun it.

**Failures.** A command that exits non-zero fails its cell: ``cell.json`` records the step and the
last line of its log, the log stays in the cell folder, and the bench goes on with the other
cells. :func:`run_bench` returns the failures; the CLI exits non-zero and lists them.

**Parallel cells.** ``jobs`` cells run side by side (threads that wait on subprocesses), each
with ``threads`` torch threads (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``num_threads``),
because two multi-threaded trainings on the same cores slow each other down many times over.

**Datasets.** A ``phantom`` dataset is generated (``tcsa-uda phantom``) and prepared
(``tcsa-uda prepare``) once into ``OUT/data/NAME/`` before the cells; ``OUT/data/NAME/data.json``
records its options, and a later bench with other options for the same name is an error.

**Progress.** A tqdm bar over the cells (finished ones counted from the start) with an estimate of
the time left: remaining cells x mean wall time of the cells finished in this call (before the
first one: of the complete cells' recorded times) / ``jobs``. Events go to ``OUT/bench.log``.
``OUT/.bench.lock`` holds the process id while a bench runs, so two benches never share a folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

import tcsa_uda
from tcsa_uda.atomic import atomic_write_json
from tcsa_uda.bench.suite import Cell, PhantomData, Suite, file_digest, resolve_prepared
from tcsa_uda.errors import TcsaUdaError

CELLS_DIR = "cells"
DATA_DIR = "data"
RUN_DIR = "run"
EVAL_DIR = "eval"
CELL_FILE = "cell.json"
TRAIN_LOG = "train.log"
EVAL_LOG = "evaluate.log"
BENCH_LOG = "bench.log"
DATA_FILE = "data.json"
LOCK_FILE = ".bench.lock"
BUILD_LOG = "build.log"
EVAL_OUTPUTS: tuple[str, ...] = ("metrics.csv", "metrics.json", "summary.md", "summary.tex")
"""What ``tcsa-uda evaluate`` writes; a cell is complete when all four exist."""
RUN_FINAL = "final.pt"
RUN_CONFIG = "config.yaml"
PREPARED_INDEX = "index.json"

CellState = Literal["done", "evaluate", "resume", "new", "stale"]
Status = Literal["done", "skipped", "failed"]


class BenchError(TcsaUdaError, RuntimeError):
    """The bench cannot go on (a dataset could not be built, an output folder is inconsistent)."""


@dataclass(frozen=True)
class BenchOptions:
    """Options of one bench invocation (the CLI's flags).

    Attributes:
        out: the bench output folder.
        jobs: cells run side by side.
        threads: torch CPU threads per cell (0 keeps torch's default and leaves the thread
            environment variables alone).
        progress: show a progress bar over the cells.
        python: the interpreter that runs ``-m tcsa_uda`` (default: this one).
    """

    out: Path
    jobs: int = 1
    threads: int = 1
    progress: bool = True
    python: str = sys.executable


@dataclass(frozen=True)
class PlannedCell:
    """A cell with its folder, state, spec and commands.

    Attributes:
        cell: the cell.
        dir: its folder.
        state: see :func:`cell_state`.
        spec: what identifies its results (recorded in ``cell.json``).
        train: the train command (``--resume`` included for state ``resume``).
        evaluate: the evaluate command.
        reason: for ``stale``, which parts of the spec changed.
    """

    cell: Cell
    dir: Path
    state: CellState
    spec: dict[str, Any]
    train: list[str]
    evaluate: list[str]
    reason: str = ""


@dataclass(frozen=True)
class CellOutcome:
    """What happened to one cell in this invocation.

    Attributes:
        cell: the cell.
        status: ``done`` (ran and finished), ``skipped`` (already complete) or ``failed``.
        wall_s: seconds spent on it in this invocation.
        message: for a failure, the step and the last line of its log.
        log: the log of the failed step.
    """

    cell: Cell
    status: Status
    wall_s: float = 0.0
    message: str = ""
    log: Path | None = None


@dataclass
class BenchResult:
    """The outcome of :func:`run_bench`.

    Attributes:
        outcomes: one per cell, in suite order.
        wall_s: wall time of this invocation.
        files: the report files written (kind -> path); empty when no cell is complete.
    """

    outcomes: list[CellOutcome]
    wall_s: float
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def failures(self) -> list[CellOutcome]:
        """The failed cells."""
        return [o for o in self.outcomes if o.status == "failed"]


# --------------------------------------------------------------------------------------------
# Cell records and states


def _now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_record(cell_dir: Path) -> dict[str, Any]:
    """The cell's ``cell.json`` (empty when absent).

    Raises:
        BenchError: the file exists but is not a JSON object.
    """
    path = cell_dir / CELL_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}: expected the JSON record of a bench cell, found invalid JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise BenchError(f"{path}: expected a JSON object, found {type(data).__name__}.")
    return data


def eval_complete(cell_dir: Path) -> bool:
    """True when the cell's evaluation folder holds every file ``tcsa-uda evaluate`` writes."""
    return all((cell_dir / EVAL_DIR / name).is_file() for name in EVAL_OUTPUTS)


def spec_changes(recorded: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """The top-level keys of the cell spec that differ from the recorded one."""
    return sorted(k for k in set(recorded) | set(spec) if recorded.get(k) != spec.get(k))


def cell_state(cell_dir: Path, spec: dict[str, Any]) -> tuple[CellState, str]:
    """The state of a cell folder and, for ``stale``, the changed spec keys.

    ``stale`` (recorded spec differs) > ``done`` (evaluation complete) > ``evaluate``
    (``run/final.pt`` exists) > ``resume`` (``run/config.yaml`` exists) > ``new``.
    """
    recorded = read_record(cell_dir).get("spec")
    if recorded is not None:
        changed = spec_changes(recorded, spec)
        if changed:
            return "stale", ", ".join(changed)
    if eval_complete(cell_dir):
        return "done", ""
    if (cell_dir / RUN_DIR / RUN_FINAL).is_file():
        return "evaluate", ""
    if (cell_dir / RUN_DIR / RUN_CONFIG).is_file():
        return "resume", ""
    return "new", ""


# --------------------------------------------------------------------------------------------
# Commands


def train_command(python: str, cell: Cell, prepared: Path, run_dir: Path, threads: int, resume: bool) -> list[str]:
    """``python -m tcsa_uda train CONFIG OVERRIDES <bench keys> --out RUN [--resume]``."""
    cmd = [python, "-m", "tcsa_uda", "train", str(cell.config), *cell.overrides]
    cmd += [
        f"data.prepared={prepared}",
        f"data.source={cell.source}",
        f"data.target={cell.target}",
        f"seed={cell.seed}",
        f"num_threads={threads}",
        "progress=false",
        "--out",
        str(run_dir),
    ]
    return [*cmd, "--resume"] if resume else cmd


def evaluate_command(python: str, cell: Cell, prepared: Path, cell_dir: Path, eval_args: Sequence[str]) -> list[str]:
    """``python -m tcsa_uda evaluate RUN --dataset P --domain TARGET ... --out EVAL --no-progress``."""
    return [
        python,
        "-m",
        "tcsa_uda",
        "evaluate",
        str(cell_dir / RUN_DIR),
        "--dataset",
        str(prepared),
        "--domain",
        cell.target,
        *eval_args,
        "--label",
        cell.entry,
        "--out",
        str(cell_dir / EVAL_DIR),
        "--no-progress",
    ]


def child_env(threads: int) -> dict[str, str]:
    """The environment of the cell commands: this ``tcsa_uda`` first on the path, one thread each."""
    env = dict(os.environ)
    root = str(Path(tcsa_uda.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if threads > 0:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def _dataset_record(suite: Suite, name: str) -> dict[str, Any]:
    d = suite.spec.datasets[name]
    if d.phantom is not None:
        return {"phantom": dataclasses.asdict(d.phantom)}
    return {"prepared": d.prepared}


def cell_spec(suite: Suite, cell: Cell) -> dict[str, Any]:
    """What identifies a cell's results: recorded in ``cell.json`` and compared on every run.

    Paths are recorded as the suite gives them (with the config's content hash), so moving the
    output folder or reinstalling the package does not make finished cells stale.
    """
    spec = {
        "config": suite.config_given(cell.entry, cell.dataset, cell.direction),
        "config_sha256": file_digest(cell.config),
        "overrides": list(cell.overrides),
        "source": cell.source,
        "target": cell.target,
        "seed": cell.seed,
        "dataset": _dataset_record(suite, cell.dataset),
        "evaluation": suite.spec.evaluation.result_args(),
    }
    return json.loads(json.dumps(spec))  # as read back from cell.json (tuples become lists)


def plan(suite: Suite, out: Path, prepared: dict[str, Path], python: str, threads: int) -> list[PlannedCell]:
    """Every cell of the suite with its folder, state and commands (nothing is run or written)."""
    planned = []
    eval_args = suite.spec.evaluation.cli_args()
    for cell in suite.cells():
        cdir = out / cell.rel_dir
        spec = cell_spec(suite, cell)
        state, reason = cell_state(cdir, spec)
        p = prepared[cell.dataset]
        planned.append(
            PlannedCell(
                cell=cell,
                dir=cdir,
                state=state,
                spec=spec,
                train=train_command(python, cell, p, cdir / RUN_DIR, threads, resume=state == "resume"),
                evaluate=evaluate_command(python, cell, p, cdir, eval_args),
                reason=reason,
            )
        )
    return planned


# --------------------------------------------------------------------------------------------
# Logging and subprocesses


class EventLog:
    """Timestamped lines appended to ``OUT/bench.log`` and echoed above the progress bar."""

    def __init__(self, path: Path | None, echo: Callable[[str], None] | None) -> None:
        self.path = path
        self.echo = echo
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        stamp = _now()
        with self._lock:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(f"{stamp} {line}\n")
            if self.echo is not None:
                self.echo(line)


def run_logged(cmd: Sequence[str], log: Path, env: dict[str, str]) -> tuple[int, float]:
    """Run ``cmd`` with stdout and stderr appended to ``log``; returns ``(return code, seconds)``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"\n# {_now()} tcsa-uda bench: {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)
    return proc.returncode, time.perf_counter() - t0


def last_line(log: Path) -> str:
    """The last non-empty line of a log (usually the ``error: ...`` line of a failed command)."""
    if not log.is_file():
        return ""
    lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------------------------
# Datasets


def dataset_paths(suite: Suite, out: Path) -> dict[str, Path]:
    """The prepared folder of every dataset (phantom ones: where the bench builds them).

    Raises:
        MissingPathError: a ``prepared`` folder does not exist.
        BenchError: a ``prepared`` folder has no ``index.json``.
    """
    paths = {}
    for name, d in suite.spec.datasets.items():
        if d.prepared is not None:
            p = resolve_prepared(d.prepared, f"{suite.path}: datasets.{name}.prepared")
            if not (p / PREPARED_INDEX).is_file():
                raise BenchError(
                    f"{suite.path}: datasets.{name}.prepared: expected a folder written by `tcsa-uda prepare` "
                    f"(with {PREPARED_INDEX}), found {p} without it."
                )
            paths[name] = p
        else:
            paths[name] = (out / DATA_DIR / name / "prepared").resolve()
    return paths


def build_phantom(
    name: str, options: PhantomData, folder: Path, python: str, env: dict[str, str], log: EventLog
) -> Path:
    """Generate and prepare the phantom ``name`` into ``folder`` once; returns the prepared folder.

    Raises:
        BenchError: the folder was built with other options, or a command failed (its log named).
    """
    record = {"phantom": dataclasses.asdict(options)}
    marker = folder / DATA_FILE
    prepared = folder / "prepared"
    if marker.is_file():
        found = json.loads(marker.read_text(encoding="utf-8"))
        if found != json.loads(json.dumps(record)):
            raise BenchError(
                f"{marker}: dataset {name!r} was built with {found}, the suite asks for {record}; delete {folder} "
                "or use another --out."
            )
        return prepared
    raw = folder / "raw"
    build_log = folder / BUILD_LOG
    log(f"build dataset {name}: phantom {record['phantom']}")
    d, h, w = options.shape
    phantom = [python, "-m", "tcsa_uda", "phantom", "--out", str(raw), "--seed", str(options.seed)]
    phantom += ["--cases", str(options.cases), "--shape", str(d), str(h), str(w), "--quiet"]
    if raw.exists():
        phantom.append("--overwrite")  # an interrupted earlier build left a partial folder
    prepare = [python, "-m", "tcsa_uda", "prepare", str(raw), "--out", str(prepared)]
    prepare += ["--size", str(options.size), "--axis", options.axis, "--no-progress"]
    for cmd in (phantom, prepare):
        code, _ = run_logged(cmd, build_log, env)
        if code != 0:
            raise BenchError(
                f"dataset {name!r}: `tcsa-uda {cmd[3]}` exited with {code}: {last_line(build_log)} (log: {build_log})"
            )
    atomic_write_json(marker, record)
    return prepared


# --------------------------------------------------------------------------------------------
# One cell


def run_cell(pc: PlannedCell, env: dict[str, str]) -> CellOutcome:
    """Train (or resume) and evaluate one cell; record the result in its ``cell.json``."""
    record = read_record(pc.dir)
    walls: dict[str, float] = dict(record.get("wall_s", {}))
    record.update(
        cell={"entry": pc.cell.entry, "dataset": pc.cell.dataset, "direction": pc.cell.direction, "seed": pc.cell.seed},
        spec=pc.spec,
        status="running",
        attempts=int(record.get("attempts", 0)) + 1,
        started=_now(),
    )
    for key in ("step", "returncode", "message", "log"):
        record.pop(key, None)
    atomic_write_json(pc.dir / CELL_FILE, record)
    spent = 0.0
    steps: list[tuple[str, list[str], Path]] = []
    if pc.state in ("new", "resume"):
        steps.append(("train", pc.train, pc.dir / TRAIN_LOG))
    steps.append(("evaluate", pc.evaluate, pc.dir / EVAL_LOG))
    for step, cmd, log in steps:
        code, seconds = run_logged(cmd, log, env)
        spent += seconds
        walls[step] = walls.get(step, 0.0) + seconds
        if code != 0:
            message = f"{step} exited with {code}: {last_line(log)}"
        elif step == "evaluate" and not eval_complete(pc.dir):
            message = f"evaluate exited with 0 but {EVAL_DIR}/ lacks one of {', '.join(EVAL_OUTPUTS)}"
        else:
            continue
        record.update(status="failed", step=step, returncode=code, message=message, log=log.name)
        record.update(wall_s=walls, total_wall_s=sum(walls.values()), finished=_now())
        atomic_write_json(pc.dir / CELL_FILE, record)
        return CellOutcome(pc.cell, "failed", spent, message, log)
    record.update(status="done", wall_s=walls, total_wall_s=sum(walls.values()), finished=_now())
    atomic_write_json(pc.dir / CELL_FILE, record)
    return CellOutcome(pc.cell, "done", spent)


# --------------------------------------------------------------------------------------------
# The bench


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


@contextmanager
def bench_lock(out: Path) -> Iterator[None]:
    """Hold ``OUT/.bench.lock`` (this process's id) so two benches never write one folder at once.

    A lock left by a process that no longer exists is taken over.

    Raises:
        BenchError: another running bench holds the lock.
    """
    path = out / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
            pid = int(text) if text.isdigit() else None
            if pid is not None and _pid_alive(pid):
                raise BenchError(
                    f"{path}: another bench (process {pid}) is running in {out}; wait for it or stop it first."
                ) from None
            path.unlink(missing_ok=True)  # stale lock of a process that is gone
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
        break
    else:
        raise BenchError(f"{path}: could not take the lock of the bench folder.")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def format_seconds(seconds: float) -> str:
    """``H:MM:SS``."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _eta(durations: Sequence[float], remaining: int, jobs: int) -> str:
    if remaining <= 0:
        return "ETA 0:00:00"
    if not durations:
        return "ETA ?"
    mean = sum(durations) / len(durations)
    return "ETA " + format_seconds(remaining * mean / max(1, min(jobs, remaining)))


def run_bench(
    suite: Suite,
    opts: BenchOptions,
    write_report: Callable[[Suite, Path], dict[str, Path]] | None = None,
) -> BenchResult:
    """Build the datasets, run every unfinished cell and write the report.

    Args:
        suite: the loaded suite.
        opts: output folder, jobs, threads, progress.
        write_report: called as ``write_report(suite, out)`` when at least one cell is complete
            (the CLI passes :func:`tcsa_uda.bench.report.write_report`).

    Returns:
        :class:`BenchResult`; its ``failures`` are the failed and stale cells.

    Raises:
        BenchError / MissingPathError: a dataset could not be found or built.
    """
    if opts.jobs < 1 or opts.threads < 0:
        raise BenchError(f"bench: expected jobs >= 1 and threads >= 0, found jobs={opts.jobs}, threads={opts.threads}.")
    out = Path(opts.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with bench_lock(out):
        return _run_locked(suite, opts, out, write_report)


def _run_locked(
    suite: Suite,
    opts: BenchOptions,
    out: Path,
    write_report: Callable[[Suite, Path], dict[str, Path]] | None,
) -> BenchResult:
    t_start = time.perf_counter()
    env = child_env(opts.threads)
    echo: Callable[[str], None] = tqdm.write if opts.progress else print
    log = EventLog(out / BENCH_LOG, echo)
    paths = dataset_paths(suite, out)
    for name, d in suite.spec.datasets.items():
        if d.phantom is not None:
            paths[name] = build_phantom(name, d.phantom, out / DATA_DIR / name, opts.python, env, log)
    planned = plan(suite, out, paths, opts.python, opts.threads)
    outcomes: dict[tuple[str, str, str, int], CellOutcome] = {}
    todo: list[PlannedCell] = []
    prior: list[float] = []
    for pc in planned:
        if pc.state == "done":
            outcomes[pc.cell.key] = CellOutcome(pc.cell, "skipped")
            wall = read_record(pc.dir).get("total_wall_s")
            if isinstance(wall, (int, float)) and math.isfinite(wall):
                prior.append(float(wall))
        elif pc.state == "stale":
            msg = f"stale: the cell folder holds results of another spec ({pc.reason}); delete {pc.dir} to rerun it"
            outcomes[pc.cell.key] = CellOutcome(pc.cell, "failed", message=msg)
        else:
            todo.append(pc)
    n_skip = sum(o.status == "skipped" for o in outcomes.values())
    log(
        f"bench {suite.name}: {len(planned)} cell(s); {n_skip} complete (skipped), {len(todo)} to run, "
        f"{len(planned) - n_skip - len(todo)} stale; jobs={opts.jobs}, threads per cell={opts.threads}"
    )
    for pc in planned:
        if pc.state == "done":
            log(f"skip {pc.cell.name}: evaluation complete")
        elif pc.state == "stale":
            log(f"STALE {pc.cell.name}: {outcomes[pc.cell.key].message}")
    bar = tqdm(
        total=len(planned),
        initial=len(planned) - len(todo),
        unit="cell",
        desc=f"bench {suite.name}",
        disable=not opts.progress,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} cells [{elapsed}{postfix}]",
    )
    durations: list[float] = []
    bar.set_postfix_str(_eta(prior, len(todo), opts.jobs))
    stop = threading.Event()

    def work(pc: PlannedCell) -> CellOutcome:
        if stop.is_set():
            return CellOutcome(pc.cell, "failed", message="cancelled")
        how = {"new": "train + evaluate", "resume": "resume training + evaluate", "evaluate": "evaluate"}[pc.state]
        log(f"start {pc.cell.name}: {how}")
        return run_cell(pc, env)

    pool = ThreadPoolExecutor(max_workers=opts.jobs)
    try:
        futures: dict[Future[CellOutcome], PlannedCell] = {pool.submit(work, pc): pc for pc in todo}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                res = fut.result()
                outcomes[res.cell.key] = res
                if res.status == "done":
                    durations.append(res.wall_s)
                    log(f"done {res.cell.name} in {format_seconds(res.wall_s)}")
                else:
                    log(f"FAILED {res.cell.name}: {res.message} (log: {res.log})")
                bar.update(1)
                left = len(pending)
                bar.set_postfix_str(_eta(durations or prior, left, opts.jobs))
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        raise
    pool.shutdown(wait=True)
    bar.close()
    result = BenchResult([outcomes[pc.cell.key] for pc in planned], time.perf_counter() - t_start)
    if write_report is not None and any(o.status in ("done", "skipped") for o in result.outcomes):
        result.files = write_report(suite, out)
    log(
        f"bench {suite.name} finished in {format_seconds(result.wall_s)}: "
        f"{sum(o.status == 'done' for o in result.outcomes)} run, {n_skip} skipped, {len(result.failures)} failed"
    )
    return result


__all__ = [
    "BENCH_LOG",
    "CELLS_DIR",
    "CELL_FILE",
    "EVAL_DIR",
    "EVAL_OUTPUTS",
    "LOCK_FILE",
    "RUN_DIR",
    "BenchError",
    "BenchOptions",
    "BenchResult",
    "CellOutcome",
    "EventLog",
    "PlannedCell",
    "bench_lock",
    "build_phantom",
    "cell_spec",
    "cell_state",
    "child_env",
    "dataset_paths",
    "eval_complete",
    "evaluate_command",
    "format_seconds",
    "plan",
    "read_record",
    "run_bench",
    "run_cell",
    "train_command",
]
