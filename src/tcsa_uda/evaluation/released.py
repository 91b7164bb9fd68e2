"""Import the authors' released TCSA-UDA checkpoints (``tcsa-uda import-released``).

The released MM-WHS checkpoints (``ours_MR2CT_best.pth``, ``ours_CT2MR_best.pth``) are plain state
dicts of the authors' ``MulModSeg2D`` (DeepLab-v2 ResNet-101 + TCSA heads, 708 keys). Their
network is this project's ``deeplabv2_r101`` :class:`~tcsa_uda.models.segmenter.TCSASegmenter` in
its ``released`` variant (docs/method.md, Paper vs released fidelity); :func:`map_release_state`
renames every key (:func:`project_key`, no reshaping anywhere) and :func:`import_released` writes a
checkpoint that :func:`~tcsa_uda.evaluation.model.load_model`, ``evaluate`` and ``predict`` read
like any other:

* ``organ_embedding`` (2, C, 512), the release's frozen CLIP text embeddings (row 0 MR, row 1 CT),
  becomes the checkpoint's text embeddings of the domains ``MR`` and ``CT``; source and target come
  from the direction. At test time the release feeds the TARGET modality's row, which is what
  ``evaluate`` and ``predict`` do by default (the evaluated domain's row).
* the modules the release builds but never calls -- ``mha`` (an ``nn.MultiheadAttention``),
  ``fusion_ffn`` and ``norm`` (a BatchNorm) -- are ignored and listed (:data:`UNUSED_MODULES`);
* the release's test-time preprocessing is recorded: fixed per-modality statistics to [-1, 1]
  (MR -1.8/4.4, CT -2.8/3.2, ``prepare --normalization fixed``), 256 x 256 slices along the array
  axis the SIFA/MPSCL release slices (``coronal`` in the converted dataset, whose volumes are
  oriented like the release's training slices), and the ``caffe_bgr`` input encoding.

Files are read with ``torch.load(weights_only=True)``: a file holding anything but tensors and
plain containers is refused without running it. The usual wrappers are accepted: a dict holding
the state dict under ``state_dict``, ``model`` or ``model_state_dict``, and ``module.`` prefixes
(``DataParallel``). A file whose keys or shapes differ is refused with one message listing the
missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
from torch import Tensor

from tcsa_uda.data.normalize import FIXED_PRESETS, NormalizationSpec
from tcsa_uda.engine.checkpoint import CheckpointError, save_checkpoint
from tcsa_uda.errors import ConfigError, MissingPathError
from tcsa_uda.models import TCSASegmenter, build_segmenter
from tcsa_uda.text import TextEmbeddings

__all__ = [
    "DIRECTIONS",
    "RELEASE_CLASS_NAMES",
    "RELEASE_MODEL",
    "RELEASE_SIZE",
    "RELEASE_TEXT_DIM",
    "TEXT_KEY",
    "UNUSED_MODULES",
    "ImportSummary",
    "ReleaseState",
    "build_release_model",
    "import_released",
    "map_release_state",
    "project_key",
    "read_release_state",
    "release_checkpoint",
    "release_key",
]

RELEASE_CLASS_NAMES: Final[tuple[str, ...]] = (
    "background",
    "myocardium",
    "left atrium blood cavity",
    "left ventricle blood cavity",
    "ascending aorta",
)
"""MM-WHS classes in the release's label order (0 bg, 1 MYO, 2 LAC, 3 LVC, 4 AA)."""

