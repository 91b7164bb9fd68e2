"""Deterministic state dicts and inputs for the parity test against the authors' TCSA-UDA release.

The authors' checkpoints (``MulModSeg2D`` of their ``model/multimod_v3.py``) cannot be shipped with
the tests, so the parity test fills a state dict with the release's key names and shapes from a
seed, runs it through this project's model and compares the logits with those the authors' own
model code produced from the same state dict (computed once, outside this repository).

Filling rule, applied to the keys in the order of the keys file, all draws from ONE
``torch.Generator`` seeded with ``seed`` (``randn``: standard normal, ``rand``: uniform [0, 1)):

=====================================  =====================================================
key (first matching row wins)          value
=====================================  =====================================================
``*.num_batches_tracked``              zeros, int64 (no draw)
``organ_embedding``                    ``randn``, then each row (last dim) L2-normalised
``*.running_mean``                     ``0.1 * randn``
``*.running_var``                      ``0.5 + rand``
any tensor with >= 2 dims              ``randn / sqrt(fan_in)``, ``fan_in = prod(shape[1:])``
                                       (conv and linear weights, ``mha.in_proj_weight``)
``*.weight`` with 1 dim                ``1 + 0.1 * randn`` (BatchNorm, GroupNorm, LayerNorm)
anything else                          ``0.1 * randn`` (biases, ``in_proj_bias``)
=====================================  =====================================================

Only float32 and int64 entries are produced (the release's state dict has no other dtype).
Drawing ~87.5 M numbers for the DeepLab-v2 ResNet-101 release takes about a second on one core.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["INPUT_SCALE", "INPUT_SHAPE", "fill_value", "make_input", "make_state_dict"]

#: Shape of the parity input ``(B, 3, H, W)``. 48 is the smallest side for which the DeepLab-v2
#: stem (7x7/2 conv, 3x3/2 ceil max-pool) and layer2 (stride 2) leave 7x7 feature maps: every
#: dilated 3x3 conv of layer3 (d=2) and layer4 (d=4) and the d=6 ASPP branch then reach
#: off-centre pixels; the d=12/18/24 ASPP branches only see their centre tap at this size.
INPUT_SHAPE: tuple[int, int, int, int] = (2, 3, 48, 48)
#: Standard deviation of the parity input (the network's input space: caffe-mean-subtracted BGR,
#: i.e. 0 is a mid-grey pixel). Random weights do not normalise activations the way trained BN
#: statistics do: with ``randn * 50`` the main logits reach ~1e3 and a float32 forward of the
#: release itself is off its float64 forward by ~2e-3. With 0.5 the main logits are ~16 at most,
#: the release's float32 error is ~3e-5, and the MR and CT text rows still change them by ~0.45.
INPUT_SCALE: float = 0.5


def fill_value(name: str, shape: Sequence[int], dtype: str, generator: torch.Generator) -> Tensor:
    """Draw the value of one state-dict entry from ``generator`` (rule in the module docstring).

    Args:
        name: state-dict key, e.g. ``backbone.layer1.0.bn1.running_var``.
        shape: tensor shape; ``[]`` for a scalar.
        dtype: ``"float32"`` or ``"int64"`` (``int64`` only for ``num_batches_tracked``).
        generator: the single generator shared by all keys; it advances by the draws made here.

    Returns:
        A tensor of ``shape`` and ``dtype`` on the CPU.

    Raises:
        ValueError: for a dtype other than float32, or int64 on a key that is not ``num_batches_tracked``.
    """
    size = tuple(int(s) for s in shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        if dtype != "int64":
            raise ValueError(f"key '{name}': expected dtype int64 for num_batches_tracked, found {dtype}.")
        return torch.zeros(size, dtype=torch.int64)
    if dtype != "float32":
        raise ValueError(f"key '{name}': expected dtype float32, found {dtype}.")
    if leaf == "organ_embedding":
        value = torch.randn(size, generator=generator)
        return value / value.norm(dim=-1, keepdim=True)
    if leaf == "running_mean":
        return 0.1 * torch.randn(size, generator=generator)
    if leaf == "running_var":
        return 0.5 + torch.rand(size, generator=generator)
    if len(size) >= 2:
        fan_in = math.prod(size[1:])
        return torch.randn(size, generator=generator) / math.sqrt(fan_in)
    if leaf == "weight":
        return 1.0 + 0.1 * torch.randn(size, generator=generator)
    return 0.1 * torch.randn(size, generator=generator)


def make_state_dict(keys_json: Mapping[str, Any], seed: int) -> dict[str, Tensor]:
    """Fill every key of a keys file deterministically from ``seed``.

    Args:
        keys_json: the parsed keys file, ``{"num_classes": C, "keys": [[name, [shape...], dtype], ...]}``.
        seed: seed of the single ``torch.Generator`` that all keys draw from, in file order.

    Returns:
        An ordered ``{name: tensor}`` state dict with the file's names, shapes and dtypes.

    Raises:
        ValueError: if ``keys_json`` has no ``keys`` list of ``[name, shape, dtype]`` triples, or a dtype is
            unsupported.
    """
    entries = keys_json.get("keys") if isinstance(keys_json, Mapping) else None
    if not isinstance(entries, list):
        raise ValueError("keys file: expected an object with a 'keys' list, found none.")
    generator = torch.Generator().manual_seed(int(seed))
    state: dict[str, Tensor] = {}
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)):
            raise ValueError(f"keys file: entry {i}: expected [name, [shape...], dtype], found {entry!r}.")
        name, shape, dtype = entry
        state[name] = fill_value(name, shape, dtype, generator)
    return state


def make_input(seed: int) -> Tensor:
    """The parity input: ``INPUT_SCALE * randn(INPUT_SHAPE)``, float32, in the network's input space.

    Args:
        seed: seed of a fresh ``torch.Generator`` (independent of the state-dict generator).

    Returns:
        Images ``(2, 3, 48, 48)``, float32.
    """
    generator = torch.Generator().manual_seed(int(seed))
    return INPUT_SCALE * torch.randn(INPUT_SHAPE, generator=generator, dtype=torch.float32)
