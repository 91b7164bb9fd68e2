"""Inference time of one test volume: the eval-mode forward pass over its slices, in batches.

Usage:
    python scripts/benchmark_inference.py [--model deeplabv2_r101] [--size 256] [--depth 32] [--batch 32]
        [--classes 5] [--text-dim 512] [--repeats 2] [--warmup 1] [--device auto|cpu|cuda] [--threads N]

Defaults: the released MM-WHS evaluation (docs/reproduce.md, "Paper numbers from the released
checkpoints"): DeepLab-v2 ResNet-101 at output stride 8 with the TCSA head, 256 x 256 slices in
batches of 32, 4 classes + background, CLIP-sized text embeddings. One "volume" is ``--depth``
random slices through :func:`tcsa_uda.models.inference.predict_slices` (three channels, main
logits upsampled to the slice size, softmax), the path ``tcsa-uda evaluate`` takes; mapping
back to the original grid and the metrics are not included. ``warmup`` untimed volumes, then
``repeats`` timed ones. Speed does not depend on image content. Prints seconds per volume and
per slice.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import torch

from tcsa_uda.models import build_segmenter
from tcsa_uda.models.inference import predict_slices


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="deeplabv2_r101")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--depth", type=int, default=32, help="slices of one volume")
    p.add_argument("--batch", type=int, default=32, help="slices per forward pass (the release uses 32)")
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--text-dim", type=int, default=512)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.depth < 1 or args.batch < 1:
        p.error("--repeats, --depth and --batch must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if args.device == "cuda" and not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available")
        device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_segmenter(args.model, args.classes, args.text_dim).to(device).eval()
    text = torch.randn(args.classes, args.text_dim, device=device)
    volume = np.random.default_rng(0).uniform(-1.0, 1.0, (args.depth, args.size, args.size)).astype(np.float32)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"# {args.model} eval, {args.depth} slices of {args.size}x{args.size} in batches of {args.batch}, "
        f"{args.classes} classes, text dim {args.text_dim}, torch {torch.__version__}, {where}"
    )
    for _ in range(args.warmup):
        predict_slices(model, volume, text, batch_size=args.batch)
    times = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        predict_slices(model, volume, text, batch_size=args.batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        mem = "peak CUDA allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        mem = "process max RSS"
    print(
        f"volume: {sec:.3f} s (median of {args.repeats}; {args.warmup} warm-up); {sec / args.depth:.4f} s/slice; "
        f"{mem} {peak:.2f} GiB"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