RELEASE_MODEL: Final[str] = "deeplabv2_r101"
RELEASE_TEXT_DIM: Final[int] = 512
"""Width of the release's text embeddings (CLIP text tower)."""
RELEASE_SIZE: Final[int] = 256
"""The release evaluates 256 x 256 slices (its batch buffer is allocated at that size)."""
RELEASE_AXIS: Final[str] = "coronal"
"""Slicing axis of the converted SIFA/MPSCL release (``tcsa-uda convert mmwhs-sifa``): its third array axis."""
RELEASE_MODALITIES: Final[tuple[str, str]] = ("MR", "CT")
"""Domains of the rows of ``organ_embedding``: row 0 MR, row 1 CT."""
DIRECTIONS: Final[dict[str, tuple[str, str]]] = {"MR2CT": ("MR", "CT"), "CT2MR": ("CT", "MR")}
"""``--direction`` -> (source, target)."""
MODALITY_PHRASES: Final[dict[str, str]] = {"MR": "magnetic resonance imaging", "CT": "computed tomography"}
TEXT_KEY: Final[str] = "organ_embedding"
UNUSED_MODULES: Final[tuple[str, ...]] = ("mha", "fusion_ffn", "norm")
"""Top-level modules of the release that its forward pass never calls (ignored on import)."""
STATE_DICT_WRAPPERS: Final[tuple[str, ...]] = ("state_dict", "model", "model_state_dict")
RELEASE_COMMIT: Final[str] = "c9817fbb5a667a9596966c49ea153583ec67caa6"
"""Commit of the authors' model code the key map was read from (github.com/lalitmaurya47/TCSA_UDA)."""

# (release prefix, project prefix), one-to-one; the backbone ResNet keys keep their names.
_PREFIXES: Final[tuple[tuple[str, str], ...]] = (
    ("backbone.layer5.conv2d_list.", "aux_head.branches."),
    ("GAP.0.", "global_token.norm."),
    ("GAP.3.", "global_token.proj."),
    ("text_to_vision.", "text_proj.linear."),
    ("fusion_input_proj.", "fusion.query."),
    ("MHA.w_qs.", "fusion.attn.q_proj."),
    ("MHA.w_ks.", "fusion.attn.k_proj."),
    ("MHA.w_vs.", "fusion.attn.v_proj."),
    ("MHA.fc.", "fusion.attn.out_proj."),
    ("MHA.layer_norm.", "fusion.norm1."),
    ("MLP.mlp.", "fusion.mlp."),
    ("MLP.norm.", "fusion.norm2."),
    ("controller_mlp.", "controller.mlp."),
    ("seg_head.", "seg_head.layers."),
)
_BACKBONE = re.compile(r"backbone\.(conv1|bn1|layer[1-4])\.")
# layer6 = 5 blocks Sequential(conv, BN, ReLU) -> embed_head.blocks, a flat Sequential (3 modules per block)
_RELEASE_DECODER = re.compile(r"backbone\.layer6\.decoder\.(\d+)\.([01])\.(.+)")
_PROJECT_DECODER = re.compile(r"embed_head\.blocks\.(\d+)\.(.+)")


def project_key(key: str) -> str | None:
    """This project's key for a release key (facts of the authors' model file, docs/method.md).

    Returns:
        The ``TCSASegmenter`` state-dict key, or None for ``organ_embedding``, the unused modules and
        any key outside the release's layout.
    """
    if _BACKBONE.match(key):
        return key
    m = _RELEASE_DECODER.fullmatch(key)
    if m:
        return f"embed_head.blocks.{3 * int(m.group(1)) + int(m.group(2))}.{m.group(3)}"
    for release, project in _PREFIXES:
        if key.startswith(release):
            return project + key[len(release) :]
    return None


def release_key(key: str) -> str | None:
    """Inverse of :func:`project_key`: the release's name of a ``TCSASegmenter`` key (None if it has none)."""
    if _BACKBONE.match(key):
        return key
    m = _PROJECT_DECODER.fullmatch(key)
    if m:
        block, layer = divmod(int(m.group(1)), 3)
        return f"backbone.layer6.decoder.{block}.{layer}.{m.group(2)}" if layer < 2 else None
    for release, project in _PREFIXES:
        if key.startswith(project):
            return release + key[len(project) :]
    return None


@dataclass
class ReleaseState:
    """A release state dict mapped onto this project's network.

    Attributes:
        model_state: ``TCSASegmenter`` state dict (every key of the network, in its dtypes).
        organ_embedding: float32 ``(2, C, 512)``, row 0 MR, row 1 CT.
        ignored: release keys of :data:`UNUSED_MODULES` that were present and left out.
        unwrapped: how the state dict was found in the file (e.g. ``"['state_dict'], 'module.' prefix"``).
    """

    model_state: dict[str, Tensor]
    organ_embedding: Tensor
    ignored: list[str]
    unwrapped: str = "plain state dict"


