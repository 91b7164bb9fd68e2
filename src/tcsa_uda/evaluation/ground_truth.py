"""The ground truth an evaluation is scored against: labelled cases of one domain and split.

The cases come from a prepared folder (``index.json``, pointing back at the original label files)
or from a raw dataset folder (``dataset.json``); scoring always uses the original label volume.
Ground truth and predictions are read through one check (:func:`label_ids`): integer ids of the
dataset's classes only, so a raw label code (e.g. MM-WHS 205) or a non-integer value (2.9999)
is an error naming the file, never cast silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tcsa_uda.data.contract import DATASET_FILE, SPLITS, DatasetSpec, load_dataset
from tcsa_uda.data.io import Volume, load_nifti
from tcsa_uda.data.prepared import INDEX_FILE, PreparedCase, PreparedIndex, load_prepared
from tcsa_uda.errors import DatasetError, MissingPathError
from tcsa_uda.paths import resolve_data_path


@dataclass(frozen=True)
class GroundTruthCase:
    """One labelled volume to evaluate.

    Attributes:
        id: the case id of ``dataset.json``.
        label: the ground-truth label file.
        image: the image file (None when unknown).
        channel: the domain's channel of a 4D image.
        prepared: the prepared case, when evaluating a prepared folder.
    """

    id: str
    label: Path
    image: Path | None = None
    channel: int | None = None
    prepared: PreparedCase | None = None


def load_evaluation_source(path: str | Path) -> PreparedIndex | DatasetSpec:
    """A prepared folder (``index.json``) or a raw dataset folder (``dataset.json``).

    Raises:
        MissingPathError: the folder holds neither file.
    """
    p = resolve_data_path(path)
    if (p / INDEX_FILE).is_file():
        return load_prepared(p)
    if (p / DATASET_FILE).is_file() or (p.is_file() and p.name == DATASET_FILE):
        return load_dataset(p)
    raise MissingPathError(
        f"{p}: expected a prepared folder ({INDEX_FILE}, from `tcsa-uda prepare`) or a dataset folder "
        f"({DATASET_FILE}); found neither."
    )


def ground_truth_cases(
    source: PreparedIndex | DatasetSpec, domain: str, split: str = "test"
) -> tuple[list[GroundTruthCase], list[str]]:
    """The labelled cases of ``domain``/``split`` and the ids of the unlabelled ones.

    Raises:
        DatasetError: unknown domain or split, or no labelled case.
    """
    if split not in SPLITS:
        raise DatasetError(f"split: expected one of {list(SPLITS)}, found {split!r}.")
    labelled: list[GroundTruthCase] = []
    unlabelled: list[str] = []
    if isinstance(source, PreparedIndex):
        root = Path(source.dataset_path)
        where = str(source.root / INDEX_FILE)
        for case in source.cases(domain, split):
            rec = case.source.get("label")
            if not rec:
                unlabelled.append(case.id)
                continue
            image = case.source.get("image")
            labelled.append(
                GroundTruthCase(case.id, root / rec["path"], root / image["path"] if image else None, prepared=case)
            )
    else:
        dom = source.domain(domain)
        where = str(source.root / DATASET_FILE)
        for spec_case in dom.select(split):
            label = spec_case.label_path(source.root)
            if label is None:
                unlabelled.append(spec_case.id)
                continue
            labelled.append(GroundTruthCase(spec_case.id, label, spec_case.image_path(source.root), dom.channel))
    if not labelled:
        raise DatasetError(f"{where}: no labelled case in {domain}/{split} to evaluate.")
    return labelled, unlabelled


def check_classes(model_classes: Sequence[str], source: PreparedIndex | DatasetSpec, what: str) -> None:
    """Raise a DatasetError unless the dataset's class names equal ``model_classes`` (``what`` names the model)."""
    data_classes = list(source.class_names)
    if list(model_classes) != data_classes:
        root = source.root
        raise DatasetError(f"{root}: classes {data_classes} differ from the {what}'s {list(model_classes)}.")


_MAX_LISTED = 10


def label_ids(vol: Volume, path: str | Path, class_names: Sequence[str], what: str) -> np.ndarray:
    """The (X, Y, Z) int64 class ids of a label map, after checking its values.

    Args:
        vol: the loaded label map.
        path: its file (named in messages).
        class_names: the dataset's classes, background first (ids ``0..C-1``).
        what: ``ground truth`` or ``prediction`` (named in messages).

    Raises:
        DatasetError: not a 3D integer-valued map, non-integer or non-finite values (examples
            listed), or ids outside ``0..C-1`` (the values found listed).
    """
    arr = np.asarray(vol.array)
    if arr.ndim != 3:
        raise DatasetError(f"{path}: expected a 3D {what} label map, found shape {arr.shape}.")
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: expected an integer {what} label map, found dtype {arr.dtype}.")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            examples = [float(v) for v in np.unique(arr[bad])[:_MAX_LISTED]]
            raise DatasetError(
                f"{path}: expected integer label ids in the {what}, found non-integer values in {int(bad.sum())} "
                f"voxel(s), e.g. {examples}; write label maps with an integer data type."
            )
    labels = arr.astype(np.int64)
    present = np.unique(labels)
    bad_ids = [int(v) for v in present if v < 0 or v >= len(class_names)]
    if bad_ids:
        raise DatasetError(
            f"{path}: expected label ids 0..{len(class_names) - 1} ({', '.join(class_names)}), found "
            f"{bad_ids[:_MAX_LISTED]} in the {what}; is it a label map for another class set or with raw label "
            "codes (map them to class ids, e.g. with `tcsa-uda convert`)?"
        )
    return labels


def read_ground_truth(path: str | Path, class_names: Sequence[str]) -> Volume:
    """Load a ground-truth label map and check its values like a prediction's (:func:`label_ids`).

    Returns:
        The volume with an int64 (X, Y, Z) array of class ids and the file's affine and header.

    Raises:
        MissingPathError / DatasetError: unreadable file, or values that are not the dataset's class ids.
    """
    vol = load_nifti(path, what="label")
    return Volume(array=label_ids(vol, path, class_names, "ground truth"), affine=vol.affine, header=vol.header)
