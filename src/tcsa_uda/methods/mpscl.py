"""MPSCL: margin-preserving self-paced contrastive learning on top of ADVENT.

Paper: Z. Liu, Z. Zhu, S. Zheng, Y. Liu, J. Zhou, Y. Zhao, "Margin Preserving Self-paced
Contrastive Learning Towards Domain Adaptation for Medical Image Segmentation", IEEE JBHI
26(2):638-647, 2022 (doi 10.1109/JBHI.2022.3140853, arXiv 2103.08454). Read from its released code
(github.com/TFboys-lzz/MPSCL, commit bb58bde); nothing copied.

Recipe: an ADVENT warm-up stage (method ``advent``), then this method with ``init: previous``; the
adversarial term of ADVENT stays on. Per iteration, on layer-4 features ``F_hi`` (no projection head):

1. Source class centres (:class:`~tcsa_uda.losses.SourceClassCenters`): EMA of the detached per-class
   means of the source features (ground truth nearest-downsampled), ``c <- m c + (1 - m) mu`` with
   ``m = center_momentum``, background included, updated before the losses; no gradient.
2. Target pseudo-labels (:func:`~tcsa_uda.losses.cosine_pseudo_labels`): the most cosine-similar
   centre; a pixel is used when its top-1 minus top-2 cosine exceeds the threshold.
3. Margin contrastive loss (:func:`~tcsa_uda.losses.margin_contrastive_loss`) of every source pixel
   (its ground truth, margin ``source_margin``, temperature ``source_temperature``) and of the
   selected target pixels (pseudo-labels, ``target_margin``, ``target_temperature``), each scaled by
   ``T / base_temperature``.

Generator loss: ``L_seg + L_adv(entropy maps) + mpcl_source_weight L_s + mpcl_target_weight L_t``;
discriminators as ``advent``.

Self-paced threshold (``threshold_schedule``): the released code keeps ``selection_threshold``
constant (0.25), the paper's "self-paced" being only implicit (more pixels pass as the features
sharpen); ``constant`` is the default. ``self_paced`` makes the curriculum explicit: the threshold
falls linearly from ``threshold_start`` to ``selection_threshold`` over ``threshold_ramp``
iterations of the stage, so the most confident pixels are used first (logged as ``mpcl_threshold``).

Fidelity: in ``released`` the loss subtracts the released code's two different maxima and adds its
``1e-4`` terms (docs/method.md, Baselines); ``paper`` uses the standard margin softmax.

Defaults are the released MR->CT configuration: weights 1.0 / 0.1, temperatures 1.0 / 1.0 (base
1.0), margins 0.4 / 0.2 rad, centre momentum 0.2, threshold 0.25; the released CT->MR one differs in
``source_temperature: 2.0`` and ``source_margin: 0.2`` (set in ``configs/phantom_ct2mr_mpscl.yaml``).
Centre initialisation: the release loads centres computed offline by the warm-up model (the file is
not produced by its code); here a class's first source batch sets its centre.

Logged: ``mpcl_s``, ``mpcl_t`` (unweighted), ``mpcl_t_selected`` (fraction of target pixels used),
``mpcl_threshold`` (with ``self_paced``), besides ADVENT's ``adv``, ``d_main``, ``d_aux``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Final, Literal

from torch import Tensor, nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.losses import SourceClassCenters, cosine_pseudo_labels, downsample_labels, margin_contrastive_loss
from tcsa_uda.methods.ablation import Ablation
from tcsa_uda.methods.base import StepOutputs
from tcsa_uda.methods.output_adversarial import Advent, AdversarialOptions
from tcsa_uda.methods.registry import register_method

ThresholdSchedule = Literal["constant", "self_paced"]
THRESHOLD_SCHEDULES: Final[tuple[str, ...]] = ("constant", "self_paced")


@dataclass
class MPSCLOptions(AdversarialOptions):
    """Options of ``mpscl`` (``adv_main``/``adv_aux`` inherited from ADVENT; released MR->CT values).

    Attributes:
        mpcl_source_weight: weight of the source contrastive loss (``LAMBDA_MPCL_SRC`` 1.0).
        mpcl_target_weight: weight of the target contrastive loss (``LAMBDA_MPCL_TRG`` 0.1).
        source_temperature: ``T`` of the source loss (1.0; released CT->MR: 2.0).
        target_temperature: ``T`` of the target loss (1.0).
        base_temperature: ``T_base``; each loss is scaled by ``T / T_base`` (1.0).
        source_margin: additive angular margin of the source loss, radians (0.4; CT->MR: 0.2).
        target_margin: additive angular margin of the target loss, radians (0.2).
        center_momentum: weight of the previous source centre in the EMA (0.2).
        selection_threshold: a target pixel is used when top-1 minus top-2 cosine exceeds this
            (0.25); the final threshold of ``self_paced``.
        threshold_schedule: ``constant`` (the released code) or ``self_paced`` (linear fall from
            ``threshold_start`` to ``selection_threshold`` over ``threshold_ramp`` iterations).
        threshold_start: the ``self_paced`` threshold at the stage's first iteration.
        threshold_ramp: the ``self_paced`` ramp length in iterations (>= 1; 0 with ``constant``).
    """

    mpcl_source_weight: float = 1.0
    mpcl_target_weight: float = 0.1
    source_temperature: float = 1.0
    target_temperature: float = 1.0
    base_temperature: float = 1.0
    source_margin: float = 0.4
    target_margin: float = 0.2
    center_momentum: float = 0.2
    selection_threshold: float = 0.25
    threshold_schedule: ThresholdSchedule = "constant"
    threshold_start: float = 0.5
    threshold_ramp: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("mpcl_source_weight", self.mpcl_source_weight >= 0, ">= 0"),
            ("mpcl_target_weight", self.mpcl_target_weight >= 0, ">= 0"),
            ("source_temperature", self.source_temperature > 0, "> 0"),
            ("target_temperature", self.target_temperature > 0, "> 0"),
            ("base_temperature", self.base_temperature > 0, "> 0"),
            ("source_margin", 0 <= self.source_margin < math.pi, "in [0, pi)"),
            ("target_margin", 0 <= self.target_margin < math.pi, "in [0, pi)"),
            ("center_momentum", 0 <= self.center_momentum <= 1, "in [0, 1]"),
            ("selection_threshold", 0 <= self.selection_threshold <= 2, "in [0, 2] (a cosine gap)"),
            ("threshold_start", 0 <= self.threshold_start <= 2, "in [0, 2] (a cosine gap)"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"mpscl option {name}: expected {expected}, found {getattr(self, name)}.")
        if self.threshold_schedule not in THRESHOLD_SCHEDULES:
            raise ConfigError(
                f"mpscl option threshold_schedule: expected one of {', '.join(THRESHOLD_SCHEDULES)}, "
                f"found {self.threshold_schedule!r}."
            )
        if self.threshold_schedule == "constant" and self.threshold_ramp != 0:
            raise ConfigError(
                f"mpscl option threshold_ramp: expected 0 with threshold_schedule constant, "
                f"found {self.threshold_ramp}."
            )
        if self.threshold_schedule == "self_paced" and self.threshold_ramp < 1:
            raise ConfigError(
                f"mpscl option threshold_ramp: expected >= 1 with threshold_schedule self_paced, "
                f"found {self.threshold_ramp}."
            )


@register_method
class MPSCL(Advent):
    """ADVENT + margin-preserving contrastive losses on source and selected target pixels."""

    name = "mpscl"
    Options = MPSCLOptions
    progress_keys: ClassVar[tuple[str, ...]] = ("loss", "seg", "adv", "mpcl_s", "mpcl_t")
    ablations: ClassVar[tuple[Ablation, ...]] = (
        Ablation(
            "self_paced",
            "explicit self-paced threshold",
            {"threshold_schedule": "self_paced", "threshold_ramp": 100},
            adds=("mpcl_threshold",),
        ),
        Ablation("released", "the released loss (two maxima, 1e-4 terms)", overrides=("fidelity=released",)),
    )
    options: MPSCLOptions

    def build_extra_modules(self) -> nn.ModuleDict:
        seg = self.ctx.segmenter
        centers = SourceClassCenters(self.ctx.num_classes, int(seg.hi_channels), self.options.center_momentum)
        return nn.ModuleDict({"centers": centers})

    @property
    def centers(self) -> SourceClassCenters:
        """The EMA source class centres (method state, saved in checkpoints)."""
        module = self.extra["centers"]
        if not isinstance(module, SourceClassCenters):
            raise TypeError(f"mpscl: expected SourceClassCenters in extra['centers'], found {type(module).__name__}.")
        return module

    def threshold(self, iteration: int) -> float:
        """The selection threshold at a (1-based) iteration of the stage (``threshold_schedule``)."""
        o = self.options
        if o.threshold_schedule == "constant":
            return o.selection_threshold
        r = min(1.0, (iteration - 1) / o.threshold_ramp)
        return o.threshold_start + r * (o.selection_threshold - o.threshold_start)

    def generator_loss(
        self, out: StepOutputs, batch_s: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, float]]:
        loss, logs = super().generator_loss(out, batch_s, iteration)  # L_seg + L_adv (entropy maps)
        if out.target is None:
            raise RuntimeError("mpscl: needs a target batch; none was given.")
        o = self.options
        mode = self.ctx.fidelity
        f_s, f_t = out.source.f_hi, out.target.f_hi  # (B, D, h, w)
        y_s = downsample_labels(batch_s["label"], (f_s.shape[2], f_s.shape[3]))  # (B, h, w)
        centers = self.centers.update(f_s, y_s)  # (C, D), no gradient
        th = self.threshold(iteration)
        pseudo, mask = cosine_pseudo_labels(f_t, centers, th)
        l_s = margin_contrastive_loss(
            f_s, y_s, centers, o.source_margin, o.source_temperature, o.base_temperature, mode=mode
        )
        l_t = margin_contrastive_loss(
            f_t, pseudo, centers, o.target_margin, o.target_temperature, o.base_temperature, mask=mask, mode=mode
        )
        logs.update(mpcl_s=float(l_s.detach()), mpcl_t=float(l_t.detach()), mpcl_t_selected=float(mask.float().mean()))
        if o.threshold_schedule != "constant":
            logs["mpcl_threshold"] = th
        return loss + o.mpcl_source_weight * l_s + o.mpcl_target_weight * l_t, logs