def _shape(t: Tensor) -> list[int]:
    return [int(n) for n in t.shape]


def _listing(items: Sequence[str], limit: int = 12) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; ... and {len(items) - limit} more" if len(items) > limit else "")


def build_release_model(num_classes: int = len(RELEASE_CLASS_NAMES)) -> TCSASegmenter:
    """The network a release checkpoint fits: ``deeplabv2_r101``, ``released`` variant, text width 512."""
    return build_segmenter(RELEASE_MODEL, num_classes, RELEASE_TEXT_DIM, variant="released")


def map_release_state(
    state: Mapping[str, Any], model: TCSASegmenter, source: str = "release state dict", unwrapped: str = ""
) -> ReleaseState:
    """Rename and check every key of a release state dict against ``model``.

    Args:
        state: the authors' ``MulModSeg2D`` state dict (already unwrapped, :func:`read_release_state`).
        model: the network to fill (:func:`build_release_model`); its keys and shapes are the reference.
        source: the file name for messages.
        unwrapped: how ``state`` was found in the file (recorded in the result).

    Returns:
        :class:`ReleaseState`; nothing is loaded into ``model``.

    Raises:
        CheckpointError: keys are missing, unexpected or mis-shaped (all listed in one message, with
            the expected and found shapes), or a value is not a tensor.
    """
    expected = model.state_dict()
    num_classes, text_dim = int(model.num_classes), int(model.text_dim)
    text_shape = [len(RELEASE_MODALITIES), num_classes, text_dim]
    missing: list[str] = []
    unexpected: list[str] = []
    misshaped: list[str] = []
    not_tensors = [f"{k} ({type(v).__name__})" for k, v in state.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{source}: expected a state dict of tensors, found other values: {_listing(not_tensors)}."
        )
    mapped: dict[str, Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        if key == TEXT_KEY:
            if _shape(value) != text_shape or not value.is_floating_point():
                misshaped.append(f"{key} (expected {text_shape} float, found {_shape(value)} {value.dtype})")
            continue
        if key.split(".", 1)[0] in UNUSED_MODULES:
            ignored.append(key)
            continue
        target = project_key(key)
        if target is None or target not in expected:
            unexpected.append(f"{key} (found {_shape(value)})")
        elif _shape(value) != _shape(expected[target]):
            misshaped.append(f"{key} (expected {_shape(expected[target])}, found {_shape(value)})")
        elif value.is_floating_point() != expected[target].is_floating_point():
            misshaped.append(f"{key} (expected dtype {expected[target].dtype}, found {value.dtype})")
        else:
            mapped[target] = value.detach().to(dtype=expected[target].dtype, device="cpu")
    if TEXT_KEY not in state:
        missing.append(f"{TEXT_KEY} (expected {text_shape})")
    for key, value in expected.items():
        name = release_key(key) or f"<no release name for {key}>"
        if key not in mapped and name not in state:
            missing.append(f"{name} (expected {_shape(value)})")
    if missing or unexpected or misshaped:
        parts = [
            f"{len(found)} {what} key(s): {_listing(found)}"
            for what, found in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
            if found
        ]
        raise CheckpointError(
            f"{source}: expected the authors' released TCSA-UDA state dict (MulModSeg2D, DeepLab-v2 ResNet-101, "
            f"{num_classes} classes, text width {text_dim}); found {', '.join(parts)}."
        )
    embedding = state[TEXT_KEY].detach().to(dtype=torch.float32, device="cpu")
    return ReleaseState(
        model_state=mapped, organ_embedding=embedding, ignored=ignored, unwrapped=unwrapped or "plain state dict"
    )


def _last_line(exc: BaseException) -> str:
    """The most specific line of an unpickling error (torch puts advice around it)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "documentation" not in ln]
    return lines[-1] if lines else type(exc).__name__


def read_release_state(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], str]:
    """Load a release checkpoint file safely and unwrap its state dict.

    Returns:
        ``(state, how)``: the state dict with ``module.`` prefixes removed, and how it was found.

    Raises:
        MissingPathError: no such file.
        CheckpointError: unreadable, refused by ``weights_only`` (it would run code), or no state
            dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"{path}: no such checkpoint file.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message also suggests weights_only=False; only the line naming the object is kept.
        named = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln]
        if not named:
            raise CheckpointError(
                f"{path}: cannot be read as a torch checkpoint of tensors (the weights-only reader stopped: "
                f"{_last_line(exc)}); nothing in it was run."
            ) from exc
        raise CheckpointError(
            f"{path}: refused: the file holds Python objects other than tensors and plain containers, and loading "
            f"them could run code; it was read with torch.load(weights_only=True) and nothing in it was run "
            f"({named[0]})."
        ) from exc
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({type(exc).__name__}: {exc}).") from exc
    how: list[str] = []
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}
        if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = [k for k in STATE_DICT_WRAPPERS if isinstance(obj.get(k), Mapping)]
            if not inner:
                break
            how.append(f"[{inner[0]!r}]")
            obj = obj[inner[0]]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) for k in obj):
        found = f"a mapping with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{path}: expected a state dict (name -> tensor), or a dict holding one under "
            f"{', '.join(STATE_DICT_WRAPPERS)}; found {found}."
        )
    state = dict(obj)
    prefix = "module."
    if all(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items()}
        how.append(f"{prefix!r} prefix")
    return state, ", ".join(how) or "plain state dict"


