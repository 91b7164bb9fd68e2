"""Typed configuration of a training run (loaded from YAML with overrides, see config.py).

Defaults are the paper configuration of METHOD.md (DeepLab-v2 ResNet-101, 256x256, 4 + 4 slices,
SGD 2.5e-4 poly 0.9, Adam 1e-4 discriminators, AdamW 1e-3 non-backbone modules); the configs in
``configs/`` override what differs (e.g. the light model on the built-in phantom benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tcsa_uda.engine.selection import SelectionConfig
from tcsa_uda.errors import ConfigError

Fidelity = Literal["paper", "released"]


@dataclass
class DataConfig:
    """Which prepared dataset and which domains.

    Attributes:
        prepared: folder written by ``tcsa-uda prepare`` (relative paths resolve against the
            current folder, then against ``$TCSA_UDA_DATA``).
        source: labelled source domain name (a key of ``domains`` in dataset.json).
        target: unlabelled target domain name.
        batch_size: slices per domain per iteration.
        train_splits: splits of the source whose labelled slices are used for supervision; the
            target uses the images of the same splits, never their labels.
        classes: optional list of class names (background first) the run expects; when given it
            must equal the prepared dataset's classes, so a config for one class set cannot
            silently train on another.
    """

    prepared: str = ""
    source: str = ""
    target: str = ""
    batch_size: int = 4
    num_workers: int = 0
    train_splits: tuple[str, ...] = ("train",)
    classes: list[str] | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size: expected >= 1, found {self.batch_size}.")


@dataclass
class TextConfig:
    """Class prompts and the frozen text encoder (see tcsa_uda.text)."""

    encoder: str = "minilm"
    template: str = "A {modality} of a {class}."
    use_descriptions: bool = False
    cache_dir: str | None = None


@dataclass
class ModelConfig:
    """Network choice.

    Attributes:
        name: a registered segmenter (``deeplabv2_r101`` = the paper configuration, ``light``).
        weights: optional local file of backbone weights (no downloads).
        base_width: width of the light backbone (light model only).
        disc_width: first-layer channels of the PatchGAN discriminators (paper: 64).
    """

    name: str = "deeplabv2_r101"
    weights: str | None = None
    base_width: int | None = None
    disc_width: int = 64


@dataclass
class OptimConfig:
    """Optimisers of METHOD.md (Training)."""

    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    head_lr_mult: float = 10.0
    power: float = 0.9
    decay_iterations: int | None = None  # poly schedule length; None = the stage's iterations
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.9, 0.99)
    fusion_lr: float = 1e-3
    fusion_weight_decay: float = 5e-4


@dataclass
class LossConfig:
    """Loss weights and momenta of METHOD.md (Losses).

    ``ent_main`` / ``ent_aux`` weight the target entropy of the ``minent`` baseline (ADVENT's
    lambda_ent = 0.001 on the main head; the aux head gets 0.1 x, the ratio of ``aux_weight``).
    """

    aux_weight: float = 0.1
    adv_main: float = 0.003
    adv_aux: float = 0.00002
    proto_weight: float = 1.0
    vl_source_weight: float = 1.0
    vl_target_weight: float = 1.0
    align_start: int = 100
    proto_momentum: float = 0.01
    bank_momentum: float = 0.5
    ent_main: float = 0.001
    ent_aux: float = 0.0001


@dataclass
class StageConfig:
    """One training stage: a method trained for ``iterations`` iterations.

    ``init``: ``previous`` starts from the previous stage's selected segmenter weights (stage 2 of
    TCSA starts from stage 1), ``scratch`` from a fresh network. Discriminators and other method
    state are always fresh at the start of a stage (METHOD.md).
    """

    method: str = "source_only"
    iterations: int = 1000
    init: Literal["previous", "scratch"] = "previous"

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ConfigError(f"stages[].iterations: expected >= 1, found {self.iterations}.")


@dataclass
class TrainConfig:
    """A whole run: data, text, model, optimisation, losses and the list of stages."""

    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    fidelity: Fidelity = "paper"
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0  # CPU threads for torch; 0 keeps torch's default
    checkpoint_every: int = 500
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("stages: expected at least one stage, found an empty list.")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ConfigError("checkpoint_every and log_every: expected >= 1.")
