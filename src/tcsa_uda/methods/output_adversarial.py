"""Output-space adversarial alignment (AdaptSegNet's multi-level output space; ADVENT's entropy maps).

``adaoutput`` (Tsai et al., CVPR 2018) feeds softmax maps to two PatchGAN discriminators, one on
the main and one on the auxiliary output; it is also stage 1 (warm-up) of TCSA-UDA (docs/method.md,
Training). ``advent`` (Vu et al., CVPR 2019) feeds weighted self-information maps instead, the
adversarial input of TCSA-UDA's stage 2.

In ``released`` fidelity the discriminators are the released code's BatchNorm PatchGANs
(:func:`~tcsa_uda.models.discriminator.build_discriminator` ``norm="batch"``) and the entropy map
is its ``-p log2(p + 1e-7) / log2(C)`` (docs/method.md, Paper vs released fidelity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from tcsa_uda.losses import (
    discriminator_input,
    discriminator_loss,
    generator_adversarial_loss,
)
from tcsa_uda.losses.adversarial import DiscriminatorInput
from tcsa_uda.methods.base import MethodOptions, StepOutputs, UDAMethod
from tcsa_uda.methods.registry import register_method
from tcsa_uda.models import build_discriminator


@dataclass
class AdversarialOptions(MethodOptions):
    """Options of the output-space adversarial methods.

    Attributes:
        adv_main: generator weight of the main discriminator's term (0.003 in the released code).
        adv_aux: generator weight of the auxiliary discriminator's term (0.00002 in the released code).
    """

    adv_main: float = 0.003
    adv_aux: float = 0.00002


class OutputSpaceAdversarial(UDAMethod):
    """L_seg + output-space adversarial loss on the main and auxiliary predictions."""

    Options = AdversarialOptions
    adversarial_input: ClassVar[DiscriminatorInput] = "softmax"
    progress_keys: ClassVar[tuple[str, ...]] = ("loss", "seg", "adv")
    options: AdversarialOptions

    def adversarial_enabled(self) -> bool:
        """Whether the adversarial term is computed (a subclass may switch it off: ``tcsa``'s ``adversarial``).

        When False, no discriminator is built or trained and ``adv``, ``d_main``, ``d_aux`` are not logged.
        """
        return True

    def build_discriminators(self) -> nn.ModuleDict:
        if not self.adversarial_enabled():
            return nn.ModuleDict()
        c = self.ctx.num_classes
        w = self.ctx.disc_width
        norm = self.discriminator_norm()
        return nn.ModuleDict({"main": build_discriminator(c, w, norm), "aux": build_discriminator(c, w, norm)})

    def discriminator_norm(self) -> str:
        """``batch`` (the released code's BatchNorm PatchGAN) in ``released`` fidelity, else ``none``."""
        return "batch" if self.ctx.fidelity == "released" else "none"

    def adversarial_loss(self, out: StepOutputs) -> Tensor:
        """Generator side: target predictions should be classified as source."""
        main_t, aux_t = out.target_logits()
        kind = self.adversarial_input
        d = self.disc
        return generator_adversarial_loss(
            d["main"](discriminator_input(main_t, kind, self.ctx.fidelity)),
            d["aux"](discriminator_input(aux_t, kind, self.ctx.fidelity)),
            w_main=self.options.adv_main,
            w_aux=self.options.adv_aux,
        )

    def generator_loss(
        self, out: StepOutputs, batch_s: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, float]]:
        seg, logs = self.source_loss(out, batch_s)
        if not self.adversarial_enabled():
            return seg, logs
        adv = self.adversarial_loss(out)
        return seg + adv, {**logs, "adv": float(adv.detach())}

    def discriminator_loss(self, out: StepOutputs) -> tuple[Tensor | None, dict[str, float]]:
        if not self.adversarial_enabled():
            return None, {}
        main_t, aux_t = out.target_logits()
        kind = self.adversarial_input
        mode = self.ctx.fidelity
        d = self.disc
        losses: list[Tensor] = []
        logs: dict[str, float] = {}
        for key, s, t in (("main", out.main_s, main_t), ("aux", out.aux_s, aux_t)):
            # Source and target maps go through the discriminator in separate calls (BatchNorm
            # statistics of one domain each in released fidelity).
            loss = discriminator_loss(
                d[key](discriminator_input(s.detach(), kind, mode)), d[key](discriminator_input(t.detach(), kind, mode))
            )
            logs[f"d_{key}"] = float(loss.detach())
            losses.append(loss)
        return losses[0] + losses[1], logs


@register_method
class AdaOutput(OutputSpaceAdversarial):
    """AdaptSegNet-style output-space alignment on softmax maps (TCSA-UDA stage 1)."""

    name = "adaoutput"
    adversarial_input = "softmax"


@register_method
class Advent(OutputSpaceAdversarial):
    """ADVENT-style adversarial alignment of weighted self-information (entropy) maps."""

    name = "advent"
    adversarial_input = "entropy"