def release_text(organ_embedding: Tensor, class_names: Sequence[str]) -> TextEmbeddings:
    """The release's text embeddings as :class:`TextEmbeddings` of the domains ``MR`` (row 0) and ``CT`` (row 1).

    The prompts behind them were not published; each prompt string says which row and class it is.
    """
    prompts = [
        [f"released organ_embedding[{row}] ({domain}), class {name!r}; prompt not published" for name in class_names]
        for row, domain in enumerate(RELEASE_MODALITIES)
    ]
    return TextEmbeddings(
        domains=list(RELEASE_MODALITIES),
        class_names=list(class_names),
        prompts=prompts,
        embeddings=organ_embedding,
        encoder="released:organ_embedding (authors' CLIP text embeddings)",
    )


def release_preprocessing(size: int = RELEASE_SIZE) -> dict[str, Any]:
    """The release's test-time preprocessing as a checkpoint ``preprocessing`` record.

    ``prepare`` holds the settings ``evaluate``/``predict`` apply (:class:`PreprocessingSettings`):
    fixed normalisation with the SIFA ranges, ``size`` x ``size`` slices along :data:`RELEASE_AXIS`.
    ``release`` describes the authors' pipeline in words, for the record.
    """
    ranges = FIXED_PRESETS["sifa"]
    return {
        "prepare": {
            "axis": RELEASE_AXIS,
            "size": int(size),
            "clip_percentiles": [0.5, 99.5],  # unused under the fixed normalisation
            "normalization": NormalizationSpec.fixed(ranges).to_dict(),
        },
        "size": int(size),
        "modalities": dict(MODALITY_PHRASES),
        "input_encoding": "caffe_bgr",
        "release": {
            "intensity_map": "2 (x - lo) / (hi - lo) - 1 with the TARGET modality's fixed (lo, hi), no clipping",
            "ranges": {d: list(r) for d, r in sorted(ranges.items())},
            "input": "(x + 1) * 127.5, BGR order, minus the Caffe mean (104.00698793, 116.66876762, 122.67891434)",
            "test_volumes": "npz arr_0 flipped on axes 0 and 1 before slicing (undone by convert mmwhs-sifa)",
            "text_row": "the target modality's row of organ_embedding",
            "upsampling": f"main logits bilinear (align_corners=True) to {size} x {size}; aux logits unused",
        },
    }


