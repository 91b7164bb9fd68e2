"""Speed of the fast settings against fp32, in one run: training s/iteration, peak memory, inference slices/s, FLOP/s.

Usage:
    python scripts/benchmark_speed.py [--device auto|cpu|cuda] [--configs paper,light]
        [--settings fp32,bf16,fp16,channels_last,bf16+channels_last,bf16+channels_last+compile]
        [--iterations 3] [--warmup 1] [--inference-slices 16] [--threads N] [--compile-on-cpu] [--tiny]
        [--exclusive [--max-others 0.2] [--max-wait 1800] [--retries 3]]

Configurations (random inputs: speed does not depend on image content):

- ``paper``: the paper configuration (docs/method.md): DeepLab-v2 ResNet-101 at output stride 8,
  256 x 256 slices, 4 source + 4 target slices per iteration, MM-WHS classes (4 + background),
  CLIP-sized text embeddings (512); stage 1 (``adaoutput``) and stage 2 (``tcsa``).
- ``light``: the light model of the built-in benchmark at the same sizes.
- ``--tiny``: one tiny configuration (light model of width 8, 32 x 32, 2 + 2 slices, text dim
  16, 1 timed iteration, no warm-up) for the test of this script; its numbers mean nothing.

Settings (``tcsa_uda.engine.performance``, docs/performance.md): ``fp32`` is the baseline; each
other setting is reported as a ratio against it. A setting the device cannot run is printed as
``n/a (reason)``: fp16 needs CUDA; compilation is not measured on CPU unless ``--compile-on-cpu``
(compiling ResNet-101's training step takes minutes there); a failed compilation falls back to
eager and is reported as such.

Per setting and stage: ``warmup`` untimed, then ``iterations`` timed full training steps (every
forward, backward and optimiser step of the stage). Peak memory: CUDA allocated memory on GPUs;
on Linux CPUs the process's peak resident set size, reset before each measurement
(``/proc/self/clear_refs``, after ``malloc_trim`` returned the freed heap), so each row has its
own peak (it includes the ~0.5 GiB of the Python process with torch loaded). FLOPs: one fp32 training step counted
with ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions, forward and
backward); achieved FLOP/s = FLOPs per iteration / seconds per iteration. Inference: the
``evaluate`` forward pass (:func:`tcsa_uda.models.inference.predict_slices`, no flip) on
``--inference-slices`` slices in one batch. The estimated wall time of the paper schedule is
50,000 iterations of stage 1 plus 50,000 of stage 2.

Shared machines: the last column of each table is the CPU (in cores) that OTHER processes used
during the timed iterations (Linux ``/proc``). ``--exclusive`` waits for idle CPUs before each
timing and times again while others used more than ``--max-others`` cores.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import re
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from tcsa_uda.engine.performance import RunPerformance
from tcsa_uda.errors import ConfigError
from tcsa_uda.methods import build_method
from tcsa_uda.methods.base import MethodContext
from tcsa_uda.models import build_segmenter
from tcsa_uda.models.inference import predict_slices
from tcsa_uda.precision import MixedPrecision, autocast, resolve_precision
from tcsa_uda.train_config import OptimConfig

STAGES: tuple[tuple[str, str], ...] = (("1", "adaoutput"), ("2", "tcsa"))
SCHEDULE_ITERATIONS = 50_000


@dataclass(frozen=True)
class Setting:
    """One speed setting: precision, channels-last memory, torch.compile."""

    name: str
    precision: str
    channels_last: bool
    compile: bool


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("fp32", "fp32", False, False),
        Setting("bf16", "bf16", False, False),
        Setting("fp16", "fp16", False, False),
        Setting("channels_last", "fp32", True, False),
        Setting("bf16+channels_last", "bf16", True, False),
        Setting("bf16+channels_last+compile", "bf16", True, True),
    )
}


@dataclass(frozen=True)
class BenchConfig:
    """A network at one input size and batch."""

    name: str
    model: str
    size: int
    batch: int
    classes: int
    text_dim: int
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"{self.model}{' ' + str(self.model_kwargs) if self.model_kwargs else ''}, {self.size}x{self.size}, "
            f"{self.batch}+{self.batch} slices/it, {self.classes} classes, text dim {self.text_dim}"
        )


CONFIGS: dict[str, BenchConfig] = {
    "paper": BenchConfig("paper", "deeplabv2_r101", 256, 4, 5, 512),
    "light": BenchConfig("light", "light", 256, 4, 5, 512),
}
TINY = BenchConfig("tiny", "light", 32, 2, 5, 16, {"base_width": 8})


@dataclass
class Measure:
    """One measured cell (or the reason it was not measured)."""

    seconds: float = float("nan")  # per training iteration, or per inference pass
    peak_gib: float = float("nan")
    note: str = ""
    skipped: str | None = None
    others: float = float("nan")  # CPU cores used by other processes during the timed iterations


# --------------------------------------------------------------------------------------- memory
def _release_freed_memory() -> bool:
    """Give the heap pages freed by earlier cells back to the system (glibc); False where that is not possible."""
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(hasattr(libc, "malloc_trim") and libc.malloc_trim(0) is not None)


def _reset_peak(device: torch.device) -> str:
    """Reset the peak-memory counter; returns a note when the peak cannot be isolated ("" when it can)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return ""
    trimmed = _release_freed_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return "peak = process max RSS (not resettable here)"
    return "" if trimmed else "peak includes heap kept from earlier cells"


