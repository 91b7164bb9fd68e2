"""MinEnt: direct entropy minimisation on the target (Vu et al., ADVENT, CVPR 2019, section 3.1).

No discriminator: the segmentation network is trained with the source segmentation loss plus
the mean normalised entropy of its target predictions (main and auxiliary heads), which pushes
target predictions towards confident (low-entropy) ones as on the source. Weights:
``loss.ent_main`` (ADVENT's lambda_ent = 0.001) and ``loss.ent_aux``.
"""

from __future__ import annotations

from torch import Tensor

from tcsa_uda.losses import entropy_loss
from tcsa_uda.methods.base import StepOutputs, UDAMethod
from tcsa_uda.methods.registry import register_method


@register_method
class MinEnt(UDAMethod):
    """L_seg(source) + ent_main * H(main_t) + ent_aux * H(aux_t)."""

    name = "minent"

    def generator_loss(
        self, out: StepOutputs, batch_s: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, float]]:
        w = self.ctx.loss
        seg, logs = self.source_loss(out, batch_s)
        main_t, aux_t = out.target_logits()
        ent_main, ent_aux = entropy_loss(main_t), entropy_loss(aux_t)
        ent = w.ent_main * ent_main + w.ent_aux * ent_aux
        logs.update(ent=float(ent.detach()), ent_main=float(ent_main.detach()), ent_aux=float(ent_aux.detach()))
        return seg + ent, logs
