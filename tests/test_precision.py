"""Tests of the precision option, the float32 islands of the losses and the loss scaler (tcsa_uda.precision)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from tcsa_uda.errors import ConfigError
from tcsa_uda.losses.adversarial import bce_with_domain, discriminator_input, self_information_map
from tcsa_uda.losses.contrastive import cosine_pseudo_labels, margin_contrastive_loss
from tcsa_uda.losses.entropy import entropy_map
from tcsa_uda.losses.prototype import batch_centroids, prototype_alignment_loss
from tcsa_uda.losses.segmentation import _dice, _weighted_ce
from tcsa_uda.losses.vision_language import VLCovarianceLoss, covariance_cosine_loss
from tcsa_uda.precision import MixedPrecision, autocast, float32, resolve_precision

CPU = torch.device("cpu")


def test_auto_is_fp32_on_cpu_and_fp16_needs_cuda() -> None:
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(ConfigError, match="precision=fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ConfigError, match=r"--precision: expected one of auto, fp32, bf16, fp16, found 'half'"):
        resolve_precision("half", CPU, "--precision")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="auto resolves to bf16/fp16 only on a CUDA device")
def test_auto_is_half_precision_on_cuda() -> None:
    cuda = torch.device("cuda")
    expected = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    assert resolve_precision("auto", cuda) == expected


def test_float32_switches_autocast_off_and_upcasts() -> None:
    @float32
    def gram(a: Tensor) -> Tensor:
        return a @ a.t()

    a = torch.randn(6, 40, generator=torch.Generator().manual_seed(0))
    with autocast("bf16", CPU):
        plain = a @ a.t()  # autocast: a bf16 matrix product
        kept = gram(a)
        halved = gram(a.bfloat16())  # half-precision arguments are upcast first
    assert plain.dtype == torch.bfloat16
    assert kept.dtype == torch.float32 and torch.equal(kept, a @ a.t())
    assert halved.dtype == torch.float32 and torch.equal(halved, a.bfloat16().float() @ a.bfloat16().float().t())


def _logits() -> Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)).bfloat16()


def _labels() -> Tensor:
    return torch.randint(0, 4, (2, 8, 8), generator=torch.Generator().manual_seed(2))


def _features() -> Tensor:
    return torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(3)).bfloat16()


LOSSES: dict[str, Callable[[], Tensor]] = {
    "weighted_ce": lambda: _weighted_ce(
        _logits(), _labels(), torch.rand(4, generator=torch.Generator().manual_seed(4))
    ),
    "dice": lambda: _dice(_logits(), _labels(), 1e-5),
    "entropy_map": lambda: entropy_map(_logits()),
    "self_information_map": lambda: self_information_map(torch.softmax(_logits().float(), 1).bfloat16()),
    "discriminator_input": lambda: discriminator_input(_logits(), "entropy"),
    "bce_with_domain": lambda: bce_with_domain(_logits()[:, :1], "target"),
    "gram_matrices": lambda: covariance_cosine_loss(_features()[0, :, :4, 0].t(), _features()[1, :, :4, 0].t()),
    "batch_centroids": lambda: batch_centroids(_features(), _labels(), 4)[0],
    "prototype_alignment": lambda: prototype_alignment_loss(_features()[0, :, :4, 0], _features()[1, :, :4, 0]),
    "margin_contrast": lambda: margin_contrastive_loss(_features(), _labels(), _features()[0, :, :4, 0].t(), 0.3),
    "cosine_pseudo_labels": lambda: cosine_pseudo_labels(_features(), _features()[0, :, :4, 0].t(), 0.0)[0].float(),
    "vl_released_bank": lambda: VLCovarianceLoss(4, 16, mode="released")(
        _features(), _labels(), _features()[0, :, :4, 0].t()
    ),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_precision_sensitive_losses_compute_in_float32_under_autocast(name: str) -> None:
    """Under bf16 autocast these losses equal their float32 value on the same (bf16-rounded) inputs."""
    reference = LOSSES[name]()  # no autocast: the decorator upcasts the bf16 inputs
    with autocast("bf16", CPU):
        under_autocast = LOSSES[name]()
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, reference)


def test_fp32_mixed_precision_is_plain_backward_and_step() -> None:
    amp = MixedPrecision("fp32")
    assert amp.scaler is None and amp.scale == 1.0
    lin = torch.nn.Linear(3, 1)
    before = lin.weight.detach().clone()
    with amp.autocast():
        loss = lin(torch.ones(2, 3)).sum()
    amp.backward(loss)
    grad = lin.weight.grad
    assert grad is not None
    amp.step([torch.optim.SGD(lin.parameters(), lr=0.1)])
    assert torch.allclose(lin.weight.detach(), before - 0.1 * grad)
    assert amp.state_dict() == {"precision": "fp32", "grad_scaler": None}


def _two_nets() -> tuple[torch.nn.Linear, torch.nn.Linear, torch.optim.SGD, torch.optim.SGD]:
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    return a, b, torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)


def test_one_scaler_steps_only_the_stepped_optimisers_with_unscaled_gradients() -> None:
    """The fp16 bookkeeping (on CPU tensors: the scaler's logic does not depend on the device).

    Two losses share one scale; the optimiser left out of ``step`` (as the non-backbone optimiser
    in ``released`` fidelity) keeps its weights; the stepped one moves by the UNSCALED gradient.
    """
    amp = MixedPrecision("fp16", CPU)
    assert amp.scaler is not None
    scale = amp.scale
    a, b, opt_a, _ = _two_nets()
    a0, b0 = a.weight.detach().clone(), b.weight.detach().clone()
    x = torch.ones(2, 3)
    amp.backward(a(x).sum())
    amp.backward(b(x).sum())
    assert a.weight.grad is not None and torch.allclose(a.weight.grad, torch.full((1, 3), 2.0 * scale))
    amp.step([opt_a])
    assert torch.allclose(a.weight.detach(), a0 - 0.1 * 2.0)  # unscaled gradient 2 per weight
    assert torch.equal(b.weight.detach(), b0)
    assert amp.scale == scale  # finite gradients: the scale grows only after growth_interval steps


def test_overflow_skips_the_step_and_halves_the_scale_which_a_checkpoint_restores() -> None:
    amp = MixedPrecision("fp16", CPU)
    scale = amp.scale
    a, _, opt_a, _ = _two_nets()
    a0 = a.weight.detach().clone()
    amp.backward(a(torch.full((2, 3), float("inf"))).sum())
    amp.step([opt_a])
    assert torch.equal(a.weight.detach(), a0)
    assert amp.scale == scale / 2
    state = amp.state_dict()
    assert state["precision"] == "fp16"
    resumed = MixedPrecision("fp16", CPU)
    resumed.load_state_dict(state)
    assert resumed.scale == scale / 2
    with pytest.raises(ConfigError, match="trained with 'fp16', this run uses 'bf16'"):
        MixedPrecision("bf16", CPU).load_state_dict(state)


def test_an_optimiser_without_gradients_is_not_handed_to_the_scaler() -> None:
    amp = MixedPrecision("fp16", CPU)
    a, b, opt_a, opt_b = _two_nets()
    amp.backward(a(torch.ones(2, 3)).sum())
    amp.step([opt_a, opt_b])  # GradScaler.step would refuse opt_b (no inf check recorded)
    assert b.weight.grad is None
