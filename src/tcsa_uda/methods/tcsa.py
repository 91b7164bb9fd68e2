"""TCSA-UDA stage 2: text-driven cross-semantic alignment (METHOD.md; arXiv 2511.05782).

Total generator loss:
``L_seg + L_adv(entropy maps) + [iteration > align_start] (L_proto + L_vl_source + L_vl_target)``
- L_proto: EMA class centres on F_hi of source (ground truth) and target (argmax pseudo-labels)
  pulled together.
- L_vl: vision-language covariance cosine loss between per-class F_vis prototypes and the
  projected text embeddings of the SOURCE modality, on the source (ground truth) and the target
  (pseudo-labels), each with its own memory bank.
Fidelity ``released`` detaches the pixel side of L_vl and leaves the non-backbone optimiser
unstepped (see base.UDAMethod.stepped_optimizers).
"""

from __future__ import annotations

from torch import Tensor, nn

from tcsa_uda.losses import PrototypeAlignmentLoss, VLCovarianceLoss
from tcsa_uda.methods.base import StepOutputs
from tcsa_uda.methods.output_adversarial import OutputSpaceAdversarial
from tcsa_uda.methods.registry import register_method


@register_method
class TCSA(OutputSpaceAdversarial):
    """TCSA-UDA's second stage; its first stage is the ``adaoutput`` method."""

    name = "tcsa"
    adversarial_input = "entropy"

    def build_extra_modules(self) -> nn.ModuleDict:
        c = self.ctx.num_classes
        seg = self.ctx.segmenter
        hi_dim = int(seg.hi_channels)
        emb_dim = int(seg.embed_dim)
        lcfg = self.ctx.loss
        mode = self.ctx.fidelity
        return nn.ModuleDict(
            {
                "proto": PrototypeAlignmentLoss(c, hi_dim, momentum=lcfg.proto_momentum),
                "vl_source": VLCovarianceLoss(c, emb_dim, bank_momentum=lcfg.bank_momentum, mode=mode),
                "vl_target": VLCovarianceLoss(c, emb_dim, bank_momentum=lcfg.bank_momentum, mode=mode),
            }
        )

    def generator_loss(
        self, out: StepOutputs, batch_s: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, float]]:
        loss, logs = super().generator_loss(out, batch_s, iteration)
        if iteration <= self.ctx.loss.align_start or out.target is None or out.main_t is None:
            return loss, logs
        lcfg = self.ctx.loss
        y_s = batch_s["label"]
        pseudo_t = out.main_t.detach().argmax(dim=1)  # (B, H, W), no confidence threshold [R]
        proto = self.extra["proto"](out.source.f_hi, y_s, out.target.f_hi, pseudo_t)
        text = self.ctx.segmenter.project_text(self.ctx.text_source)  # (C, 256), source modality [R]
        vl_s = self.extra["vl_source"](out.source.f_vis, y_s, text)
        vl_t = self.extra["vl_target"](out.target.f_vis, pseudo_t, text)
        align = lcfg.proto_weight * proto + lcfg.vl_source_weight * vl_s + lcfg.vl_target_weight * vl_t
        logs.update({"proto": float(proto.detach()), "vl_s": float(vl_s.detach()), "vl_t": float(vl_t.detach())})
        return loss + align, logs