def release_checkpoint(
    release: ReleaseState,
    direction: str,
    class_names: Sequence[str] = RELEASE_CLASS_NAMES,
    size: int = RELEASE_SIZE,
    origin: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint payload (the training engine's keys) of a mapped release state dict.

    Args:
        release: :func:`map_release_state`'s result.
        direction: ``MR2CT`` or ``CT2MR`` (:data:`DIRECTIONS`).
        class_names: class names in label order (background first), one per output channel.
        size: side of the slices the model is applied to (the release: 256).
        origin: what to record about the imported file (name, sha256, how it was unwrapped).

    Raises:
        ConfigError: an unknown direction, or class names that do not match the model's classes.
    """
    if direction not in DIRECTIONS:
        raise ConfigError(f"--direction: expected one of {', '.join(DIRECTIONS)}, found {direction!r}.")
    num_classes = int(release.organ_embedding.shape[1])
    if len(class_names) != num_classes:
        raise ConfigError(
            f"--classes: the checkpoint has {num_classes} classes, found {len(class_names)} names {list(class_names)}."
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"--size: expected a positive integer (pixels), found {size!r}.")
    source, target = DIRECTIONS[direction]
    text = release_text(release.organ_embedding, class_names)
    return {
        "config": {},
        "stage": None,
        "method": "tcsa (authors' release)",
        "iteration": None,
        "model": release.model_state,
        "model_name": RELEASE_MODEL,
        "model_kwargs": {"variant": "released"},
        "class_names": list(class_names),
        "source": source,
        "target": target,
        "text": text.to_dict(),
        "preprocessing": release_preprocessing(size),
        "selection": (
            "authors' released checkpoint: chosen by the best Dice on the target TEST volumes during training "
            "(oracle selection, uses target test labels)"
        ),
        "imported": {
            "from": "authors' released TCSA-UDA checkpoint (github.com/lalitmaurya47/TCSA_UDA)",
            "model_code_commit": RELEASE_COMMIT,
            "direction": direction,
            "ignored_keys": list(release.ignored),
            "unwrapped": release.unwrapped,
            **dict(origin or {}),
        },
    }


@dataclass
class ImportSummary:
    """What :func:`import_released` did.

    Attributes:
        out: the written checkpoint.
        direction, source, target: the adaptation direction and its domains.
        mapped: number of network keys filled.
        ignored: release keys of the unused modules that were left out.
        class_names: class names recorded.
        unwrapped: how the state dict was found in the file.
        sha256: checksum of the imported file.
    """

    out: Path
    direction: str
    source: str
    target: str
    mapped: int
    ignored: list[str]
    class_names: list[str]
    unwrapped: str
    sha256: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_released(
    checkpoint: str | os.PathLike[str],
    direction: str,
    out: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    size: int = RELEASE_SIZE,
) -> ImportSummary:
    """Convert an authors' released checkpoint into a tcsa-uda checkpoint (module docstring).

    Args:
        checkpoint: the authors' ``.pth`` file.
        direction: ``MR2CT`` or ``CT2MR``.
        out: the checkpoint to write (atomically).
        classes: class names in label order, background first; default :data:`RELEASE_CLASS_NAMES`.
        size: slice side recorded for evaluate/predict (the release: 256).

    Returns:
        :class:`ImportSummary`.

    Raises:
        ConfigError: unknown direction, class names that do not fit, or ``out`` equal to the input.
        MissingPathError / CheckpointError: see :func:`read_release_state` and :func:`map_release_state`.
    """
    src, dest = Path(checkpoint), Path(out)
    if direction not in DIRECTIONS:
        raise ConfigError(f"--direction: expected one of {', '.join(DIRECTIONS)}, found {direction!r}.")
    names = list(classes) if classes is not None else list(RELEASE_CLASS_NAMES)
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"--classes: expected at least two distinct class names, background first, found {names}.")
    if dest.exists() and src.exists() and dest.resolve() == src.resolve():
        raise ConfigError(f"--out {dest}: this is the input file; choose another output path.")
    state, how = read_release_state(src)
    model = build_release_model(len(names))
    release = map_release_state(state, model, source=str(src), unwrapped=how)
    model.load_state_dict(release.model_state)  # every key present with its shape: a final check
    sha = _sha256(src)
    payload = release_checkpoint(release, direction, names, size, origin={"file": src.name, "sha256": sha})
    save_checkpoint(dest, payload)
    source, target = DIRECTIONS[direction]
    return ImportSummary(
        out=dest,
        direction=direction,
        source=source,
        target=target,
        mapped=len(release.model_state),
        ignored=list(release.ignored),
        class_names=names,
        unwrapped=release.unwrapped,
        sha256=sha,
    )
