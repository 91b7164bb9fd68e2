"""Model selection without target labels, computed during training.

Every ``selection.every`` iterations the engine scores the current model on fixed slice subsets:

- ``source_val_dice``: mean foreground Dice (pooled over the subset, per class, then averaged) on
  the labelled SOURCE validation slices. Label-free with respect to the target.
- ``target_entropy``: mean normalised prediction entropy of the main head on unlabelled TARGET
  training slices (lower is better; confident target predictions).
- ``target_aux_agreement``: fraction of target training pixels where the main and the auxiliary
  head predict the same class (higher is better; two heads agree where features transfer).
- ``oracle``: mean foreground Dice on the TARGET TEST slices (uses target test labels; available
  only under this name and reported as such; never the default).

``criterion: last`` keeps the last iteration. See docs/evaluation.md for the comparison of
these criteria against the oracle on the built-in benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from tcsa_uda.data.encoding import InputEncoding
from tcsa_uda.data.prepared import PreparedIndex
from tcsa_uda.errors import ConfigError
from tcsa_uda.losses.entropy import entropy_map
from tcsa_uda.metrics import dice
from tcsa_uda.models.inference import slice_logits
from tcsa_uda.train_config import CRITERION_DIRECTION, SelectionConfig


@dataclass
class SliceSubset:
    """A fixed stack of slices (and labels when known) of one domain."""

    images: Tensor  # (N, H, W) float32
    labels: Tensor | None  # (N, H, W) int64


def _subset(
    index: PreparedIndex, domain: str, split: str, labelled: bool, max_slices: int, foreground_only: bool
) -> SliceSubset | None:
    cases = [c for c in index.cases(domain, split) if (c.labelled or not labelled)]
    if not cases:
        return None
    items: list[tuple[np.ndarray, np.ndarray | None]] = []
    for case in cases:
        img = case.load_image()
        lab = case.load_label() if labelled else None
        slices: Sequence[int] = range(case.n_slices)
        if foreground_only and case.foreground_slices:
            slices = case.foreground_slices
        for s in slices:
            items.append((img[s], None if lab is None else lab[s]))
    pick = np.unique(np.linspace(0, len(items) - 1, min(max_slices, len(items))).round().astype(int))
    images = torch.from_numpy(np.stack([np.array(items[i][0], dtype=np.float32) for i in pick]))
    labels = None
    if labelled:
        labels = torch.from_numpy(np.stack([np.array(items[i][1], dtype=np.int64) for i in pick]))
    return SliceSubset(images=images, labels=labels)


@dataclass
class Selector:
    """Scores models on fixed subsets and remembers the best iteration of the chosen criterion."""

    cfg: SelectionConfig
    source: str
    target: str
    encoding: InputEncoding
    subsets: dict[str, SliceSubset] = field(default_factory=dict)
    best_value: float = math.nan
    best_iteration: int = -1

    @classmethod
    def build(
        cls, cfg: SelectionConfig, index: PreparedIndex, source: str, target: str, encoding: InputEncoding
    ) -> Selector:
        sel = cls(cfg=cfg, source=source, target=target, encoding=encoding)
        subsets = {
            "source_val": _subset(index, source, "val", True, cfg.max_slices, True),
            "target_train": _subset(index, target, "train", False, cfg.max_slices, False),
        }
        if cfg.criterion == "oracle" or cfg.log_oracle:
            subsets["target_test"] = _subset(index, target, "test", True, cfg.max_slices, True)
            if subsets["target_test"] is None:
                raise ConfigError(f"selection: 'oracle' needs labelled {target} test cases; none found.")
        if cfg.criterion == "source_val_dice" and subsets["source_val"] is None:
            raise ConfigError(f"selection.criterion=source_val_dice needs labelled {source} val cases; none found.")
        sel.subsets = {k: v for k, v in subsets.items() if v is not None}
        return sel

    @torch.no_grad()
    def score(self, model: nn.Module, text_source: Tensor, text_target: Tensor, num_classes: int) -> dict[str, float]:
        """All available scores of ``model`` (put back in train mode afterwards)."""
        was_training = model.training
        model.eval()
        out: dict[str, float] = {}
        try:
            if "source_val" in self.subsets:
                out["source_val_dice"] = _dice(
                    model, self.subsets["source_val"], text_source, num_classes, self.encoding
                )
            if "target_test" in self.subsets:
                out["oracle"] = _dice(model, self.subsets["target_test"], text_target, num_classes, self.encoding)
            ent, agree = _target_stats(model, self.subsets["target_train"], text_target, self.encoding)
            out["target_entropy"] = ent
            out["target_aux_agreement"] = agree
        finally:
            model.train(was_training)
        return out

    def update(self, iteration: int, scores: dict[str, float]) -> bool:
        """Record ``scores``; True when this iteration is the new best of the criterion."""
        crit = self.cfg.criterion
        if crit == "last":
            self.best_iteration, self.best_value = iteration, math.nan
            return True
        value = scores[crit]
        better = math.isnan(self.best_value) or CRITERION_DIRECTION[crit] * (value - self.best_value) > 0
        if better and not math.isnan(value):
            self.best_value, self.best_iteration = value, iteration
            return True
        return False


def _dice(model: nn.Module, subset: SliceSubset, text: Tensor, num_classes: int, encoding: InputEncoding) -> float:
    """Mean over foreground classes of the Dice pooled over the subset's pixels (classes absent
    from both prediction and labels are left out)."""
    if subset.labels is None:
        raise ValueError("Dice needs a labelled slice subset.")
    logits = slice_logits(model, subset.images, text, encoding=encoding)
    pred = torch.cat([main.argmax(1).cpu() for _, main, _ in logits]).numpy()
    gt = subset.labels.numpy()
    vals = [dice(pred == c, gt == c) for c in range(1, num_classes)]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def _target_stats(model: nn.Module, subset: SliceSubset, text: Tensor, encoding: InputEncoding) -> tuple[float, float]:
    """Mean normalised entropy of the main head and the main/aux agreement rate on ``subset``."""
    ent_sum = agree_sum = 0.0
    n = 0
    for _, main, aux in slice_logits(model, subset.images, text, encoding=encoding):
        ent = entropy_map(main)
        ent_sum += float(ent.sum())
        agree_sum += float((main.argmax(1) == aux.argmax(1)).float().sum())
        n += ent.numel()
    return ent_sum / n, agree_sum / n
