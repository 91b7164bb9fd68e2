"""TCSA-UDA stage 2: text-driven cross-semantic alignment (Maurya et al., arXiv 2511.05782; docs/method.md).

Total generator loss:
``L_seg + L_adv(entropy maps) + [aligned] (L_proto + w(it) (L_vl_source + L_vl_target))``
- L_proto: EMA class centres on F_hi of source (ground truth) and target (argmax pseudo-labels)
  pulled together.
- L_vl: vision-language covariance cosine loss between per-class F_vis prototypes and the
  projected text embeddings of the SOURCE modality, on the source (ground truth) and the target
  (pseudo-labels); ``w(it) = 1`` unless a weight schedule is chosen.

Fidelity ``paper``: each domain has its own memory bank; alignment runs from iteration
``align_start + 1`` (1-based; the 101st with the default 100).
Fidelity ``released`` (the authors' code): ONE memory bank shared by the source and the target
calls, updated image by image with the pixel side detached; alignment runs when the 0-based
iteration exceeds ``align_start`` (``i_iter > 100``), i.e. from the 102nd iteration; the
non-backbone optimiser is left unstepped (see base.UDAMethod.stepped_optimizers).

Ablations are switches of this one method (:attr:`TCSA.ablations`, docs/method.md, Ablations and
variants): ``vl``, ``proto`` and ``adversarial`` switch a term off (it is then neither computed nor
logged). The VL options (``vl_text``, ``vl_similarity``, ``vl_features``, ``vl_schedule``) let the
text term carry signal (docs/method.md, Letting the text term carry signal); all are off by default,
so the defaults are the paper recipe.

VL diagnostics, computed only on the iterations the engine logs (:meth:`UDAMethod.is_logged`):
``vl_grad_f_vis``, ``vl_grad_embed``, ``vl_grad_text``, the L2 norms of the gradient that the
weighted VL term alone sends to the feature maps it reads, to the visual embedding head's
parameters and to the text projection's parameters (``torch.autograd.grad`` of that term, the
graph kept for the real backward); ``vl_{s,t}_{sv,st}_{std,min,max}``, the spread of the
off-diagonal entries of the similarity matrices ``S_v`` and ``S_t`` of the source (``s``) and the
target (``t``) call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Final, Literal

import torch
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.losses import (
    SIMILARITY_KINDS,
    PrototypeAlignmentLoss,
    SimilarityKind,
    VLCovarianceLoss,
    off_diagonal_spread,
)
from tcsa_uda.methods.ablation import Ablation
from tcsa_uda.methods.base import StepOutputs
from tcsa_uda.methods.output_adversarial import AdversarialOptions, OutputSpaceAdversarial
from tcsa_uda.methods.registry import register_method

VLText = Literal["projected", "detached", "raw"]
VLFeatures = Literal["post_relu", "pre_relu"]
VLSchedule = Literal["constant", "linear", "cosine"]
VL_TEXTS: Final[tuple[str, ...]] = ("projected", "detached", "raw")
VL_FEATURES: Final[tuple[str, ...]] = ("post_relu", "pre_relu")
VL_SCHEDULES: Final[tuple[str, ...]] = ("constant", "linear", "cosine")

#: gradient-norm diagnostics of the VL term
VL_GRAD_KEYS: Final[tuple[str, ...]] = ("vl_grad_f_vis", "vl_grad_embed", "vl_grad_text")
#: spread of the off-diagonal similarities, per call (s: source, t: target) and matrix
VL_SPREAD_KEYS: Final[tuple[str, ...]] = tuple(
    f"vl_{d}_{m}_{stat}" for d in ("s", "t") for m in ("sv", "st") for stat in ("std", "min", "max")
)
#: every value logged because the VL term is on (``vl_weight`` only with a schedule)
VL_LOG_KEYS: Final[tuple[str, ...]] = ("vl_s", "vl_t", *VL_GRAD_KEYS, *VL_SPREAD_KEYS)
ADV_LOG_KEYS: Final[tuple[str, ...]] = ("adv", "d_main", "d_aux")


@dataclass
class TCSAOptions(AdversarialOptions):
    """Options of ``tcsa`` (the released code's values are the defaults; every switch on, every VL option off).

    Attributes:
        align_start: prototype and VL losses join after this many iterations (100): from the
            101st iteration in ``paper`` fidelity, from the 102nd in ``released`` fidelity (the
            released code's ``i_iter > 100`` on a 0-based counter).
        proto_weight: weight of L_proto (1).
        vl_source_weight: weight of L_vl on the source batch (1).
        vl_target_weight: weight of L_vl on the target batch (1).
        proto_momentum: EMA weight ``m`` of the previous class centre (0.01).
        bank_momentum: EMA weight ``lambda`` of the VL memory bank (0.5 for MR->CT, 0.9 for CT->MR).
        vl: compute the VL terms (VLCoL); False: the "without VLCoL" ablation (no bank, no ``vl_*`` log).
        proto: compute the prototype alignment; False: the "without prototype alignment" ablation.
        adversarial: compute the stage's adversarial term and train its discriminators; False: the
            "without the stage-2 adversarial term" ablation.
        vl_text: the text side of the VL loss: ``projected`` (the paper, ``T = ReLU(Linear(E))`` with
            gradient), ``detached`` (``T`` with a stop-gradient: a fixed anchor for the image side,
            though ``T`` still moves with the segmentation loss), ``raw`` (the frozen text embeddings
            ``E`` themselves, a fully fixed anchor; only the ``C x C`` matrices are compared).
        vl_similarity: the matrices compared: ``cosine`` (the paper), ``centred`` (Gram after
            subtracting the class mean, a covariance) or ``correlation`` (centred, unit diagonal).
        vl_features: prototypes from ``post_relu`` ``F_vis`` (the paper) or ``pre_relu``, the
            embedding head's map before its final ReLU (may be negative).
        vl_schedule: weight ``w(it)`` of both VL terms: ``constant`` 1, ``linear`` ramp from
            ``1 / vl_ramp`` to 1 over ``vl_ramp`` aligned iterations, ``cosine`` ramp
            ``(1 - cos(pi r / vl_ramp)) / 2``; ``r`` counts aligned iterations from 1.
        vl_ramp: length of the ramp in iterations (>= 1 with ``linear`` or ``cosine``, 0 otherwise).
    """

    align_start: int = 100
    proto_weight: float = 1.0
    vl_source_weight: float = 1.0
    vl_target_weight: float = 1.0
    proto_momentum: float = 0.01
    bank_momentum: float = 0.5
    vl: bool = True
    proto: bool = True
    adversarial: bool = True
    vl_text: VLText = "projected"
    vl_similarity: SimilarityKind = "cosine"
    vl_features: VLFeatures = "post_relu"
    vl_schedule: VLSchedule = "constant"
    vl_ramp: int = 0

    def __post_init__(self) -> None:
        if self.align_start < 0:
            raise ConfigError(f"tcsa option align_start: expected >= 0, found {self.align_start}.")
        for name in ("proto_weight", "vl_source_weight", "vl_target_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"tcsa option {name}: expected >= 0, found {getattr(self, name)}.")
        for name, allowed in (
            ("vl_text", VL_TEXTS),
            ("vl_similarity", SIMILARITY_KINDS),
            ("vl_features", VL_FEATURES),
            ("vl_schedule", VL_SCHEDULES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"tcsa option {name}: expected one of {', '.join(allowed)}, found {getattr(self, name)!r}."
                )
        if self.vl_schedule == "constant" and self.vl_ramp != 0:
            raise ConfigError(
                f"tcsa option vl_ramp: expected 0 with vl_schedule constant (set vl_schedule to linear or cosine "
                f"to ramp), found {self.vl_ramp}."
            )
        if self.vl_schedule != "constant" and self.vl_ramp < 1:
            raise ConfigError(
                f"tcsa option vl_ramp: expected >= 1 iterations with vl_schedule {self.vl_schedule}, "
                f"found {self.vl_ramp}."
            )


@register_method
class TCSA(OutputSpaceAdversarial):
    """TCSA-UDA's second stage; its first stage is the ``adaoutput`` method."""

    name = "tcsa"
    Options = TCSAOptions
    adversarial_input = "entropy"
    progress_keys: ClassVar[tuple[str, ...]] = ("loss", "seg", "adv", "proto", "vl_s", "vl_t")
    smoke_options: ClassVar[dict[str, object]] = {"align_start": 0}
    conditional_log_keys: ClassVar[tuple[str, ...]] = VL_SPREAD_KEYS  # need 2 classes seen by the call
    ablations: ClassVar[tuple[Ablation, ...]] = (
        Ablation("no_vl", "without VLCoL", {"vl": False}, removes=VL_LOG_KEYS),
        Ablation("no_proto", "without prototype alignment", {"proto": False}, removes=("proto",)),
        Ablation("no_adversarial", "without the adversarial term", {"adversarial": False}, removes=ADV_LOG_KEYS),
        Ablation("text_random", "text = fixed random vectors", overrides=("text.encoder=random:0:64",)),
        Ablation("text_onehot", "text = one-hot class vectors", overrides=("text.encoder=onehot",)),
        Ablation("text_shuffle", "shuffled class-to-prompt assignment", overrides=("text.shuffle=true",)),
        Ablation("released", "the authors' released code", overrides=("fidelity=released",)),
        Ablation("vl_detached", "text side with a stop-gradient", {"vl_text": "detached"}),
        Ablation("vl_raw", "frozen text embeddings as the anchor", {"vl_text": "raw"}),
        Ablation("vl_centred", "centred (covariance) matrices", {"vl_similarity": "centred"}),
        Ablation("vl_correlation", "correlation matrices", {"vl_similarity": "correlation"}),
        Ablation("vl_pre_relu", "prototypes before the final ReLU", {"vl_features": "pre_relu"}),
        Ablation("vl_linear", "linear VL weight ramp", {"vl_schedule": "linear", "vl_ramp": 100}, adds=("vl_weight",)),
        Ablation("vl_cosine", "cosine VL weight ramp", {"vl_schedule": "cosine", "vl_ramp": 100}, adds=("vl_weight",)),
    )
    options: TCSAOptions

    def adversarial_enabled(self) -> bool:
        return self.options.adversarial

    def build_extra_modules(self) -> nn.ModuleDict:
        c = self.ctx.num_classes
        seg = self.ctx.segmenter
        hi_dim = int(seg.hi_channels)
        emb_dim = int(seg.embed_dim)
        opt = self.options
        mode = self.ctx.fidelity
        modules: dict[str, nn.Module] = {}
        if opt.proto:
            modules["proto"] = PrototypeAlignmentLoss(c, hi_dim, momentum=opt.proto_momentum)
        if opt.vl:
            sim = opt.vl_similarity
            names = ("vl",) if mode == "released" else ("vl_source", "vl_target")  # released: one shared bank
            for key in names:
                modules[key] = VLCovarianceLoss(c, emb_dim, bank_momentum=opt.bank_momentum, mode=mode, similarity=sim)
        return nn.ModuleDict(modules)

    def first_aligned_iteration(self) -> int:
        """The first (1-based) iteration with the prototype and VL losses (module docstring)."""
        return self.options.align_start + (2 if self.ctx.fidelity == "released" else 1)

    def vl_weight(self, iteration: int) -> float:
        """``w(it)`` of the VL terms (:class:`TCSAOptions` ``vl_schedule``); 1 when constant."""
        opt = self.options
        if opt.vl_schedule == "constant":
            return 1.0
        r = min(1.0, (iteration - self.first_aligned_iteration() + 1) / opt.vl_ramp)
        return r if opt.vl_schedule == "linear" else 0.5 * (1.0 - math.cos(math.pi * r))

    def vl_text(self) -> Tensor:
        """The text side of the VL loss, ``(C, E)`` or, for ``vl_text: raw``, ``(C, D_text)`` (source modality [R])."""
        choice = self.options.vl_text
        if choice == "raw":
            return self.ctx.text_source
        text = self.ctx.segmenter.project_text(self.ctx.text_source)
        return text.detach() if choice == "detached" else text

    def generator_loss(
        self, out: StepOutputs, batch_s: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, float]]:
        loss, logs = super().generator_loss(out, batch_s, iteration)
        opt = self.options
        if iteration < self.first_aligned_iteration() or out.target is None or out.main_t is None:
            return loss, logs
        if not (opt.proto or opt.vl):
            return loss, logs
        y_s = batch_s["label"]
        pseudo_t = out.main_t.detach().argmax(dim=1)  # (B, H, W), no confidence threshold [R]
        terms: list[Tensor] = []
        if opt.proto:
            proto = self.extra["proto"](out.source.f_hi, y_s, out.target.f_hi, pseudo_t)
            terms.append(opt.proto_weight * proto)
            logs["proto"] = float(proto.detach())
        if opt.vl:
            vl_terms, vl_logs = self._vl_terms(out, y_s, pseudo_t, iteration)
            terms += vl_terms
            logs.update(vl_logs)
        align = terms[0]
        for term in terms[1:]:
            align = align + term
        return loss + align, logs

    def _features(self, out: StepOutputs) -> tuple[Tensor, Tensor]:
        """The source and target maps the VL prototypes are taken from (``vl_features``)."""
        if out.target is None:
            raise RuntimeError("tcsa: the VL loss needs a target batch; none was given.")
        if self.options.vl_features == "post_relu":
            return out.source.f_vis, out.target.f_vis
        f_s, f_t = out.source.f_vis_pre, out.target.f_vis_pre
        if f_s is None or f_t is None:
            raise RuntimeError("tcsa option vl_features=pre_relu: the segmenter did not return f_vis_pre.")
        return f_s, f_t

    def _vl_terms(
        self, out: StepOutputs, y_s: Tensor, pseudo_t: Tensor, iteration: int
    ) -> tuple[list[Tensor], dict[str, float]]:
        """The two weighted VL terms and their logged values (diagnostics on logged iterations)."""
        opt = self.options
        diagnose = self.is_logged(iteration)
        text = self.vl_text()
        f_s, f_t = self._features(out)
        shared = "vl" in self.extra
        logs: dict[str, float] = {}
        vl_s = self.extra["vl" if shared else "vl_source"](f_s, y_s, text)
        if diagnose:
            logs.update(_spread("s", self.extra["vl" if shared else "vl_source"]))
        vl_t = self.extra["vl" if shared else "vl_target"](f_t, pseudo_t, text)
        if diagnose:
            logs.update(_spread("t", self.extra["vl" if shared else "vl_target"]))
        w = self.vl_weight(iteration)
        terms = [(w * opt.vl_source_weight) * vl_s, (w * opt.vl_target_weight) * vl_t]
        logs.update(vl_s=float(vl_s.detach()), vl_t=float(vl_t.detach()))
        if opt.vl_schedule != "constant":
            logs["vl_weight"] = w
        if diagnose:
            logs.update(self.vl_gradient_norms(terms[0] + terms[1], [f_s, f_t]))
        return terms, logs

    def vl_gradient_norms(self, vl: Tensor, features: list[Tensor]) -> dict[str, float]:
        """L2 norms of the gradient of the weighted VL term ``vl`` alone (module docstring).

        ``torch.autograd.grad`` with ``retain_graph=True``: no ``.grad`` is touched and the graph
        stays for the iteration's backward. A tensor the term does not reach counts 0.

        Args:
            vl: the weighted VL term, a scalar.
            features: the maps the prototypes were taken from (source and target ``F_vis``).

        Returns:
            ``{"vl_grad_f_vis": ..., "vl_grad_embed": ..., "vl_grad_text": ...}``.
        """
        seg = self.ctx.segmenter
        groups: dict[str, list[Tensor]] = {
            "vl_grad_f_vis": [f for f in features if f.requires_grad],
            "vl_grad_embed": [p for p in seg.embed_head.parameters() if p.requires_grad],
            "vl_grad_text": [p for p in seg.text_proj.parameters() if p.requires_grad],
        }
        flat = [t for ts in groups.values() for t in ts]
        if not vl.requires_grad or not flat:
            return dict.fromkeys(groups, 0.0)
        grads = torch.autograd.grad(vl, flat, retain_graph=True, allow_unused=True)
        out: dict[str, float] = {}
        i = 0
        for key, tensors in groups.items():
            sq = sum(float(g.detach().float().pow(2).sum()) for g in grads[i : i + len(tensors)] if g is not None)
            out[key] = math.sqrt(sq)
            i += len(tensors)
        return out


def _spread(domain: str, loss: nn.Module) -> dict[str, float]:
    """``vl_<domain>_{sv,st}_{std,min,max}`` from the last call of ``loss`` (nothing while < 2 classes are seen)."""
    pair = loss.last_similarities if isinstance(loss, VLCovarianceLoss) else None
    if pair is None:
        return {}
    out: dict[str, float] = {}
    for name, sim in zip(("sv", "st"), pair, strict=True):
        for stat, value in off_diagonal_spread(sim).items():
            out[f"vl_{domain}_{name}_{stat}"] = value
    return out
