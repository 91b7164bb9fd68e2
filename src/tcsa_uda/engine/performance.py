"""Speed settings of a training run: precision, channels-last memory, ``torch.compile``, cuDNN autotuning.

:func:`setup_performance` turns the run options (``precision``, ``channels_last``, ``compile``
of :class:`~tcsa_uda.train_config.TrainConfig`) into a :class:`RunPerformance` for one device;
the trainer (and ``scripts/benchmark_speed.py``) apply it with :meth:`RunPerformance.prepare_model`,
:meth:`RunPerformance.compile` and :meth:`RunPerformance.to_device`. None of these change what is
computed, only how: ``bf16``/``fp16`` autocast rounds matrix products (tests bound the effect on
the losses), channels-last and compilation give the same numbers up to float rounding.

- cuDNN autotuning (``torch.backends.cudnn.benchmark``) is always on with CUDA: training batches
  have one shape, so the search runs once per stage.
- ``compile`` wraps the segmenter's forward in ``torch.compile``. When compilation is
  unavailable or fails (no compiler, an unsupported Python or platform, a graph the compiler
  rejects) at creation or on the first forward pass, the run continues eagerly: a one-line
  warning names the cause and the stage's ``metrics.jsonl`` records ``compiled: 0``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.precision import MixedPrecision, Precision, resolve_precision
from tcsa_uda.train_config import TrainConfig

__all__ = ["CompiledForward", "RunPerformance", "resolve_channels_last", "setup_performance"]


def resolve_channels_last(option: bool | str, device: torch.device) -> bool:
    """``channels_last``: ``auto`` is on for CUDA (tensor-core convolutions want NHWC), off on CPU.

    Raises:
        ConfigError: an option other than true, false or auto.
    """
    if isinstance(option, bool):
        return option
    if option != "auto":
        raise ConfigError(f"channels_last: expected true, false or auto, found {option!r}.")
    return device.type == "cuda"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class CompiledForward(nn.Module):
    """``torch.compile(module)``, falling back to ``module`` itself when compilation fails.

    Compilation is lazy in PyTorch: errors surface at ``torch.compile`` (unsupported platform or
    Python) or on the first call (no C++ compiler or Triton, a rejected graph). Both are caught
    once, reported by one warning line (and ``on_fallback``), and every later call runs
    ``module`` eagerly. An error on a later call is not caught. The wrapper registers only
    ``module``, so its state dict is the module's under the prefix ``module.``.

    Args:
        module: the network (the DDP-wrapped one under torchrun).
        on_fallback: called with the one-line reason when the wrapper falls back.
    """

    _compiled: Callable[..., Any] | None

    def __init__(self, module: nn.Module, on_fallback: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.module = module
        self.on_fallback = on_fallback
        self.reason: str | None = None  #: why compilation is off, None while compiled
        self._checked = False
        self._compiled = None
        try:
            compiled = torch.compile(module)
        except (RuntimeError, ImportError) as exc:  # unsupported Python/platform, missing backend
            self._fall_back(exc)
        else:
            self.__dict__["_compiled"] = compiled  # kept out of the registered submodules (and the state dict)

    @property
    def compiled(self) -> bool:
        """True while calls go through the compiled function."""
        return self._compiled is not None

    def _fall_back(self, exc: BaseException) -> None:
        self._compiled = None
        self.reason = _first_line(exc)
        message = f"compile: torch.compile of the segmenter failed ({self.reason}); continuing without compilation."
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        if self.on_fallback is not None:
            self.on_fallback(message)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is None:
            return self.module(*args, **kwargs)
        if self._checked:
            return self._compiled(*args, **kwargs)
        try:
            out = self._compiled(*args, **kwargs)
        except (RuntimeError, ImportError) as exc:  # backend compiler failures subclass RuntimeError
            self._fall_back(exc)
            return self.module(*args, **kwargs)
        self._checked = True
        return out


@dataclass
class RunPerformance:
    """The resolved speed settings of a run on one device.

    Attributes:
        device: where the run trains.
        requested: the ``precision`` option as configured (``auto`` before resolution).
        precision: autocast and loss scaling (:class:`~tcsa_uda.precision.MixedPrecision`).
        channels_last: networks and image batches in channels-last memory format.
        compile: ``torch.compile`` of the segmenter requested.
        compiled: the compiled wrappers made by :meth:`compile` (their ``reason`` tells a fallback).
    """

    device: torch.device
    requested: str
    precision: MixedPrecision
    channels_last: bool
    compile: bool
    compiled: list[CompiledForward] = field(default_factory=list)

    @property
    def name(self) -> Precision:
        return self.precision.precision

    def start_stage(self) -> MixedPrecision:
        """A fresh loss scaler (and no compiled wrapper yet) for a new stage; returns its precision object."""
        self.precision = MixedPrecision(self.name, self.device)
        self.compiled = []
        return self.precision

    def prepare_model(self, *modules: nn.Module) -> None:
        """Convert the networks' 4-D parameters and buffers to channels-last, when on."""
        if self.channels_last:
            for module in modules:
                module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from the stubs

    def compile_model(self, module: nn.Module, on_fallback: Callable[[str], None] | None = None) -> nn.Module:
        """``module`` compiled (a :class:`CompiledForward`) when ``compile`` is on, else ``module``."""
        if not self.compile:
            return module
        wrapped = CompiledForward(module, on_fallback)
        self.compiled.append(wrapped)
        return wrapped

    def to_device(self, batch: dict[str, Any], device: torch.device | None = None) -> dict[str, Any]:
        """Move a batch's tensors with non-blocking copies (pinned host memory makes them asynchronous).

        4-D floating-point tensors (the image batches) are made channels-last when that is on.
        """
        dev = device if device is not None else self.device
        out: dict[str, Any] = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(dev, non_blocking=True)
                if self.channels_last and value.dim() == 4 and value.is_floating_point():
                    value = value.contiguous(memory_format=torch.channels_last)
            out[key] = value
        return out

    def record(self) -> dict[str, Any]:
        """What a checkpoint records: the precision (requested and used), the loss scaler, the layout options."""
        return {
            **self.precision.state_dict(),
            "requested": self.requested,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "compiled": all(c.compiled for c in self.compiled) if self.compiled else False,
        }

    def log_values(self) -> dict[str, float]:
        """Numbers for ``metrics.jsonl`` (kind ``performance``): what the stage actually ran with."""
        bits = {"fp32": 32.0, "bf16": 16.0, "fp16": 16.0}[self.name]
        values = {
            "autocast_bits": bits,
            "bf16": float(self.name == "bf16"),
            "fp16": float(self.name == "fp16"),
            "channels_last": float(self.channels_last),
            "compile_requested": float(self.compile),
            "compiled": float(bool(self.compiled) and all(c.compiled for c in self.compiled)),
        }
        if self.precision.scaler is not None:
            values["loss_scale"] = self.precision.scale
        return values

    def restore(self, state: dict[str, Any] | None, source: str) -> None:
        """Resume: restore the loss scaler of a checkpoint's ``precision`` record.

        A checkpoint written with another precision is refused when the run's precision came from
        ``auto`` (the device changed under the same configuration); an explicit ``precision``
        option that differs from the checkpoint's is the user's choice and continues with a
        warning (the loss scale then starts afresh).

        Raises:
            ConfigError: ``precision: auto`` resolves to another precision than the checkpoint's.
        """
        if state is None:  # written before precision was recorded: fp32
            state = {"precision": "fp32", "grad_scaler": None}
        saved = state.get("precision")
        if saved == self.name:
            self.precision.load_state_dict(state)
            return
        if self.requested == "auto":
            raise ConfigError(
                f"{source}: trained with precision {saved!r}, but precision=auto resolves to {self.name!r} on "
                f"{self.device}; resume with precision={saved} (or set precision explicitly to change it)."
            )
        warnings.warn(
            f"{source}: trained with precision {saved!r}; resuming with precision={self.name} as configured.",
            UserWarning,
            stacklevel=2,
        )


def setup_performance(cfg: TrainConfig, device: torch.device) -> RunPerformance:
    """Resolve the speed options of ``cfg`` for ``device`` and switch on cuDNN autotuning on CUDA.

    Raises:
        ConfigError: a precision the device cannot run (e.g. ``fp16`` on CPU), naming the key.
    """
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return RunPerformance(
        device=device,
        requested=cfg.precision,
        precision=MixedPrecision(precision, device),
        channels_last=resolve_channels_last(cfg.channels_last, device),
        compile=cfg.compile,
    )
