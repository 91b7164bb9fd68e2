"""Tests of the training-config schema's own checks (tcsa_uda.train_config)."""

from __future__ import annotations

import pytest

from tcsa_uda.config import load_config
from tcsa_uda.errors import ConfigError
from tcsa_uda.train_config import TrainConfig


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=-1", "optim.lr: expected a finite number > 0, found -1.0."),
        ("optim.lr=0", "optim.lr: expected a finite number > 0, found 0.0."),
        ("optim.lr=.nan", "Config key 'optim.lr': expected a finite number, found nan."),
        ("optim.lr=nan", "Config key 'optim.lr': expected a finite number, found nan."),
        ("optim.lr=fast", "Config key 'optim.lr': expected a number, found 'fast'."),
        ("optim.disc_lr=-0.1", "optim.disc_lr: expected a finite number > 0, found -0.1."),
        ("optim.weight_decay=-1e-4", "optim.weight_decay: expected a finite number >= 0, found -0.0001."),
        ("optim.momentum=1.5", "optim.momentum: expected a finite number >= 0 and <= 1, found 1.5."),
        ("optim.disc_betas=[0.9, 1.0]", "optim.disc_betas[1]: expected a finite number >= 0 and < 1, found 1.0."),
        ("optim.decay_iterations=0", "optim.decay_iterations: expected null (the stage's iterations) or >= 1"),
    ],
)
def test_bad_optimiser_values_are_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, None, [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_numbers_yaml_reads_as_text_are_numbers():
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; it is accepted as the number it spells."""
    cfg = load_config(TrainConfig, None, ["optim.lr=1e-3", "optim.decay_iterations=100"])
    assert cfg.optim.lr == 1e-3 and cfg.optim.decay_iterations == 100
