"""MinEnt: direct entropy minimisation on the target (Vu et al., ADVENT, CVPR 2019, section 3.1).

No discriminator: the segmentation network is trained with the source segmentation loss plus
the mean normalised entropy of its target predictions (main and auxiliary heads), which pushes
target predictions towards confident (low-entropy) ones as on the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tcsa_uda.losses import entropy_loss
from tcsa_uda.methods.base import MethodOptions, StepOutputs, UDAMethod
from tcsa_uda.methods.registry import register_method


@dataclass
class MinEntOptions(MethodOptions):
    """Options of ``minent``.

    Attributes:
        ent_main: weight of the main head's target entropy (ADVENT's lambda_ent = 0.001).
        ent_aux: weight of the auxiliary head's target entropy (0.1 x ``ent_main``, the ratio of
            ``aux_weight``).
    """

    ent_main: float = 0.001
    ent_aux: float = 0.0001


@register_method
class MinEnt(UDAMethod):
    """L_seg(source) + ent_main * H(main_t) + ent_aux * H(aux_t)."""

    name = "minent"
    Options = MinEntOptions
    progress_keys: ClassVar[tuple[str, ...]] = ("loss", "seg", "ent")
    options: MinEntOptions

    def generator_loss(
        self, out: StepOutputs, batch_s: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, float]]:
        w = self.options
        seg, logs = self.source_loss(out, batch_s)
        main_t, aux_t = out.target_logits()
        ent_main, ent_aux = entropy_loss(main_t), entropy_loss(aux_t)
        ent = w.ent_main * ent_main + w.ent_aux * ent_aux
        logs.update(ent=float(ent.detach()), ent_main=float(ent_main.detach()), ent_aux=float(ent_aux.detach()))
        return seg + ent, logs
