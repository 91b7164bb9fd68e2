"""Numeric precision of training and inference: the ``precision`` option, autocast, float32 islands, loss scaling.

``precision`` is ``fp32``, ``bf16`` or ``fp16`` (or ``auto``, resolved per device by
:func:`resolve_precision`): with ``bf16``/``fp16`` the networks (segmenter and discriminators) run
under :func:`torch.autocast`, so convolutions and matrix products use the low-precision dtype
while PyTorch keeps reductions it knows to be sensitive in float32. The losses of this package
that sum over many pixels or compare small differences (Dice, class-weighted cross-entropy,
entropy maps, the vision-language Gram matrices, the prototype centroids) are decorated with
:func:`float32`: they run with autocast disabled on float32 copies of their inputs, whatever the
caller's precision. ``fp16`` has a narrow exponent range, so its gradients go through one
:class:`torch.amp.GradScaler` (:class:`MixedPrecision`) shared by every optimiser of a step;
``bf16`` has float32's range and needs none.

Defaults (``auto``), chosen per device (docs/performance.md):

- CUDA: ``bf16`` where the GPU supports it (Ampere and later), else ``fp16`` with loss scaling;
- CPU: ``fp32``. bf16 autocast was measured twice as fast for the paper configuration on a CPU
  with native bfloat16 instructions (AVX512-BF16; docs/performance.md), but CPU runs are the
  tests, the phantom demo and its documented results, which must give the same numbers on every
  machine, and CPUs without native bfloat16 emulate it. Ask for ``precision=bf16`` explicitly
  for long CPU runs on such a CPU.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, Literal, ParamSpec, TypeVar, cast, get_args

import torch
from torch import Tensor

from tcsa_uda.errors import ConfigError

Precision = Literal["fp32", "bf16", "fp16"]
PrecisionOption = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: Final[tuple[str, ...]] = get_args(Precision)
PRECISION_OPTIONS: Final[tuple[str, ...]] = get_args(PrecisionOption)
DTYPES: Final[dict[str, torch.dtype]] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "DTYPES",
    "PRECISIONS",
    "PRECISION_OPTIONS",
    "MixedPrecision",
    "Precision",
    "PrecisionOption",
    "autocast",
    "bf16_supported",
    "float32",
    "resolve_precision",
]


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 autocast runs on ``device``.

    CUDA: natively from Ampere on. CPU: always (natively with AVX512-BF16 or AMX, emulated otherwise).
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    return device.type == "cpu"


def resolve_precision(option: str, device: torch.device, key: str = "precision") -> Precision:
    """The precision a run uses on ``device`` for the option ``option``.

    Args:
        option: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        device: where the networks run.
        key: the option's name in error messages (``precision``, ``--precision``).

    Returns:
        ``auto`` resolved (module docstring), or ``option`` itself when the device supports it.

    Raises:
        ConfigError: an unknown option, ``fp16`` off CUDA (loss scaling and fast float16
            kernels are a GPU feature; use ``bf16`` or ``fp32`` on CPU), or ``bf16`` on a GPU
            without bfloat16 support.
    """
    if option not in PRECISION_OPTIONS:
        raise ConfigError(f"{key}: expected one of {', '.join(PRECISION_OPTIONS)}, found {option!r}.")
    if option == "auto":
        if device.type == "cuda":
            return "bf16" if bf16_supported(device) else "fp16"
        return "fp32"
    if option == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"{key}=fp16 needs a CUDA device (float16 autocast with loss scaling); found device {device.type!r}. "
            "Use bf16 or fp32 there."
        )
    if option == "bf16" and not bf16_supported(device):
        raise ConfigError(f"{key}=bf16: the device {device} has no bfloat16 support; use fp16 or fp32.")
    return cast(Precision, option)


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of ``precision`` on ``device`` (no context at all for ``fp32``)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


@contextlib.contextmanager
def _autocast_disabled() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for device_type in ("cuda", "cpu"):
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield


def _to_float32(value: Any) -> Any:
    if isinstance(value, Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value


def float32(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` in float32: autocast off, half-precision tensor arguments cast to float32.

    For the loss functions whose sums over pixels or small differences lose too much in 8 (bf16)
    or 11 (fp16) mantissa bits; integer tensors (labels) and float32 tensors pass unchanged, so
    outside autocast the decorator changes nothing.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _autocast_disabled():
            args_32 = tuple(_to_float32(a) for a in args)
            kwargs_32 = {k: _to_float32(v) for k, v in kwargs.items()}
            return fn(*args_32, **kwargs_32)

    return wrapper


class MixedPrecision:
    """Autocast and loss scaling of one training run.

    The training step runs its forward passes and losses under :meth:`autocast`, calls
    :meth:`backward` on each loss (generator, then discriminators) and :meth:`step` once with
    the optimisers it steps. With ``fp16`` one :class:`torch.amp.GradScaler` scales both losses
    by the same factor, unscales and checks every stepped optimiser's gradients on its own
    (an optimiser whose gradients overflowed skips the step), then updates the factor once,
    as PyTorch recommends for several losses and optimisers. An optimiser that is built but never
    stepped (the non-backbone optimiser in ``released`` fidelity) is never handed to the scaler.

    Args:
        precision: ``fp32``, ``bf16`` or ``fp16`` (already resolved).
        device: where the networks run.
    """

    def __init__(self, precision: Precision = "fp32", device: torch.device | None = None) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, found {precision!r}.")
        self.precision: Precision = precision
        self.device = device if device is not None else torch.device("cpu")
        self.scaler: torch.amp.GradScaler | None = (
            torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        )

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward-pass context (no-op for ``fp32``)."""
        return autocast(self.precision, self.device)

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()``, scaled with ``fp16``."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Step ``optimizers`` (unscaled and inf-checked with ``fp16``), then update the scale once.

        An optimiser none of whose parameters received a gradient is skipped, as its plain
        ``step()`` would do nothing (the scaler refuses such an optimiser).
        """
        if self.scaler is None:
            for opt in optimizers:
                opt.step()
            return
        stepped = 0
        for opt in optimizers:
            if any(p.grad is not None for group in opt.param_groups for p in group["params"]):
                self.scaler.step(opt)
                stepped += 1
        if stepped:
            self.scaler.update()

    @property
    def scale(self) -> float:
        """The current loss scale (1 without ``fp16``)."""
        return float(self.scaler.get_scale()) if self.scaler is not None else 1.0

    def state_dict(self) -> dict[str, Any]:
        """``{"precision", "grad_scaler"}``; the scaler state is None without ``fp16``."""
        return {"precision": self.precision, "grad_scaler": self.scaler.state_dict() if self.scaler else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the loss scale (and its growth tracker) of a checkpoint written with the same precision.

        Raises:
            ConfigError: the checkpoint was written with another precision (checked by the engine first).
        """
        if state.get("precision") != self.precision:
            raise ConfigError(
                f"precision: the checkpoint was trained with {state.get('precision')!r}, this run uses "
                f"{self.precision!r}."
            )
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(dict(state["grad_scaler"]))
