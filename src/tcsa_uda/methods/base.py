"""The base class of every adaptation method: one iteration, split into overridable hooks.

A method owns its options (loss weights, momenta, switches: a dataclass declared in the method's
own file), the losses and any extra networks (discriminators) or state (prototype centres, memory
banks) it needs, and tells the engine what to show (:attr:`UDAMethod.progress_keys`) and which
learning rate to log (:meth:`UDAMethod.logged_lr`); the engine owns the loop, the schedule,
checkpoints and logging. A new method is a subclass in its own file that overrides
:meth:`UDAMethod.generator_loss` and, when it trains discriminators,
:meth:`UDAMethod.build_discriminators` and :meth:`UDAMethod.discriminator_loss` (the nnU-Net
"variant overrides one hook" pattern); docs/extending.md walks through one.

One iteration (docs/method.md, Training): forward source and target batches, generator losses
with the discriminators frozen, backward; discriminator losses on detached predictions, backward;
step all optimisers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tcsa_uda.config import from_dict
from tcsa_uda.losses import source_segmentation_loss
from tcsa_uda.methods.ablation import Ablation
from tcsa_uda.models import parameter_groups, upsample_logits
from tcsa_uda.models.segmenter import SegmenterOutput, TCSASegmenter
from tcsa_uda.precision import MixedPrecision
from tcsa_uda.train_config import Fidelity, OptimConfig


@dataclass
class MethodOptions:
    """Options every method has (a method's own options dataclass subclasses this one).

    Attributes:
        aux_weight: weight of the auxiliary head in the source loss L_seg (0.1 in the released code).
    """

    aux_weight: float = 0.1


@dataclass
class MethodContext:
    """Everything a method needs, passed explicitly (no global configuration).

    Attributes:
        model: the segmentation network (possibly wrapped by DDP; ``core`` is the bare module).
        num_classes: C, background included.
        text_source: (C, D_text) frozen embeddings of the source-modality prompts.
        text_target: (C, D_text) frozen embeddings of the target-modality prompts.
        optim: optimiser settings.
        disc_width: first-layer channels of the discriminators.
        wrap: applied to each discriminator for its forward calls (the engine passes a
            DistributedDataParallel wrapper under torchrun); None = used as they are.
        fidelity: ``paper`` or ``released`` (docs/method.md, Fidelity modes).
        device: where the tensors live.
        precision: autocast and loss scaling of the training step (default fp32: none);
            :mod:`tcsa_uda.precision`.
    """

    model: nn.Module
    num_classes: int
    text_source: Tensor
    text_target: Tensor
    optim: OptimConfig
    fidelity: Fidelity
    device: torch.device
    core: nn.Module | None = None
    disc_width: int = 64
    wrap: Callable[[nn.Module], nn.Module] | None = None
    precision: MixedPrecision = field(default_factory=MixedPrecision)

    @property
    def segmenter(self) -> TCSASegmenter:
        """The bare segmentation network (unwrapped from DDP)."""
        net = self.core if self.core is not None else self.model
        if not isinstance(net, TCSASegmenter):
            raise TypeError(f"MethodContext: expected a TCSASegmenter, found {type(net).__name__}.")
        return net


@dataclass
class StepOutputs:
    """Forward results of one iteration, logits upsampled to the label size.

    Attributes:
        source: raw network output on the source batch (feature resolution).
        target: raw network output on the target batch, or None for source-only methods.
        main_s, aux_s: (B, C, H, W) upsampled source logits.
        main_t, aux_t: (B, C, H, W) upsampled target logits (None without target).
    """

    source: SegmenterOutput
    target: SegmenterOutput | None
    main_s: Tensor
    aux_s: Tensor
    main_t: Tensor | None
    aux_t: Tensor | None

    def target_logits(self) -> tuple[Tensor, Tensor]:
        """``(main_t, aux_t)``, for methods that read target images.

        Raises:
            RuntimeError: the iteration had no target batch (an engine bug, not a user error).
        """
        if self.main_t is None or self.aux_t is None:
            raise RuntimeError("this method needs a target batch; none was given.")
        return self.main_t, self.aux_t


class UDAMethod:
    """Base class. Subclasses set ``name`` (and ``Options`` when they have options of their own)
    and override the hooks they need.

    Args:
        ctx: the network, text embeddings and run settings.
        options: this method's options; default ``Options()``. Build them from a config mapping
            with :meth:`parse_options`.
    """

    name: ClassVar[str] = "base"
    #: the options dataclass of this method (subclass :class:`MethodOptions` to add options)
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    #: whether the method reads target images (source-only does not)
    uses_target: ClassVar[bool] = True
    #: whether the method trains on target LABELS (an upper bound such as ``oracle``, never a UDA
    #: result): only then do the engine's target batches carry ``label``, and its checkpoints are flagged
    uses_target_labels: ClassVar[bool] = False
    #: logged values shown in the progress bar (in this order, when present)
    progress_keys: ClassVar[tuple[str, ...]] = ("loss", "seg")
    #: this method's ablation switches and variants (:class:`~tcsa_uda.methods.ablation.Ablation`),
    #: each checked by the generic test of tests/methods/test_ablation.py
    ablations: ClassVar[tuple[Ablation, ...]] = ()
    #: option values under which every term of the method acts from its first iteration (e.g. no
    #: warm-up), used by that test's two-iteration runs; never a default
    smoke_options: ClassVar[Mapping[str, Any]] = {}
    #: logged keys that depend on the data (e.g. need two classes in a batch); that test does not
    #: require them after a switch, but still requires them to be finite and gone when removed
    conditional_log_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: MethodContext, options: MethodOptions | None = None) -> None:
        self.ctx = ctx
        self.options = options if options is not None else self.Options()
        if not isinstance(self.options, self.Options):
            raise TypeError(f"{type(self).__name__}: expected {self.Options.__name__}, found {type(options).__name__}.")
        self.discriminators: nn.ModuleDict = self.build_discriminators().to(ctx.device)
        wrap = ctx.wrap or (lambda m: m)
        #: what forward passes go through (DDP-wrapped under torchrun); state lives in ``discriminators``
        self.disc: dict[str, nn.Module] = {k: wrap(d) for k, d in self.discriminators.items()}
        self.extra: nn.ModuleDict = self.build_extra_modules().to(ctx.device)
        self._log_every, self._log_last = 0, 0  # no logged iteration until the engine says (set_log_schedule)

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], where: str = "options") -> MethodOptions:
        """This method's options from a config mapping (e.g. ``stages[1].options``).

        Raises:
            ConfigError: an unknown option (the valid ones are listed) or a wrong type, naming ``where``.
        """
        return from_dict(cls.Options, data, where)

    # ----------------------------------------------------------------- hooks
    def build_discriminators(self) -> nn.ModuleDict:
        """Discriminators trained by this method (none by default)."""
        return nn.ModuleDict()

    def build_extra_modules(self) -> nn.ModuleDict:
        """Stateful loss modules (prototype centres, memory banks) saved in checkpoints."""
        return nn.ModuleDict()

    def generator_loss(
        self, out: StepOutputs, batch_s: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Loss of the segmentation network for this iteration (discriminators frozen)."""
        raise NotImplementedError

    def source_loss(self, out: StepOutputs, batch_s: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """L_seg on the source batch (docs/method.md, Losses) and its logged parts (``seg``, CE and Dice terms)."""
        seg, parts = source_segmentation_loss(
            out.main_s, out.aux_s, batch_s["label"], aux_weight=self.options.aux_weight
        )
        return seg, {"seg": float(seg.detach()), **{k: float(v) for k, v in parts.items()}}

    def discriminator_loss(self, out: StepOutputs) -> tuple[Tensor | None, dict[str, float]]:
        """Loss of the discriminators on detached predictions (None when there are none)."""
        return None, {}

    def on_stage_end(self, target_batches: Iterable[dict[str, Tensor]]) -> dict[str, float]:
        """Called once after the last iteration's step, before its values are logged and the
        stage's checkpoints are scored and saved; returns values logged with that iteration.

        Args:
            target_batches: one pass over the target training slices (batches on the run's device,
                without labels unless :attr:`uses_target_labels`); empty when the method reads no
                target images. Consumed lazily: a method that ignores it costs nothing.
        """
        return {}

    def set_log_schedule(self, every: int, last: int) -> None:
        """The engine logs iterations ``every``, ``2 every``, ... and ``last`` (see :meth:`is_logged`)."""
        self._log_every, self._log_last = int(every), int(last)

    def is_logged(self, iteration: int) -> bool:
        """Whether the engine logs this (1-based) iteration's values: diagnostics that cost time are
        computed only then (never, until the engine called :meth:`set_log_schedule`)."""
        return self._log_every > 0 and (iteration % self._log_every == 0 or iteration == self._log_last)

    # ------------------------------------------------------------ optimisers
    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """SGD for backbone (x1) and heads (x10), AdamW for the fusion modules, Adam for discriminators."""
        o = self.ctx.optim
        groups = parameter_groups(self.ctx.segmenter)
        opts: dict[str, torch.optim.Optimizer] = {
            "sgd": torch.optim.SGD(
                [
                    {"params": groups["backbone"], "lr": o.lr},
                    {"params": groups["heads"], "lr": o.lr * o.head_lr_mult},
                ],
                lr=o.lr,
                momentum=o.momentum,
                weight_decay=o.weight_decay,
            ),
            "fusion": torch.optim.AdamW(groups["fusion"], lr=o.fusion_lr, weight_decay=o.fusion_weight_decay),
        }
        d_params = [p for p in self.discriminators.parameters() if p.requires_grad]
        if d_params:
            opts["disc"] = torch.optim.Adam(d_params, lr=o.disc_lr, betas=(o.disc_betas[0], o.disc_betas[1]))
        return opts

    def logged_lr(self, optimizers: Mapping[str, torch.optim.Optimizer]) -> float:
        """The learning rate logged as ``lr``: the backbone group of the segmenter's SGD optimiser."""
        return float(optimizers["sgd"].param_groups[0]["lr"])

    def stepped_optimizers(self) -> set[str]:
        """Names of the optimisers stepped each iteration.

        In ``released`` fidelity the optimiser of the non-backbone modules is built but never
        stepped, as in the authors' released code (docs/method.md, Fidelity modes).
        """
        names = {"sgd", "fusion", "disc"}
        if self.ctx.fidelity == "released":
            names.discard("fusion")
        return names

    # ------------------------------------------------------------- iteration
    def forward(self, batch_s: dict[str, Tensor], batch_t: dict[str, Tensor] | None) -> StepOutputs:
        """Run the network on both batches, each fused with its own modality's text."""
        model = self.ctx.model
        x_s = batch_s["image"]
        size = tuple(x_s.shape[-2:])
        src = model(x_s, self.ctx.text_source)
        main_s = upsample_logits(src.main, size)
        aux_s = upsample_logits(src.aux, size)
        tgt = main_t = aux_t = None
        if batch_t is not None and self.uses_target:
            tgt = model(batch_t["image"], self.ctx.text_target)
            size_t = tuple(batch_t["image"].shape[-2:])
            main_t = upsample_logits(tgt.main, size_t)
            aux_t = upsample_logits(tgt.aux, size_t)
        return StepOutputs(src, tgt, main_s, aux_s, main_t, aux_t)

    def training_step(
        self,
        batch_s: dict[str, Tensor],
        batch_t: dict[str, Tensor] | None,
        iteration: int,
        optimizers: dict[str, torch.optim.Optimizer],
    ) -> dict[str, float]:
        """One full iteration; returns the logged loss values.

        Forward passes and losses run under the context's autocast (``ctx.precision``; the
        precision-sensitive losses compute in float32 themselves), backward passes and optimiser
        steps go through its loss scaler (``fp16`` only).
        """
        amp = self.ctx.precision
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        with amp.autocast():
            out = self.forward(batch_s, batch_t)
            g_loss, logs = self.generator_loss(out, batch_s, iteration)
        amp.backward(g_loss)
        # The generator's adversarial term also produced discriminator gradients: discard them, so
        # the discriminators learn from their own loss only ("discriminators frozen"). Zeroing
        # rather than toggling requires_grad keeps DistributedDataParallel's bookkeeping intact.
        self.discriminators.zero_grad(set_to_none=True)
        with amp.autocast():
            d_loss, d_logs = self.discriminator_loss(out)
        if d_loss is not None:
            amp.backward(d_loss)
        logs.update(d_logs)
        active = self.stepped_optimizers()
        amp.step(opt for name, opt in optimizers.items() if name in active)
        logs["loss"] = float(g_loss.detach())
        return logs

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"discriminators": self.discriminators.state_dict(), "extra": self.extra.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.discriminators.load_state_dict(state["discriminators"])
        self.extra.load_state_dict(state["extra"])
