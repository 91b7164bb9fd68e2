"""Oracle: supervised training on the TARGET domain's labels -- an upper bound, never a UDA result.

Paper: the "supervised on target" upper bound that the cross-modality UDA papers report next to
their methods (e.g. SIFA, Chen et al., IEEE TMI 39(7), 2020; MPSCL, Liu et al., IEEE JBHI 26(2),
2022), here with this project's network and loss so that it bounds the other methods exactly.

Loss: L_seg (class-weighted cross-entropy + Dice on the main head, ``aux_weight`` x the same on the
auxiliary head; docs/method.md, Losses 1) on the labelled TARGET batch, fused with the
target-modality text. The source batch that the engine draws is not used.

Defaults: ``aux_weight`` 0.1 (the only option). The engine gives this method labelled target
batches (:attr:`~tcsa_uda.methods.UDAMethod.uses_target_labels`, no other method gets them) and
records in every checkpoint of the run that it is an upper bound (``upper_bound``), which
``evaluate``, ``report`` and ``bench`` print under their tables.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from tcsa_uda.methods.base import StepOutputs, UDAMethod
from tcsa_uda.methods.registry import register_method
from tcsa_uda.models import upsample_logits


@register_method
class Oracle(UDAMethod):
    """L_seg on the labelled target batch (an upper bound)."""

    name = "oracle"
    uses_target_labels: ClassVar[bool] = True

    def training_step(
        self,
        batch_s: dict[str, Tensor],
        batch_t: dict[str, Tensor] | None,
        iteration: int,
        optimizers: dict[str, torch.optim.Optimizer],
    ) -> dict[str, float]:
        """One iteration of supervised training on the labelled target batch, in the supervised slot.

        Raises:
            RuntimeError: no labelled target batch (the engine honours ``uses_target_labels``).
        """
        if batch_t is None or "label" not in batch_t:
            raise RuntimeError("oracle: needs labelled target batches (uses_target_labels); none were given.")
        return super().training_step(batch_t, None, iteration, optimizers)

    def forward(self, batch_s: dict[str, Tensor], batch_t: dict[str, Tensor] | None) -> StepOutputs:
        """The supervised batch (the labelled TARGET batch, see :meth:`training_step`) with the target text."""
        x = batch_s["image"]
        out = self.ctx.model(x, self.ctx.text_target)
        size = tuple(x.shape[-2:])
        return StepOutputs(out, None, upsample_logits(out.main, size), upsample_logits(out.aux, size), None, None)

    def generator_loss(
        self, out: StepOutputs, batch_s: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, float]]:
        return self.source_loss(out, batch_s)  # batch_s is the labelled target batch here
