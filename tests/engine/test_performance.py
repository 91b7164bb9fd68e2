"""Tests of the run's speed settings: precision record and resume, channels-last batches, compile fallback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tcsa_uda.config import load_config
from tcsa_uda.engine.checkpoint import load_checkpoint
from tcsa_uda.engine.performance import CompiledForward, RunPerformance, resolve_channels_last, setup_performance
from tcsa_uda.engine.trainer import train
from tcsa_uda.errors import ConfigError
from tcsa_uda.precision import MixedPrecision
from tcsa_uda.train_config import TrainConfig

CPU = torch.device("cpu")


def _perf(precision: str = "fp32", requested: str = "auto", channels_last: bool = False) -> RunPerformance:
    return RunPerformance(CPU, requested, MixedPrecision(precision, CPU), channels_last, compile=False)  # type: ignore[arg-type]


def test_channels_last_option() -> None:
    assert resolve_channels_last("auto", CPU) is False
    assert resolve_channels_last("auto", torch.device("cuda")) is True
    assert resolve_channels_last(True, CPU) is True
    with pytest.raises(ConfigError, match="channels_last: expected true, false or auto, found 'yes'"):
        resolve_channels_last("yes", CPU)


def test_fp16_on_cpu_is_refused_before_training() -> None:
    cfg = load_config(TrainConfig, None, ["precision=fp16"])
    with pytest.raises(ConfigError, match="precision=fp16 needs a CUDA device"):
        setup_performance(cfg, CPU)
    with pytest.raises(ConfigError, match="Config key 'precision'"):
        load_config(TrainConfig, None, ["precision=half"])


def test_to_device_makes_image_batches_channels_last() -> None:
    image = torch.randn(2, 3, 8, 8)
    batch: dict[str, Any] = {"image": image, "label": torch.zeros(2, 8, 8, dtype=torch.long), "case": ["a", "b"]}
    out = _perf(channels_last=True).to_device(batch)
    assert out["image"].is_contiguous(memory_format=torch.channels_last) and not out["image"].is_contiguous()
    assert torch.equal(out["image"], image) and out["label"].is_contiguous() and out["case"] == ["a", "b"]
    plain = _perf().to_device(batch)
    assert plain["image"].is_contiguous()


def test_restore_brings_back_the_loss_scale() -> None:
    saved = MixedPrecision("fp16", CPU)
    assert saved.scaler is not None
    saved.scaler.scale(torch.ones(()))  # the scaler starts lazily
    saved.scaler.update(1024.0)
    perf = _perf("fp16", requested="fp16")
    perf.restore({**saved.state_dict()}, "ck.pt")
    assert perf.precision.scale == 1024.0


def test_restore_refuses_a_silent_precision_change_but_follows_an_explicit_one() -> None:
    state = MixedPrecision("bf16", CPU).state_dict()
    with pytest.raises(ConfigError, match=r"ck.pt: trained with precision 'bf16', but precision=auto resolves to"):
        _perf("fp32", requested="auto").restore(state, "ck.pt")
    with pytest.warns(UserWarning, match="resuming with precision=fp32 as configured"):
        _perf("fp32", requested="fp32").restore(state, "ck.pt")
    _perf("fp32").restore(None, "old.pt")  # checkpoints without a record were trained in fp32


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


def test_compile_unavailable_falls_back_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Dynamo is not supported on this Python\nsecond line")

    monkeypatch.setattr(torch, "compile", unavailable)
    seen: list[str] = []
    with pytest.warns(RuntimeWarning) as record:
        wrapped = CompiledForward(Twice(), seen.append)
    message = str(record[0].message)
    assert message == (
        "compile: torch.compile of the segmenter failed (RuntimeError: Dynamo is not supported on this Python); "
        "continuing without compilation."
    )
    assert seen == [message] and not wrapped.compiled and wrapped.reason is not None
    assert torch.equal(wrapped(torch.ones(2)), torch.full((2,), 2.0))


def test_compile_failing_at_the_first_call_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_backend(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            raise RuntimeError("backend compiler failed")

        return call

    monkeypatch.setattr(torch, "compile", broken_backend)
    wrapped = CompiledForward(Twice())
    assert wrapped.compiled
    with pytest.warns(RuntimeWarning, match=r"failed \(RuntimeError: backend compiler failed\)"):
        out = wrapped(torch.ones(2))
    assert torch.equal(out, torch.full((2,), 2.0)) and not wrapped.compiled


def test_compiled_wrapper_keeps_the_state_dict_of_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def identity(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            calls.append(1)
            return module(*a, **k)

        return call

    monkeypatch.setattr(torch, "compile", identity)
    wrapped = CompiledForward(Twice())
    wrapped(torch.ones(1))
    wrapped(torch.ones(1))
    assert len(calls) == 2 and wrapped.compiled
    assert list(wrapped.state_dict()) == ["module.scale"]


@pytest.mark.slow
def test_bf16_channels_last_run_records_precision_and_a_compile_fallback(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny bf16 + channels-last + compile run on CPU, with torch.compile unavailable."""

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("compiler missing")

    monkeypatch.setattr(torch, "compile", unavailable)
    extra = ["precision=bf16", "channels_last=true", "compile=true", "checkpoint_every=1", "log_every=1"]
    cfg = load_config(TrainConfig, None, [*tiny_overrides, "stages=[{method: adaoutput, iterations: 2}]", *extra])
    with pytest.warns(RuntimeWarning, match="compile: torch.compile of the segmenter failed"):
        res = train(cfg, tmp_path / "run")
    sdir = res.stage_dirs[0]
    rows = [json.loads(line) for line in (sdir / "metrics.jsonl").read_text().splitlines()]
    perf_rows = [r for r in rows if r["kind"] == "performance"]
    assert len(perf_rows) == 1 and perf_rows[0]["step"] == 1
    assert perf_rows[0]["bf16"] == 1.0 and perf_rows[0]["channels_last"] == 1.0
    assert perf_rows[0]["compile_requested"] == 1.0 and perf_rows[0]["compiled"] == 0.0
    record = load_checkpoint(res.final_checkpoint)["performance"]
    assert record["precision"] == "bf16" and record["requested"] == "bf16" and record["grad_scaler"] is None
    assert record["channels_last"] is True and record["compiled"] is False
    last = load_checkpoint(sdir / "checkpoint_last.pt")
    assert last["iteration"] == 1 and last["performance"]["precision"] == "bf16"

    # Resuming that checkpoint where precision=auto means fp32 is refused before any iteration.
    (sdir / "final.pt").unlink()
    auto = load_config(
        TrainConfig, None, [*tiny_overrides, "stages=[{method: adaoutput, iterations: 2}]", "checkpoint_every=1"]
    )
    with pytest.raises(ConfigError, match="trained with precision 'bf16', but precision=auto resolves to 'fp32'"):
        train(auto, tmp_path / "run", resume=True)
