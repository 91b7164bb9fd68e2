"""``tcsa-uda prepare``: turn the volumes of every domain into 2D training slices.

Each volume is normalised on its own (:mod:`tcsa_uda.data.normalize`), cut into slices along an
anatomical axis found from its affine (axial = the S/I array axis, coronal = A/P, sagittal = L/R;
an integer picks the array axis directly), padded to a centred square with its darkest value
(-1 after normalisation; background 0 for labels) and resized to ``size x size`` (images
bilinear, labels nearest). The result of one case is one memory-mappable ``.npy`` per volume::

    OUT/index.json                  every trusted case: files, geometry, affine, normalisation
    OUT/prepare.yaml                the resolved settings (PrepareConfig)
    OUT/<domain>/<case>_img.npy     float32 (S, size, size), values in [-1, 1]
    OUT/<domain>/<case>_seg.npy     uint8   (S, size, size), only for labelled cases

The recorded :class:`SliceGeometry` maps a predicted slice stack back onto the original voxel
grid (:func:`slices_to_volume`), so evaluation runs on the original volumes.

Idempotency: each index entry records the settings it was made with and the size and
modification time of its source files. A second run reuses every case whose entry matches and
whose files are present; a case whose source or settings changed is prepared again (its files
are replaced atomically); cases no longer in the dataset are dropped from the index (their old
files are left on disk but no longer trusted). Only files listed in ``index.json`` are trusted:
it is written after the files it lists (and after each newly prepared case, marked incomplete
until the run ends), so an interrupted run leaves at most stray ``.*.tmp-*`` files that nothing
reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from tcsa_uda.atomic import atomic_write_json, atomic_write_with
from tcsa_uda.config import save_config, to_dict
from tcsa_uda.data.contract import SPLITS, CaseSpec, DatasetSpec, DomainSpec, load_dataset
from tcsa_uda.data.io import load_nifti
from tcsa_uda.data.normalize import NormalizationRecord, check_percentiles, normalize_volume
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError

INDEX_FILE = "index.json"
CONFIG_FILE = "prepare.yaml"
FORMAT_VERSION = 1
IMAGE_SUFFIX = "_img.npy"
LABEL_SUFFIX = "_seg.npy"

AXIS_CODES: dict[str, tuple[str, str]] = {
    "axial": ("S", "I"),
    "coronal": ("A", "P"),
    "sagittal": ("L", "R"),
}
"""Anatomical slicing axis -> the orientation codes (``nibabel.aff2axcodes``) of its array axis."""

_CHUNK = 32  # slices resized at once (bounds the memory of one interpolate call)


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class PrepareConfig:
    """The settings of one ``prepare`` run, saved as ``OUT/prepare.yaml``.

    Attributes:
        dataset: the dataset folder (holding ``dataset.json``).
        out: the output folder.
        axis: ``axial``, ``coronal``, ``sagittal`` or an array axis ``0``, ``1``, ``2``.
        size: side of the square output slices in pixels.
        clip_percentiles: (low, high) intensity percentiles each volume is clipped to.
    """

    dataset: Path
    out: Path
    axis: str = "axial"
    size: int = 256
    clip_percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        parse_axis(self.axis)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"size: expected a positive integer (pixels), found {self.size!r}.")
        check_percentiles(self.clip_percentiles)

    def settings(self) -> dict[str, Any]:
        """The settings that determine the content of the prepared files."""
        return {"axis": self.axis, "size": self.size, "clip_percentiles": list(map(float, self.clip_percentiles))}


def parse_axis(axis: str | int) -> str | int:
    """Validate a slicing axis: an anatomical name (str) or an array axis (int 0-2).

    Raises:
        ConfigError: naming the valid choices.
    """
    if isinstance(axis, bool):
        raise ConfigError(f"axis: expected one of {', '.join(AXIS_CODES)}, 0, 1, 2; found {axis!r}.")
    if isinstance(axis, int) or (isinstance(axis, str) and axis.strip().isdigit()):
        value = int(axis)
        if value in (0, 1, 2):
            return value
    elif isinstance(axis, str) and axis.strip().lower() in AXIS_CODES:
        return axis.strip().lower()
    raise ConfigError(f"axis: expected one of {', '.join(AXIS_CODES)}, 0, 1, 2; found {axis!r}.")


def resolve_axis(affine: np.ndarray, axis: str | int, what: str = "image") -> int:
    """The array axis to slice along.

    Args:
        affine: (4, 4) voxel-to-world affine of the volume.
        axis: anatomical name (``axial``/``coronal``/``sagittal``) or array axis (0, 1, 2).
        what: the volume's name in error messages.

    Raises:
        ConfigError: invalid ``axis``.
        DatasetError: the affine does not determine the anatomical axis.
    """
    parsed = parse_axis(axis)
    if isinstance(parsed, int):
        return parsed
    codes = nib.aff2axcodes(np.asarray(affine, dtype=np.float64))
    wanted = AXIS_CODES[parsed]
    matches = [i for i, code in enumerate(codes) if code in wanted]
    if len(matches) != 1:
        raise DatasetError(
            f"{what}: cannot find the {parsed} array axis from the affine (orientation codes {codes}); "
            f"fix the affine or pass an array axis (0, 1 or 2) instead of {parsed!r}."
        )
    return matches[0]


# --------------------------------------------------------------------------------------------
# Geometry: volume <-> slice stack


@dataclass(frozen=True)
class SliceGeometry:
    """How a volume was turned into a stack of square slices (and how to undo it).

    The volume is moved so that ``axis`` comes first, giving ``(S, H, W)`` with ``(H, W)`` the
    remaining array axes in order; each slice is padded to ``P x P`` (``P = max(H, W)``, centred)
    and resized to ``size x size``.

    Attributes:
        axis: array axis of the original volume that indexes slices.
        original_shape: shape of the original 3D volume.
        pad: ``((top, bottom), (left, right))`` padding added to each ``H x W`` slice.
        size: side of the output slices.
    """

    axis: int
    original_shape: tuple[int, int, int]
    pad: tuple[tuple[int, int], tuple[int, int]]
    size: int

    @property
    def n_slices(self) -> int:
        return self.original_shape[self.axis]

    @property
    def in_plane_shape(self) -> tuple[int, int]:
        """``(H, W)``: the original slice shape before padding."""
        h, w = (n for i, n in enumerate(self.original_shape) if i != self.axis)
        return h, w

    @property
    def padded_size(self) -> int:
        return max(self.in_plane_shape)

    @property
    def scale(self) -> float:
        """Output pixels per original pixel in-plane (``size / padded_size``)."""
        return self.size / self.padded_size

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable mapping; derived values are included for readers."""
        return {
            "axis": self.axis,
            "original_shape": list(self.original_shape),
            "in_plane_shape": list(self.in_plane_shape),
            "pad": [list(self.pad[0]), list(self.pad[1])],
            "padded_size": self.padded_size,
            "size": self.size,
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SliceGeometry:
        (top, bottom), (left, right) = data["pad"]
        shape = tuple(int(n) for n in data["original_shape"])
        if len(shape) != 3:
            raise ValueError(f"original_shape must have 3 entries, found {shape}")
        return cls(
            axis=int(data["axis"]),
            original_shape=shape,  # type: ignore[arg-type]
            pad=((int(top), int(bottom)), (int(left), int(right))),
            size=int(data["size"]),
        )


def make_geometry(shape: Sequence[int], axis: int, size: int) -> SliceGeometry:
    """The geometry that slices a volume of ``shape`` along ``axis`` into ``size x size``."""
    if len(shape) != 3:
        raise DatasetError(f"expected a 3D volume, found shape {tuple(shape)}.")
    if axis not in (0, 1, 2):
        raise ConfigError(f"axis: expected an array axis 0, 1 or 2, found {axis!r}.")
    if size < 1:
        raise ConfigError(f"size: expected a positive integer, found {size!r}.")
    h, w = (int(n) for i, n in enumerate(shape) if i != axis)
    side = max(h, w)
    pad = ((side - h) // 2, side - h - (side - h) // 2), ((side - w) // 2, side - w - (side - w) // 2)
    return SliceGeometry(axis=axis, original_shape=tuple(int(n) for n in shape), pad=pad, size=size)  # type: ignore[arg-type]


def image_to_slices(volume: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Slice, pad (with the volume's minimum) and resize (bilinear) a normalised image.

    Args:
        volume: (X, Y, Z) image of shape ``geometry.original_shape``.

    Returns:
        float32 (S, size, size).
    """
    _check_shape(volume, geometry)
    stack = np.moveaxis(np.asarray(volume, dtype=np.float32), geometry.axis, 0)  # (S, H, W)
    stack = np.pad(stack, ((0, 0), *geometry.pad), constant_values=float(stack.min()))  # (S, P, P)
    return _resize(stack[:, None], geometry.size, "bilinear")[:, 0]


def label_to_slices(volume: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Slice, pad (with background 0) and resize (nearest) a label map.

    Args:
        volume: (X, Y, Z) integer label map with values in 0..255.

    Returns:
        uint8 (S, size, size).
    """
    _check_shape(volume, geometry)
    if volume.size and (volume.min() < 0 or volume.max() > 255):
        raise DatasetError(f"expected label ids in 0..255, found values in [{volume.min()}, {volume.max()}].")
    stack = np.moveaxis(np.asarray(volume, dtype=np.uint8), geometry.axis, 0)  # (S, H, W)
    stack = np.pad(stack, ((0, 0), *geometry.pad), constant_values=0)  # (S, P, P)
    if stack.shape[-1] == geometry.size:
        return np.ascontiguousarray(stack)
    return _resize(stack[:, None].astype(np.float32), geometry.size, "nearest-exact")[:, 0].round().astype(np.uint8)


def slices_to_volume(pred: np.ndarray | torch.Tensor, geometry: SliceGeometry) -> np.ndarray:
    """Map a predicted slice stack back onto the original voxel grid (inverse of slicing).

    Args:
        pred: either an integer label stack (S, size, size), resized back with nearest
            neighbours, or class probabilities / logits (S, C, size, size), resized bilinearly.
        geometry: the :class:`SliceGeometry` recorded for the volume.

    Returns:
        Labels: (X, Y, Z) array of ``pred``'s dtype on ``geometry.original_shape``.
        Probabilities: float32 (C, X, Y, Z).

    Raises:
        DatasetError: ``pred`` does not have ``geometry.n_slices`` slices of ``size x size``.
    """
    arr = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    s, size = geometry.n_slices, geometry.size
    if arr.ndim not in (3, 4) or arr.shape[0] != s or arr.shape[-2:] != (size, size):
        raise DatasetError(
            f"slices_to_volume: expected (S, {size}, {size}) labels or (S, C, {size}, {size}) probabilities "
            f"with S = {s} slices, found shape {arr.shape}."
        )
    side = geometry.padded_size
    (top, _), (left, _) = geometry.pad
    h, w = geometry.in_plane_shape
    if arr.ndim == 3:
        if arr.dtype.kind not in "biu":
            raise DatasetError(f"slices_to_volume: expected an integer label stack, found dtype {arr.dtype}.")
        if side == size:
            full = arr
        else:
            full = _resize(arr[:, None].astype(np.float32), side, "nearest-exact")[:, 0].round().astype(arr.dtype)
        crop = full[:, top : top + h, left : left + w]  # (S, H, W)
        return np.ascontiguousarray(np.moveaxis(crop, 0, geometry.axis))
    full = arr.astype(np.float32) if side == size else _resize(arr.astype(np.float32), side, "bilinear")
    crop = full[:, :, top : top + h, left : left + w]  # (S, C, H, W)
    return np.ascontiguousarray(np.moveaxis(crop.transpose(1, 0, 2, 3), 1, 1 + geometry.axis))  # (C, X, Y, Z)


def _check_shape(volume: np.ndarray, geometry: SliceGeometry) -> None:
    if tuple(volume.shape) != geometry.original_shape:
        raise DatasetError(f"expected a volume of shape {geometry.original_shape}, found {tuple(volume.shape)}.")


def _resize(stack: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize (N, C, P, P) float32 to (N, C, size, size) with ``torch`` interpolation, in chunks."""
    if stack.shape[-1] == size and stack.shape[-2] == size:
        return np.ascontiguousarray(stack, dtype=np.float32)
    out = np.empty((*stack.shape[:2], size, size), dtype=np.float32)
    align = {"align_corners": False} if mode == "bilinear" else {}
    with torch.no_grad():
        for start in range(0, stack.shape[0], _CHUNK):
            chunk = torch.from_numpy(np.ascontiguousarray(stack[start : start + _CHUNK], dtype=np.float32))
            out[start : start + _CHUNK] = F.interpolate(chunk, size=(size, size), mode=mode, **align).numpy()
    return out


# --------------------------------------------------------------------------------------------
# The prepared index


@dataclass(frozen=True, eq=False)
class PreparedCase:
    """One prepared volume, as listed in ``index.json``.

    Attributes:
        domain: domain (modality) name.
        id: case id from ``dataset.json``.
        split: ``train``, ``val`` or ``test``.
        image: path of the float32 (S, size, size) slice stack.
        label: path of the uint8 (S, size, size) label stack, or None when unlabelled.
        geometry: how to map slices back onto the original grid.
        affine: (4, 4) voxel-to-world affine of the original image.
        normalization: the intensity normalisation applied.
        foreground_slices: indices of the slices whose label has a foreground pixel
            (None when unlabelled).
        source: the source file paths (relative to the dataset), sizes and modification times.
    """

    domain: str
    id: str
    split: str
    image: Path
    label: Path | None
    geometry: SliceGeometry
    affine: np.ndarray
    normalization: NormalizationRecord
    foreground_slices: tuple[int, ...] | None
    source: dict[str, Any]

    @property
    def labelled(self) -> bool:
        return self.label is not None

    @property
    def n_slices(self) -> int:
        return self.geometry.n_slices

    @property
    def original_shape(self) -> tuple[int, int, int]:
        return self.geometry.original_shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along the original array axes."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    def load_image(self) -> np.ndarray:
        """The image stack, memory-mapped read-only: float32 (S, size, size)."""
        return np.load(self.image, mmap_mode="r")

    def load_label(self) -> np.ndarray:
        """The label stack, memory-mapped read-only: uint8 (S, size, size).

        Raises:
            DatasetError: the case has no label.
        """
        if self.label is None:
            raise DatasetError(f"case {self.domain}/{self.id} is unlabelled: no label stack was prepared.")
        return np.load(self.label, mmap_mode="r")


@dataclass(frozen=True)
class PreparedIndex:
    """The content of ``OUT/index.json`` (see :func:`load_prepared`).

    Attributes:
        root: the prepared folder.
        labels: class name -> id, copied from ``dataset.json``.
        class_descriptions: optional long class descriptions from ``dataset.json``.
        modalities: domain name -> modality phrase (for text prompts).
        settings: ``axis``, ``size`` and ``clip_percentiles`` used.
        dataset_path: the source dataset folder as it was when preparing.
        dataset_name: the dataset's name.
        all_cases: every prepared case, in dataset order.
    """

    root: Path
    labels: dict[str, int]
    class_descriptions: dict[str, str]
    modalities: dict[str, str]
    settings: dict[str, Any]
    dataset_path: str
    dataset_name: str
    all_cases: tuple[PreparedCase, ...]

    @property
    def class_names(self) -> list[str]:
        """Class names ordered by id (index 0 is background)."""
        return [name for name, _ in sorted(self.labels.items(), key=lambda kv: kv[1])]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def domains(self) -> list[str]:
        return list(self.modalities)

    @property
    def size(self) -> int:
        return int(self.settings["size"])

    def cases(self, domain: str, split: str | Sequence[str] | None = None) -> list[PreparedCase]:
        """The cases of ``domain`` in ``split`` (one name, several, or None for all).

        Raises:
            DatasetError: unknown domain or split.
        """
        if domain not in self.modalities:
            raise DatasetError(
                f"{self.root / INDEX_FILE}: no domain {domain!r}; the prepared domains are "
                f"{', '.join(self.modalities)}."
            )
        splits = _split_set(split)
        return [c for c in self.all_cases if c.domain == domain and (splits is None or c.split in splits)]

    def case(self, domain: str, case_id: str) -> PreparedCase:
        """One case by domain and id."""
        for c in self.cases(domain):
            if c.id == case_id:
                return c
        raise DatasetError(f"{self.root / INDEX_FILE}: domain {domain!r} has no prepared case {case_id!r}.")


def _split_set(split: str | Sequence[str] | None) -> set[str] | None:
    if split is None:
        return None
    splits = {split} if isinstance(split, str) else set(split)
    unknown = sorted(splits - set(SPLITS))
    if unknown or not splits:
        raise DatasetError(f"split: expected names among {list(SPLITS)}, found {sorted(splits)}.")
    return splits


def load_prepared(out: str | Path) -> PreparedIndex:
    """Read ``out/index.json`` written by :func:`prepare_dataset`.

    Raises:
        MissingPathError: no index (the folder was never prepared), or a listed file is missing.
        DatasetError: the index is unreadable, from another format version, or incomplete
            (an interrupted run).
    """
    root = Path(out)
    path = root / INDEX_FILE
    if not path.is_file():
        raise MissingPathError(
            f"{root}: no prepared slices found ({INDEX_FILE} is missing); "
            f"run `tcsa-uda prepare DATASET --out {root}` first."
        )
    data = _read_index(path)
    if data is None:
        raise DatasetError(
            f"{path}: not a valid prepared index (format version {FORMAT_VERSION}); run `tcsa-uda prepare` again."
        )
    if not data.get("complete", False):
        raise DatasetError(
            f"{path}: the prepare run that wrote it was interrupted; run `tcsa-uda prepare` again to finish."
        )
    try:
        index = _index_from_dict(root, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(
            f"{path}: malformed entry ({type(exc).__name__}: {exc}); run `tcsa-uda prepare` again."
        ) from exc
    missing = [str(p) for c in index.all_cases for p in (c.image, c.label) if p is not None and not p.is_file()]
    if missing:
        listed = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise MissingPathError(
            f"{path}: {len(missing)} file(s) listed in the index are missing ({listed}); run `tcsa-uda prepare` again."
        )
    return index


def _read_index(path: Path) -> dict[str, Any] | None:
    """The decoded index, or None when it is unreadable or of another format version."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        return None
    return data


def _case_from_dict(root: Path, entry: dict[str, Any]) -> PreparedCase:
    files = entry["files"]
    fg = entry.get("foreground_slices")
    return PreparedCase(
        domain=str(entry["domain"]),
        id=str(entry["id"]),
        split=str(entry["split"]),
        image=root / files["image"],
        label=None if files.get("label") is None else root / files["label"],
        geometry=SliceGeometry.from_dict(entry["geometry"]),
        affine=np.asarray(entry["affine"], dtype=np.float64).reshape(4, 4),
        normalization=NormalizationRecord.from_dict(entry["normalization"]),
        foreground_slices=None if fg is None else tuple(int(i) for i in fg),
        source=dict(entry["source"]),
    )


def _index_from_dict(root: Path, data: dict[str, Any]) -> PreparedIndex:
    return PreparedIndex(
        root=root,
        labels={str(k): int(v) for k, v in data["labels"].items()},
        class_descriptions=dict(data.get("class_descriptions", {})),
        modalities={str(k): str(v["modality"]) for k, v in data["domains"].items()},
        settings=dict(data["settings"]),
        dataset_path=str(data["dataset"]["path"]),
        dataset_name=str(data["dataset"]["name"]),
        all_cases=tuple(_case_from_dict(root, e) for e in data["cases"]),
    )


# --------------------------------------------------------------------------------------------
# Preparing


def prepare_dataset(
    dataset: str | Path,
    out: str | Path,
    axis: str = "axial",
    size: int = 256,
    clip_percentiles: tuple[float, float] = (0.5, 99.5),
    progress: bool = True,
) -> PreparedIndex:
    """Prepare the 2D training slices of every case of every domain of ``dataset``.

    Args:
        dataset: dataset folder holding ``dataset.json``.
        out: output folder (created if needed).
        axis: ``axial``, ``coronal``, ``sagittal`` (found from each affine) or ``0``/``1``/``2``.
        size: side of the square slices.
        clip_percentiles: (low, high) percentiles each volume is clipped to before z-scoring.
        progress: show a tqdm progress bar over the cases.

    Returns:
        The index of the prepared folder (as :func:`load_prepared` would read it).

    Raises:
        ConfigError: invalid settings.
        DatasetError, MissingPathError: the dataset or one of its files is invalid.
    """
    low, high = check_percentiles(clip_percentiles)
    # The canonical spelling ("axial", "0") so that equal settings compare equal between runs.
    cfg = PrepareConfig(
        dataset=Path(dataset), out=Path(out), axis=str(parse_axis(axis)), size=size, clip_percentiles=(low, high)
    )
    spec = load_dataset(cfg.dataset)
    root = cfg.out
    root.mkdir(parents=True, exist_ok=True)
    names = _file_names(spec)
    old_path = root / INDEX_FILE
    old = _read_index(old_path) if old_path.is_file() else None
    header = _index_header(spec, cfg)
    # Label stacks are only valid for the class set they were checked against.
    reuse = old is not None and old.get("labels") == header["labels"]
    old_entries = {(e["domain"], e["id"]): e for e in old["cases"]} if old is not None and reuse else {}
    entries: list[dict[str, Any]] = []
    wrote_partial = False
    todo = [(dname, dom, case) for dname, dom in spec.domains.items() for case in dom.cases]
    bar = tqdm(todo, desc="prepare", unit="case", disable=not progress)
    for dname, dom, case in bar:
        bar.set_postfix_str(f"{dname}/{case.id}", refresh=False)
        settings = {**cfg.settings(), "channel": dom.channel}
        source = _source_record(spec.root, case)
        previous = old_entries.get((dname, case.id))
        if previous is not None and _reusable(root, previous, settings, source):
            entries.append({**previous, "split": case.split})
            continue
        entries.append(_prepare_case(spec, dom, case, root, names[(dname, case.id)], settings, source))
        atomic_write_json(old_path, {**header, "complete": False, "cases": entries})
        wrote_partial = True
    bar.close()

    final = {**header, "complete": True, "cases": entries}
    if _config_text(cfg) != _read_text(root / CONFIG_FILE):
        save_config(cfg, root / CONFIG_FILE)
    if wrote_partial or final != old:
        atomic_write_json(old_path, final)
    return load_prepared(root)


def _config_text(cfg: PrepareConfig) -> str:
    """The YAML text :func:`save_config` writes for ``cfg``."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _index_header(spec: DatasetSpec, cfg: PrepareConfig) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "dataset": {"name": spec.name, "path": str(spec.root.resolve())},
        "labels": dict(spec.labels),
        "class_names": spec.class_names,
        "class_descriptions": dict(spec.class_descriptions),
        "domains": {d: {"modality": dom.modality, "channel": dom.channel} for d, dom in spec.domains.items()},
        "settings": cfg.settings(),
    }


def _file_names(spec: DatasetSpec) -> dict[tuple[str, str], str]:
    """``(domain, case id) -> "<domain>/<case>"`` file stem, safe on every file system.

    Raises:
        DatasetError: two ids (or domains) of one dataset map to the same file name.
    """
    out: dict[tuple[str, str], str] = {}
    seen: dict[str, tuple[str, str]] = {}
    for dname, dom in spec.domains.items():
        for case in dom.cases:
            stem = f"{_safe(dname)}/{_safe(case.id)}"
            if stem.lower() in seen:
                other = seen[stem.lower()]
                raise DatasetError(
                    f"{spec.root}: cases {other[0]}/{other[1]} and {dname}/{case.id} map to the same prepared file "
                    f"name {stem!r}; make the ids differ in more than letter case and punctuation."
                )
            seen[stem.lower()] = (dname, case.id)
            out[(dname, case.id)] = stem
    return out


def _safe(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return "_" + safe if safe.startswith(".") else safe


def _source_record(root: Path, case: CaseSpec) -> dict[str, Any]:
    """Relative path, size and modification time of a case's files (the reuse fingerprint)."""

    def one(rel: str, what: str) -> dict[str, Any]:
        path = root / rel
        if not path.is_file():
            raise MissingPathError(f"{path}: {what} file of case {case.id!r} named in dataset.json does not exist.")
        st = path.stat()
        return {"path": rel, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}

    return {"image": one(case.image, "image"), "label": None if case.label is None else one(case.label, "label")}


def _reusable(root: Path, entry: dict[str, Any], settings: dict[str, Any], source: dict[str, Any]) -> bool:
    """True when ``entry`` was made from the same files with the same settings and its files are intact."""
    if entry.get("settings") != settings or entry.get("source") != source:
        return False
    try:
        n, size = int(entry["n_slices"]), int(entry["geometry"]["size"])
        for key in ("image", "label"):
            rel = entry["files"][key]
            if rel is None:
                continue
            arr = np.load(root / rel, mmap_mode="r")
            if arr.shape != (n, size, size):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _prepare_case(
    spec: DatasetSpec,
    dom: DomainSpec,
    case: CaseSpec,
    root: Path,
    stem: str,
    settings: dict[str, Any],
    source: dict[str, Any],
) -> dict[str, Any]:
    """Normalise, slice and save one case; returns its index entry."""
    image_path = case.image_path(spec.root)
    image = load_nifti(image_path, channel=dom.channel, what="image")
    normalised, record = normalize_volume(image.array, tuple(settings["clip_percentiles"]), what=str(image_path))
    axis = resolve_axis(image.affine, settings["axis"], what=str(image_path))
    geometry = make_geometry(normalised.shape, axis, int(settings["size"]))

    image_rel = stem + IMAGE_SUFFIX
    _save_npy(root / image_rel, image_to_slices(normalised, geometry))
    label_rel: str | None = None
    foreground: list[int] | None = None
    label_path = case.label_path(spec.root)
    if label_path is not None:
        label = _load_label(label_path, image.array.shape, spec.num_classes)
        stack = label_to_slices(label, geometry)
        foreground = [int(i) for i in np.flatnonzero(stack.reshape(stack.shape[0], -1).any(axis=1))]
        label_rel = stem + LABEL_SUFFIX
        _save_npy(root / label_rel, stack)
    return {
        "domain": dom.name,
        "id": case.id,
        "split": case.split,
        "files": {"image": image_rel, "label": label_rel},
        "n_slices": geometry.n_slices,
        "labelled": label_rel is not None,
        "original_shape": list(geometry.original_shape),
        "geometry": geometry.to_dict(),
        "affine": np.asarray(image.affine, dtype=np.float64).tolist(),
        "normalization": record.to_dict(),
        "foreground_slices": foreground,
        "settings": settings,
        "source": source,
    }


def _load_label(path: Path, shape: tuple[int, ...], num_classes: int) -> np.ndarray:
    """Load a label map and check it against its image; returns uint8 (X, Y, Z).

    Raises:
        DatasetError: shape differs from the image, or values are not integer ids < num_classes.
    """
    arr = load_nifti(path, what="label").array
    if arr.shape != tuple(shape):
        raise DatasetError(
            f"{path}: expected the label shape to equal the image shape {tuple(shape)}, found {arr.shape}."
        )
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: expected an integer label map, found dtype {arr.dtype}.")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise DatasetError(f"{path}: expected integer label values, found non-integer values; run `tcsa-uda verify`.")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi >= num_classes:
        raise DatasetError(
            f"{path}: expected label ids in 0..{num_classes - 1} (dataset.json 'labels'), found values in "
            f"[{lo:g}, {hi:g}]; run `tcsa-uda verify` for details."
        )
    return arr.astype(np.uint8)


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write_with(path, lambda fh: np.save(fh, np.ascontiguousarray(array), allow_pickle=False))
