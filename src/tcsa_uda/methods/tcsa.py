"""TCSA-UDA stage 2: text-driven cross-semantic alignment (Maurya et al., arXiv 2511.05782; docs/method.md).

Total generator loss:
``L_seg + L_adv(entropy maps) + [aligned] (L_proto + L_vl_source + L_vl_target)``
- L_proto: EMA class centres on F_hi of source (ground truth) and target (argmax pseudo-labels)
  pulled together.
- L_vl: vision-language covariance cosine loss between per-class F_vis prototypes and the
  projected text embeddings of the SOURCE modality, on the source (ground truth) and the target
  (pseudo-labels).

Fidelity ``paper``: each domain has its own memory bank; alignment runs from iteration
``align_start + 1`` (1-based; the 101st with the default 100).
Fidelity ``released`` (the authors' code): ONE memory bank shared by the source and the target
calls, updated image by image with the pixel side detached; alignment runs when the 0-based
iteration exceeds ``align_start`` (``i_iter > 100``), i.e. from the 102nd iteration; the
non-backbone optimiser is left unstepped (see base.UDAMethod.stepped_optimizers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.losses import PrototypeAlignmentLoss, VLCovarianceLoss
from tcsa_uda.methods.base import StepOutputs
from tcsa_uda.methods.output_adversarial import AdversarialOptions, OutputSpaceAdversarial
from tcsa_uda.methods.registry import register_method


@dataclass
class TCSAOptions(AdversarialOptions):
    """Options of ``tcsa`` (the released code's values are the defaults).

    Attributes:
        align_start: prototype and VL losses join after this many iterations (100): from the
            101st iteration in ``paper`` fidelity, from the 102nd in ``released`` fidelity (the
            released code's ``i_iter > 100`` on a 0-based counter).
        proto_weight: weight of L_proto (1).
        vl_source_weight: weight of L_vl on the source batch (1).
        vl_target_weight: weight of L_vl on the target batch (1).
        proto_momentum: EMA weight ``m`` of the previous class centre (0.01).
        bank_momentum: EMA weight ``lambda`` of the VL memory bank (0.5 for MR->CT, 0.9 for CT->MR).
    """

    align_start: int = 100
    proto_weight: float = 1.0
    vl_source_weight: float = 1.0
    vl_target_weight: float = 1.0
    proto_momentum: float = 0.01
    bank_momentum: float = 0.5

    def __post_init__(self) -> None:
        if self.align_start < 0:
            raise ConfigError(f"tcsa option align_start: expected >= 0, found {self.align_start}.")


@register_method
class TCSA(OutputSpaceAdversarial):
    """TCSA-UDA's second stage; its first stage is the ``adaoutput`` method."""

    name = "tcsa"
    Options = TCSAOptions
    adversarial_input = "entropy"
    progress_keys: ClassVar[tuple[str, ...]] = ("loss", "seg", "adv", "proto", "vl_s", "vl_t")
    options: TCSAOptions

    def build_extra_modules(self) -> nn.ModuleDict:
        c = self.ctx.num_classes
        seg = self.ctx.segmenter
        hi_dim = int(seg.hi_channels)
        emb_dim = int(seg.embed_dim)
        opt = self.options
        mode = self.ctx.fidelity
        modules: dict[str, nn.Module] = {"proto": PrototypeAlignmentLoss(c, hi_dim, momentum=opt.proto_momentum)}
        if mode == "released":  # one bank shared by the source and the target calls
            modules["vl"] = VLCovarianceLoss(c, emb_dim, bank_momentum=opt.bank_momentum, mode=mode)
        else:
            modules["vl_source"] = VLCovarianceLoss(c, emb_dim, bank_momentum=opt.bank_momentum, mode=mode)
            modules["vl_target"] = VLCovarianceLoss(c, emb_dim, bank_momentum=opt.bank_momentum, mode=mode)
        return nn.ModuleDict(modules)

    def first_aligned_iteration(self) -> int:
        """The first (1-based) iteration with the prototype and VL losses (module docstring)."""
        return self.options.align_start + (2 if self.ctx.fidelity == "released" else 1)

    def generator_loss(
        self, out: StepOutputs, batch_s: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, float]]:
        loss, logs = super().generator_loss(out, batch_s, iteration)
        opt = self.options
        if iteration < self.first_aligned_iteration() or out.target is None or out.main_t is None:
            return loss, logs
        y_s = batch_s["label"]
        pseudo_t = out.main_t.detach().argmax(dim=1)  # (B, H, W), no confidence threshold [R]
        proto = self.extra["proto"](out.source.f_hi, y_s, out.target.f_hi, pseudo_t)
        text = self.ctx.segmenter.project_text(self.ctx.text_source)  # (C, 256), source modality [R]
        shared = "vl" in self.extra
        vl_s = self.extra["vl" if shared else "vl_source"](out.source.f_vis, y_s, text)
        vl_t = self.extra["vl" if shared else "vl_target"](out.target.f_vis, pseudo_t, text)
        align = opt.proto_weight * proto + opt.vl_source_weight * vl_s + opt.vl_target_weight * vl_t
        logs.update({"proto": float(proto.detach()), "vl_s": float(vl_s.detach()), "vl_t": float(vl_t.detach())})
        return loss + align, logs
