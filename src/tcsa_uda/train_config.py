"""The schema of a training run (loaded from YAML with overrides by :mod:`tcsa_uda.config`).

Defaults are the paper configuration (docs/method.md: DeepLab-v2 ResNet-101, 256x256, 4 + 4
slices, SGD 2.5e-4 poly 0.9, Adam 1e-4 discriminators, AdamW 1e-3 non-backbone modules); the
configs in ``configs/`` override what differs (e.g. the light model on the built-in benchmark).

The schema knows nothing about individual methods: each stage names a method and carries that
method's own ``options`` mapping, which the method validates against the options dataclass
declared in its own file (:mod:`tcsa_uda.methods`). This module sits below the methods and the
engine, so both can import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from tcsa_uda.errors import ConfigError
from tcsa_uda.precision import PrecisionOption

Fidelity = Literal["paper", "released"]

InputEncoding = Literal["grey", "caffe_bgr"]
"""How a normalised grey slice in [-1, 1] becomes the network's 3-channel input
(:mod:`tcsa_uda.data.encoding`): ``grey`` repeats it; ``caffe_bgr`` is the authors' released
pipeline (scale to [0, 255], BGR order, minus the Caffe ImageNet mean)."""

Criterion = Literal["last", "source_val_dice", "target_entropy", "target_aux_agreement", "oracle"]
#: +1 when a larger score is better, -1 when a smaller one is
CRITERION_DIRECTION: dict[str, int] = {
    "source_val_dice": 1,
    "target_entropy": -1,
    "target_aux_agreement": 1,
    "oracle": 1,
}


@dataclass
class SelectionConfig:
    """How checkpoints are scored and chosen during training (see :mod:`tcsa_uda.engine.selection`).

    Attributes:
        criterion: the score that picks the checkpoint handed to the next stage and saved as
            the run's ``final.pt``; ``last`` keeps the last iteration.
        every: score every this many iterations (and at the end of a stage).
        max_slices: slices per subset (a fixed, evenly spaced subset; bounds the cost).
        log_oracle: also compute and log the oracle score for comparison studies (it is never
            used for selection unless ``criterion: oracle``).
    """

    criterion: Criterion = "last"
    every: int = 100
    max_slices: int = 48
    log_oracle: bool = False

    def __post_init__(self) -> None:
        if self.every < 1 or self.max_slices < 1:
            raise ConfigError(
                f"selection.every and selection.max_slices: expected >= 1, found {self.every} and {self.max_slices}."
            )


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
    """Class prompts and the frozen text encoder (see tcsa_uda.text; docs/method.md, Text).

    Attributes:
        encoder: ``minilm``, ``hf:<folder>``, ``file:<embeddings.pt>``, ``checkpoint:<model.pt>`` (the
            text stored in a checkpoint, e.g. the authors' CLIP embeddings of an imported release),
            or the text-free controls ``random[:<seed>[:<dim>]]`` and ``onehot``.
        template: prompt template with ``{class}`` and optionally ``{modality}``.
        use_descriptions: fill ``{class}`` with the dataset's class descriptions.
        cache_dir: embedding cache folder (default ``$TCSA_UDA_CACHE``).
        shuffle: the shuffled-text ablation: class ``k`` gets the prompt (and embedding) of class
            ``perm[k]``, ``perm`` a seeded permutation without fixed points, the same for every
            domain; recorded with the text in every checkpoint.
        shuffle_seed: seed of that permutation.
    """

    encoder: str = "minilm"
    template: str = "A {modality} of a {class}."
    use_descriptions: bool = False
    cache_dir: str | None = None
    shuffle: bool = False
    shuffle_seed: int = 0


@dataclass
class ModelConfig:
    """Network choice.

    Attributes:
        name: a registered segmenter (``deeplabv2_r101`` = the paper configuration, ``light``).
        weights: optional local file of backbone weights (no downloads).
        base_width: width of the light backbone (light model only).
        disc_width: first-layer channels of the PatchGAN discriminators (paper: 64).
        input_encoding: how a normalised slice becomes the network input (``grey``: the value
            repeated to 3 channels; ``caffe_bgr``: the released code's ``(x + 1) * 127.5`` in BGR
            order minus the Caffe mean, needed with ImageNet weights of the DeepLab release);
            recorded in checkpoints and applied by evaluate, predict and report.
    """

    name: str = "deeplabv2_r101"
    weights: str | None = None
    base_width: int | None = None
    disc_width: int = 64
    input_encoding: InputEncoding = "grey"


@dataclass
class OptimConfig:
    """Optimisers (docs/method.md, Training).

    SGD with poly decay for the segmenter (heads at ``head_lr_mult`` x ``lr``), Adam for the
    discriminators, AdamW for the fusion modules.
    """

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

    def __post_init__(self) -> None:
        for name in ("lr", "disc_lr", "fusion_lr", "head_lr_mult"):
            _check_number(f"optim.{name}", getattr(self, name), low=0.0, low_open=True)
        for name in ("weight_decay", "fusion_weight_decay", "power"):
            _check_number(f"optim.{name}", getattr(self, name), low=0.0)
        _check_number("optim.momentum", self.momentum, low=0.0, high=1.0)
        for i, beta in enumerate(self.disc_betas):
            _check_number(f"optim.disc_betas[{i}]", beta, low=0.0, high=1.0, high_open=True)
        if self.decay_iterations is not None and self.decay_iterations < 1:
            raise ConfigError(
                "optim.decay_iterations: expected null (the stage's iterations) or >= 1, "
                f"found {self.decay_iterations}."
            )


def _check_number(
    key: str, value: float, *, low: float, high: float | None = None, low_open: bool = False, high_open: bool = False
) -> None:
    """Raise a ConfigError naming ``key`` unless ``value`` is finite and within the bounds."""
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or too_low or too_high:
        lo = f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f" and {'<' if high_open else '<='} {high:g}"
        raise ConfigError(f"{key}: expected a finite number {lo}{hi}, found {value!r}.")


@dataclass
class StageConfig:
    """One training stage: a method trained for ``iterations`` iterations.

    Attributes:
        method: a registered method name (``tcsa-uda`` lists them in errors).
        iterations: iterations of this stage.
        init: ``previous`` starts from the previous stage's selected segmenter weights (stage 2
            of TCSA starts from stage 1), ``scratch`` from a fresh network. Discriminators and
            other method state are always fresh at the start of a stage (docs/method.md).
        options: the method's own options (loss weights, momenta, switches), validated by the
            method against the options dataclass declared in its file; e.g.
            ``stages.1.options.bank_momentum=0.9``.
    """

    method: str = "source_only"
    iterations: int = 1000
    init: Literal["previous", "scratch"] = "previous"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ConfigError(f"stages[].iterations: expected >= 1, found {self.iterations}.")


@dataclass
class TrainConfig:
    """A whole run: data, text, model, optimisation and the list of stages (each with its method's options)."""

    #: keys of earlier versions and where their content lives now (named in the error message)
    moved_keys: ClassVar[dict[str, str]] = {
        "loss": "loss weights and momenta are options of the method that uses them, per stage: "
        "stages.<i>.options.<name> (e.g. stages.1.options.bank_momentum=0.9); see docs/training.md",
    }

    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    fidelity: Fidelity = "paper"
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0  # CPU threads for torch; 0 keeps torch's default
    #: fp32 | bf16 | fp16 | auto (bf16 on CUDA with bf16 support, else fp16; fp32 on CPU); docs/performance.md
    precision: PrecisionOption = "auto"
    #: channels-last memory format for the networks and input batches; auto = on CUDA, off on CPU
    channels_last: bool | Literal["auto"] = "auto"
    #: torch.compile the segmenter's forward; a failure falls back to eager with a logged message
    compile: bool = False
    checkpoint_every: int = 500
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("stages: expected at least one stage, found an empty list.")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ConfigError(
                f"checkpoint_every and log_every: expected >= 1, found {self.checkpoint_every} and {self.log_every}."
            )