def _peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    if found:
        return int(found.group(1)) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------ cells
def unavailable(setting: Setting, device: torch.device, compile_on_cpu: bool) -> str | None:
    """Why ``setting`` cannot be measured on ``device`` (None when it can)."""
    try:
        resolve_precision(setting.precision, device)
    except ConfigError:
        if setting.precision == "fp16":
            return "fp16 needs CUDA"
        return f"{setting.precision} is not supported by {device}"
    if setting.compile and device.type == "cpu" and not compile_on_cpu:
        return "compile not measured on CPU (minutes of compilation); --compile-on-cpu measures it"
    return None


def _batches(cfg: BenchConfig, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    label = torch.zeros(cfg.batch, cfg.size, cfg.size, dtype=torch.long)
    for c in range(cfg.classes):  # vertical bands: every class present
        label[:, :, c * cfg.size // cfg.classes : (c + 1) * cfg.size // cfg.classes] = c
    src = {"image": torch.randn(cfg.batch, 3, cfg.size, cfg.size, generator=g), "label": label}
    tgt = {"image": torch.randn(cfg.batch, 3, cfg.size, cfg.size, generator=g)}
    return src, tgt


def _perf(setting: Setting, device: torch.device) -> RunPerformance:
    precision = resolve_precision(setting.precision, device)
    return RunPerformance(
        device, setting.precision, MixedPrecision(precision, device), setting.channels_last, setting.compile
    )


def _compile_note(perf: RunPerformance) -> str:
    reasons = [c.reason for c in perf.compiled if c.reason]
    return f"compile fell back to eager ({reasons[0]})" if reasons else ""


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds of the whole machine, CPU seconds of this process) from /proc; None elsewhere."""
    try:
        machine = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = sum(machine) - machine[3] - machine[4]  # all but idle and iowait
    return busy / tick, (int(own[11]) + int(own[12])) / tick  # utime + stime of every thread


def _others(before: tuple[float, float] | None, after: tuple[float, float] | None, seconds: float) -> float:
    """Cores used by other processes between two :func:`_cpu_seconds` samples (NaN when unknown)."""
    if before is None or after is None or seconds <= 0:
        return float("nan")
    return max((after[0] - before[0]) - (after[1] - before[1]), 0.0) / seconds


def _wait_idle(args: argparse.Namespace) -> None:
    """Wait (at most ``--max-wait`` seconds) until other processes use less than ``--max-others`` cores."""
    deadline = time.monotonic() + args.max_wait
    while True:
        before, t0 = _cpu_seconds(), time.perf_counter()
        time.sleep(3.0)
        others = _others(before, _cpu_seconds(), time.perf_counter() - t0)
        if not others > args.max_others or time.monotonic() > deadline:  # NaN (unknown) does not wait
            return
        _progress(f"waiting: other processes use {others:.2f} cores")
        time.sleep(10.0)


def _timed(one: Callable[[], None], device: torch.device, args: argparse.Namespace) -> tuple[float, float]:
    """Seconds per call of ``one`` over ``--iterations`` calls, and the cores other processes used meanwhile.

    With ``--exclusive`` the timing waits for idle CPUs first and is repeated (up to ``--retries``
    times) while other processes used more than ``--max-others`` cores during it.
    """
    sec = others = float("nan")
    for attempt in range(args.retries + 1 if args.exclusive else 1):
        if args.exclusive:
            _wait_idle(args)
        _sync(device)
        before, t0 = _cpu_seconds(), time.perf_counter()
        for _ in range(args.iterations):
            one()
        _sync(device)
        elapsed = time.perf_counter() - t0
        sec, others = elapsed / args.iterations, _others(before, _cpu_seconds(), elapsed)
        if not (args.exclusive and others > args.max_others):
            break
        _progress(f"other processes used {others:.2f} cores during the timing (try {attempt + 1}); timing again")
    return sec, others


def train_cell(
    cfg: BenchConfig,
    method_name: str,
    setting: Setting,
    device: torch.device,
    args: argparse.Namespace,
    count_flops: bool = False,
) -> tuple[Measure, float | None]:
    """Seconds per training iteration and peak memory of one stage; FLOPs of one step when asked."""
    torch.manual_seed(0)
    model = build_segmenter(cfg.model, cfg.classes, cfg.text_dim, **cfg.model_kwargs).to(device).train()
    perf = _perf(setting, device)
    perf.prepare_model(model)
    ctx = MethodContext(
        model=perf.compile_model(model),
        num_classes=cfg.classes,
        text_source=torch.randn(cfg.classes, cfg.text_dim, device=device),
        text_target=torch.randn(cfg.classes, cfg.text_dim, device=device),
        optim=OptimConfig(),
        fidelity="paper",
        device=device,
        core=model,
        precision=perf.precision,
    )
    method = build_method(method_name, ctx, {"align_start": 0} if method_name == "tcsa" else {})
    perf.prepare_model(method.discriminators)
    opts = method.build_optimizers()
    src, tgt = (perf.to_device(b) for b in _batches(cfg, device))
    step = 0

    def one() -> None:
        nonlocal step
        step += 1
        method.training_step(src, tgt, iteration=step, optimizers=opts)

    return _measure(one, perf, device, args, count_flops)


def _measure(
    one: Callable[[], None], perf: RunPerformance, device: torch.device, args: argparse.Namespace, count_flops: bool
) -> tuple[Measure, float | None]:
    """Warm up, time ``one`` and read the peak memory; with ``count_flops`` the first (untimed) warm-up
    call also counts the FLOPs."""
    flops: float | None = None
    if count_flops:
        with FlopCounterMode(display=False) as counter:
            one()
        flops = float(counter.get_total_flops())
    memory_note = _reset_peak(device)
    for _ in range(max(args.warmup - (1 if count_flops else 0), 0)):
        one()
    sec, others = _timed(one, device, args)
    note = _compile_note(perf) or memory_note
    return Measure(seconds=sec, peak_gib=_peak_gib(device), note=note, others=others), flops


def inference_cell(
    cfg: BenchConfig, setting: Setting, device: torch.device, args: argparse.Namespace, count_flops: bool = False
) -> tuple[Measure, float | None]:
    """Seconds per inference pass of ``--inference-slices`` slices (``evaluate``'s forward pass)."""
    torch.manual_seed(0)
    model = build_segmenter(cfg.model, cfg.classes, cfg.text_dim, **cfg.model_kwargs).to(device).eval()
    perf = _perf(setting, device)
    perf.prepare_model(model)
    forward = perf.compile_model(model)
    n = args.inference_slices
    slices = np.random.default_rng(0).standard_normal((n, cfg.size, cfg.size)).astype(np.float32)
    text = torch.randn(cfg.classes, cfg.text_dim, device=device)

    def one() -> None:
        with autocast(perf.name, device):
            predict_slices(forward, slices, text, batch_size=n, encoding="grey")

    return _measure(one, perf, device, args, count_flops)


# ----------------------------------------------------------------------------------------- tables
def _progress(line: str) -> None:
    """One line per finished cell on stderr (the tables come on stdout at the end of each configuration)."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def _ratio(x: float, base: float) -> str:
    return f"{x / base:.2f}x" if np.isfinite(x) and np.isfinite(base) and base > 0 else "n/a"


def _si(value: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} "


def run_config(
    cfg: BenchConfig,
    settings: list[Setting],
    device: torch.device,
    args: argparse.Namespace,
    emit: Callable[[str], None],
) -> None:
    """Measure every setting of one configuration and print its training and inference tables."""
    emit(f"\n## {cfg.name}: {cfg.describe()}\n")
    train: dict[tuple[str, str], Measure] = {}
    flops: dict[str, float] = {}
    for setting in settings:
        reason = unavailable(setting, device, args.compile_on_cpu)
        for stage, method in STAGES:
            if reason is not None:
                train[setting.name, stage] = Measure(skipped=reason)
                continue
            first = setting.name == "fp32"
            m, f = train_cell(cfg, method, setting, device, args, count_flops=first)
            gc.collect()  # the cell's networks are gone before the next peak is measured
            train[setting.name, stage] = m
            _progress(f"{cfg.name} {setting.name} stage {stage}: {m.seconds:.3f} s/it, peak {m.peak_gib:.2f} GiB")
            if f is not None:
                flops[stage] = f
    emit("Training (full iterations; speed-up = fp32 s/it / setting s/it; memory ratio = setting / fp32):\n")
    emit(
        "| setting | stage | s/it | speed-up | peak memory (GiB) | memory vs fp32 | GFLOP/it | achieved FLOP/s | "
        f"paper schedule (2 x {SCHEDULE_ITERATIONS:,} it) | other processes (cores) |"
    )
    emit("|---|---|---|---|---|---|---|---|---|---|")
    for setting in settings:
        total = 0.0
        for stage, method in STAGES:
            m = train[setting.name, stage]
            label = f"{stage} {method}"
            if m.skipped is not None:
                emit(f"| {setting.name} | {label} | n/a ({m.skipped}) | | | | | | | |")
                total = float("nan")
                continue
            base = train["fp32", stage]
            f = flops.get(stage, float("nan"))
            achieved = f"{_si(f / m.seconds)}FLOP/s" if np.isfinite(f) else "n/a"
            total += m.seconds
            schedule = f"{total * SCHEDULE_ITERATIONS / 3600:.1f} h" if stage == STAGES[-1][0] else ""
            note = f" ({m.note})" if m.note else ""
            emit(
                f"| {setting.name} | {label} | {m.seconds:.3f}{note} | {_ratio(base.seconds, m.seconds)} | "
                f"{m.peak_gib:.2f} | {_ratio(m.peak_gib, base.peak_gib)} | "
                f"{f / 1e9:.1f} | {achieved} | {schedule} | {m.others:.2f} |"
            )
    infer: dict[str, Measure] = {}
    infer_flops = float("nan")
    for setting in settings:
        reason = unavailable(setting, device, args.compile_on_cpu)
        if reason is not None:
            infer[setting.name] = Measure(skipped=reason)
            continue
        m, f = inference_cell(cfg, setting, device, args, count_flops=setting.name == "fp32")
        gc.collect()
        infer[setting.name] = m
        _progress(f"{cfg.name} {setting.name} inference: {args.inference_slices / m.seconds:.2f} slices/s")
        if f is not None:
            infer_flops = f
    n = args.inference_slices
    emit(f"\nInference ({n} slices per forward pass, no flip; the `evaluate` forward pass):\n")
    columns = ["setting", "slices/s", "speed-up", "peak memory (GiB)", "memory vs fp32", "achieved FLOP/s"]
    emit("| " + " | ".join([*columns, "other processes (cores)"]) + " |")
    emit("|---|---|---|---|---|---|---|")
    for setting in settings:
        m = infer[setting.name]
        if m.skipped is not None:
            emit(f"| {setting.name} | n/a ({m.skipped}) | | | | | |")
            continue
        base = infer["fp32"]
        note = f" ({m.note})" if m.note else ""
        achieved = f"{_si(infer_flops / m.seconds)}FLOP/s" if np.isfinite(infer_flops) else "n/a"
        emit(
            f"| {setting.name} | {n / m.seconds:.2f}{note} | {_ratio(base.seconds, m.seconds)} | {m.peak_gib:.2f} | "
            f"{_ratio(m.peak_gib, base.peak_gib)} | {achieved} | {m.others:.2f} |"
        )


def _where(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    return f"CPU ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads"


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--configs", default="paper,light", help=f"comma-separated: {', '.join(CONFIGS)}")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated: {', '.join(SETTINGS)}")
    p.add_argument("--iterations", type=int, default=3, help="timed training iterations / inference passes")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first (compile: use 2 or more)")
    p.add_argument("--inference-slices", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--compile-on-cpu", action="store_true", help="also measure torch.compile on CPU")
    p.add_argument("--tiny", action="store_true", help="one tiny configuration (for tests)")
    p.add_argument(
        "--exclusive",
        action="store_true",
        help="shared machines (Linux): wait for idle CPUs before each timing and time again when other "
        "processes used more than --max-others cores meanwhile",
    )
    p.add_argument("--max-others", type=float, default=0.2, help="cores other processes may use (--exclusive)")
    p.add_argument("--max-wait", type=float, default=1800.0, help="seconds to wait for idle CPUs per timing")
    p.add_argument("--retries", type=int, default=3, help="timings repeated at most (--exclusive)")
    args = p.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0 or args.inference_slices < 1:
        p.error("--iterations and --inference-slices must be >= 1 and --warmup >= 0")
    unknown = [s for s in args.settings.split(",") if s.strip() not in SETTINGS]
    if unknown:
        p.error(f"--settings: unknown {unknown}; choose from {', '.join(SETTINGS)}")
    names = [s.strip() for s in args.settings.split(",")]
    settings = [SETTINGS["fp32"]] + [SETTINGS[s] for s in names if s != "fp32"]  # the baseline always runs first
    if args.tiny:
        configs = [TINY]
        args.iterations, args.warmup, args.inference_slices = 1, 0, 4
    else:
        bad = [c for c in args.configs.split(",") if c.strip() not in CONFIGS]
        if bad:
            p.error(f"--configs: unknown {bad}; choose from {', '.join(CONFIGS)}")
        configs = [CONFIGS[c.strip()] for c in args.configs.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if args.device == "cuda" and not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available")
        device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as in training (tcsa_uda.engine.performance)
    print(
        f"# benchmark_speed: torch {torch.__version__}, {_where(device)}; {args.warmup} warm-up + "
        f"{args.iterations} timed iterations per cell; ratios against fp32"
    )
    for cfg in configs:
        run_config(cfg, settings, device, args, lambda line: print(line, flush=True))


if __name__ == "__main__":
    main(sys.argv[1:])
