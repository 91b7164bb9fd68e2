"""AdaBN: source-only training, then BatchNorm statistics of the target domain.

Paper: Y. Li, N. Wang, J. Shi, X. Hou, J. Liu, "Adaptive Batch Normalization for practical domain
adaptation", Pattern Recognition 80:109-117, 2018 (arXiv 1603.04779, "Revisiting Batch
Normalization For Practical Domain Adaptation").

Losses: L_seg on the source batch only, as ``source_only`` (the target batches the engine draws
during the stage are not forwarded, so training is exactly source-only). No adversary, no target
loss.

Adaptation (:meth:`AdaBN.on_stage_end`, after the stage's last step, before its last logs,
selection and ``final.pt``): the running mean and variance of every BatchNorm layer of the
segmenter (the backbone's, whose affine parameters are frozen, and the embedding head's) are reset
and recomputed from target training batches: momentum None (PyTorch's cumulative average over the
batches), train-mode forward passes without gradient, fused with the target-modality text; the
original momenta are restored afterwards. Evaluation (BatchNorm in eval mode) then normalises
target images with target statistics; the weights stay those of source-only training. The mean is
the exact mean over the slices used (equal batches); the variance is the average of the per-batch
(unbiased) variances, which leaves out the spread between batch means.

Defaults: ``aux_weight`` 0.1; ``bn_batches`` 0 = one pass over the target training slices (every
full batch of ``data.batch_size``, the batches the engine hands to the hook); ``bn_batches`` N > 0
uses the first N of them only. Under ``torchrun`` each rank averages its
own batches and rank 0's statistics are saved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.methods.base import MethodOptions, StepOutputs, UDAMethod
from tcsa_uda.methods.registry import register_method


@dataclass
class AdaBNOptions(MethodOptions):
    """Options of ``adabn``.

    Attributes:
        bn_batches: target batches for the statistics; 0 = one pass over the target training slices,
            N > 0 = at most the first N batches of that pass.
    """

    bn_batches: int = 0

    def __post_init__(self) -> None:
        if self.bn_batches < 0:
            raise ConfigError(f"adabn option bn_batches: expected >= 0 (0 = one pass), found {self.bn_batches}.")


def recompute_batchnorm_statistics(
    model: nn.Module, batches: Iterable[dict[str, Tensor]], forward: Callable[[Tensor], object], limit: int = 0
) -> int:
    """Reset every BatchNorm layer of ``model`` and recompute its running statistics from ``batches``.

    Each layer's momentum is set to None (cumulative average), the model runs in train mode under
    ``torch.no_grad`` on every batch's ``image``, then the momenta and the model's mode are restored.

    Args:
        model: the network whose BatchNorm layers are re-estimated.
        batches: batches with an ``image`` tensor ``(B, 3, H, W)`` on the model's device.
        forward: runs the model on one image batch (e.g. fused with the target text).
        limit: use at most this many batches (0 = all).

    Returns:
        The number of batches used.

    Raises:
        ConfigError: no batch was given (the statistics would be left reset).
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in layers]
    was_training = model.training
    used = 0
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad():
            for batch in batches:
                forward(batch["image"])
                used += 1
                if limit and used >= limit:
                    break
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    if layers and used == 0:
        raise ConfigError("adabn: no target batch to estimate the BatchNorm statistics from.")
    return used


@register_method
class AdaBN(UDAMethod):
    """Source-only L_seg; at the end of the stage, BatchNorm statistics from target batches."""

    name = "adabn"
    Options = AdaBNOptions
    options: AdaBNOptions

    def forward(self, batch_s: dict[str, Tensor], batch_t: dict[str, Tensor] | None) -> StepOutputs:
        """Source batch only: training is exactly source-only (target batches are not forwarded)."""
        return super().forward(batch_s, None)

    def generator_loss(
        self, out: StepOutputs, batch_s: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, float]]:
        return self.source_loss(out, batch_s)

    def on_stage_end(self, target_batches: Iterable[dict[str, Tensor]]) -> dict[str, float]:
        """Target BatchNorm statistics (module docstring); logs ``adabn_batches``."""
        seg = self.ctx.segmenter  # the bare network: no DDP buffer broadcast while averaging
        text = self.ctx.text_target
        used = recompute_batchnorm_statistics(seg, target_batches, lambda x: seg(x, text), self.options.bn_batches)
        return {"adabn_batches": float(used)}
