"""Inference batch size and precision options (tcsa_uda.evaluation.batching)."""

from __future__ import annotations

import pytest
import torch

from tcsa_uda.errors import ConfigError
from tcsa_uda.evaluation.batching import (
    CPU_BATCH_SIZE,
    MAX_BATCH_SIZE,
    MEMORY_FRACTION,
    inference_options,
    parse_batch_size,
    resolve_batch_size,
    slice_footprint,
    slices_that_fit,
)
from tcsa_uda.models import build_segmenter


@pytest.mark.parametrize("value, expected", [("auto", "auto"), (" AUTO ", "auto"), ("12", 12), (3, 3)])
def test_parse_batch_size(value: int | str, expected: int | str) -> None:
    assert parse_batch_size(value) == expected


@pytest.mark.parametrize("value", ["0", "-2", "big", 0, True, "1.5"])
def test_parse_batch_size_refuses(value: int | str) -> None:
    with pytest.raises(ConfigError, match="--batch-size: expected a positive integer or auto"):
        parse_batch_size(value)


def test_slices_that_fit_uses_the_memory_fraction_and_clamps() -> None:
    gib = 2**30
    # 10 GiB free, 1 GiB fixed, 0.25 GiB per slice: (0.8 * 10 - 1) / 0.25 = 28
    assert slices_that_fit(10 * gib, 0.25 * gib, 1 * gib) == int((MEMORY_FRACTION * 10 - 1) / 0.25) == 28
    assert slices_that_fit(gib, 2 * gib) == 1  # never below one slice
    assert slices_that_fit(1000 * gib, 1024) == MAX_BATCH_SIZE


def test_auto_on_cpu_is_the_fixed_default_and_a_number_is_kept() -> None:
    model = build_segmenter("light", 3, 8, base_width=8).eval()
    text = torch.zeros(3, 8)
    assert resolve_batch_size("auto", model, text, 32, "fp32") == CPU_BATCH_SIZE == 16
    assert resolve_batch_size(5, model, text, 32, "fp32", flip=True) == 5
    assert inference_options(model, text, 32, "auto", "auto") == (16, "fp32")
    assert inference_options(model, text, 32, 4, "bf16") == (4, "bf16")
    with pytest.raises(ConfigError, match="--precision=fp16 needs a CUDA device"):
        inference_options(model, text, 32, 4, "fp16")
    with pytest.raises(ConfigError, match="measures CUDA memory"):
        slice_footprint(model, text, 32, "fp32")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the per-slice footprint is measured on CUDA only")
def test_auto_on_cuda_measures_a_footprint_that_grows_with_flip() -> None:
    model = build_segmenter("light", 3, 8, base_width=8).cuda().eval()
    text = torch.zeros(3, 8, device="cuda")
    plain, _ = slice_footprint(model, text, 64, "fp32")
    flipped, _ = slice_footprint(model, text, 64, "fp32", flip=True)
    assert plain > 0 and flipped > 1.5 * plain
    batch = resolve_batch_size("auto", model, text, 64, "bf16")
    assert 1 <= batch <= MAX_BATCH_SIZE
