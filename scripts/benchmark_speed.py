"""Training speed and memory of one configuration: seconds per iteration, peak memory.

Usage:
    python scripts/benchmark_speed.py [--model deeplabv2_r101] [--size 256] [--batch 4]
        [--classes 5] [--text-dim 512] [--methods adaoutput,tcsa] [--iterations 5] [--warmup 1]
        [--device auto|cpu|cuda] [--threads N]

Defaults are the paper configuration (docs/method.md): DeepLab-v2 ResNet-101 at output stride 8,
256 x 256 slices, 4 source + 4 target slices per iteration, MM-WHS classes (4 + background),
CLIP-sized text embeddings. Each method runs ``warmup`` untimed iterations, then ``iterations``
timed ones (full training steps: every forward, backward and optimiser step of the stage).
Inputs are random tensors: speed does not depend on image content. Prints one line per method.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from tcsa_uda.methods import build_method
from tcsa_uda.methods.base import MethodContext
from tcsa_uda.models import build_segmenter
from tcsa_uda.train_config import OptimConfig


def _batches(batch: int, size: int, classes: int, device: torch.device) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(0)
    label = torch.zeros(batch, size, size, dtype=torch.long)
    for c in range(classes):  # vertical bands: every class present
        label[:, :, c * size // classes : (c + 1) * size // classes] = c
    src = {"image": torch.randn(batch, 3, size, size, generator=g).to(device), "label": label.to(device)}
    tgt = {"image": torch.randn(batch, 3, size, size, generator=g).to(device)}
    return src, tgt


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(method_name: str, args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(seconds per iteration, peak memory in GiB: CUDA allocated, or the process's max RSS on CPU)."""
    torch.manual_seed(0)
    model = build_segmenter(args.model, args.classes, args.text_dim).to(device).train()
    ctx = MethodContext(
        model=model,
        num_classes=args.classes,
        text_source=torch.randn(args.classes, args.text_dim, device=device),
        text_target=torch.randn(args.classes, args.text_dim, device=device),
        optim=OptimConfig(),
        fidelity="paper",
        device=device,
        core=model,
    )
    method = build_method(method_name, ctx, {"align_start": 0} if method_name == "tcsa" else {})
    opts = method.build_optimizers()
    src, tgt = _batches(args.batch, args.size, args.classes, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for it in range(args.warmup):
        method.training_step(src, tgt, iteration=it + 1, optimizers=opts)
    _sync(device)
    t0 = time.perf_counter()
    for it in range(args.iterations):
        method.training_step(src, tgt, iteration=args.warmup + it + 1, optimizers=opts)
    _sync(device)
    sec = (time.perf_counter() - t0) / args.iterations
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return sec, peak


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="deeplabv2_r101")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--text-dim", type=int, default=512)
    p.add_argument("--methods", default="adaoutput,tcsa")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0:
        p.error("--iterations must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if args.device == "cuda" and not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available")
        device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"# {args.model}, {args.size}x{args.size}, {args.batch}+{args.batch} slices/it, {args.classes} classes, "
        f"text dim {args.text_dim}, torch {torch.__version__}, {where}"
    )
    for name in args.methods.split(","):
        sec, peak = run(name.strip(), args, device)
        mem = "peak CUDA allocated" if device.type == "cuda" else "process max RSS"
        print(
            f"{name.strip():>10}: {sec:.3f} s/it over {args.iterations} it ({args.warmup} warm-up); "
            f"{mem} {peak:.2f} GiB; 50,000 it = {sec * 50000 / 3600:.1f} h"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
