"""The prepared index: reading what ``tcsa-uda prepare`` wrote (``OUT/index.json`` and the slice files).

Layout of a prepared folder::

    OUT/index.json                  every trusted case: files, geometry, affine, normalisation
    OUT/prepare.yaml                the resolved settings (PrepareConfig)
    OUT/<domain>/<case>_img.npy     float32 (S, size, size), values in [-1, 1]
    OUT/<domain>/<case>_seg.npy     uint8   (S, size, size), only for labelled cases

Only files listed in ``index.json`` are trusted; the writer is :mod:`tcsa_uda.data.prepare`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tcsa_uda.data.contract import SPLITS
from tcsa_uda.data.geometry import SliceGeometry
from tcsa_uda.data.normalize import AnyNormalizationRecord, record_from_dict
from tcsa_uda.errors import DatasetError, MissingPathError
from tcsa_uda.paths import data_path_hint, resolve_data_path

INDEX_FILE = "index.json"
CONFIG_FILE = "prepare.yaml"
FORMAT_VERSION = 1
IMAGE_SUFFIX = "_img.npy"
LABEL_SUFFIX = "_seg.npy"


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
    normalization: AnyNormalizationRecord
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
        settings: ``axis``, ``size``, ``clip_percentiles`` and ``normalization`` used (the last is
            absent from folders prepared before that option existed: ``percentile_zscore``).
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
    root = resolve_data_path(out)
    path = root / INDEX_FILE
    if not path.is_file():
        raise MissingPathError(
            f"{root}: no prepared slices found ({INDEX_FILE} is missing; {data_path_hint()}); "
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
        normalization=record_from_dict(entry["normalization"]),
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
