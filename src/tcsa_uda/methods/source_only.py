"""Source-only baseline: supervised training on the labelled source domain, no adaptation."""

from __future__ import annotations

from torch import Tensor

from tcsa_uda.methods.base import StepOutputs, UDAMethod
from tcsa_uda.methods.registry import register_method


@register_method
class SourceOnly(UDAMethod):
    """L_seg on the source batch only (docs/method.md, Losses); target images are never read."""

    name = "source_only"
    uses_target = False

    def generator_loss(
        self, out: StepOutputs, batch_s: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, float]]:
        return self.source_loss(out, batch_s)
