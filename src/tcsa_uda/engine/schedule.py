"""Learning-rate schedules."""

from __future__ import annotations

import torch


def poly_lr(base_lr: float, iteration: int, max_iterations: int, power: float = 0.9) -> float:
    """DeepLab's poly decay: ``base_lr * (1 - it / max_it) ** power`` (clamped at 0)."""
    frac = min(max(iteration / max(max_iterations, 1), 0.0), 1.0)
    return base_lr * (1.0 - frac) ** power


def set_poly_lr(optimizer: torch.optim.Optimizer, iteration: int, max_iterations: int, power: float) -> None:
    """Set every param group's lr to its ``initial_lr`` decayed by :func:`poly_lr`."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = poly_lr(group["initial_lr"], iteration, max_iterations, power)
