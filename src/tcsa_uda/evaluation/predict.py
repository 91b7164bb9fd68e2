"""``tcsa-uda predict``: label maps for the user's own NIfTI volumes and DICOM series.

The checkpoint carries everything needed (network, class names, text embeddings of its
domains, ``prepare`` settings), so no dataset folder is involved: each input volume is
normalised, sliced and resized as ``prepare`` did for training
(:func:`~tcsa_uda.evaluation.inference.predict_volume`), every slice is predicted, and the
prediction is mapped back onto the input's voxel grid. Outputs::

    OUT/<name>.nii.gz                 uint8 label map (class ids of the checkpoint), the input's
                                      shape and header: qform and sform kept as they are, each
                                      with its code (so pixdim too); label intent (1002),
                                      cal_min/cal_max = label range, no scaling
    OUT/<name>_probabilities.nii.gz   float32 (X, Y, Z, C) softmax maps, with --probabilities
                                      (same geometry; cal_min/cal_max 0/1, no intent)
    OUT/predict.json                  checkpoint, classes, settings and every input -> output, with
                                      its status (``ok`` or ``failed``) and the error of a failed one

``<name>`` is the input file name without ``.nii``/``.nii.gz`` (folders below ``--input`` are
mirrored), or for a DICOM series the name of its folder (plus ``_<SeriesNumber>`` when a folder
holds several series).

Safety of the outputs: the output folder may not hold any of the inputs, nor any label file of a
dataset (a ``dataset.json`` in the folder or above it that lists a label inside it), even with
``--overwrite``; other existing files are replaced only when predict wrote them before or with
``--overwrite`` (:class:`~tcsa_uda.outputs.OutputFolder`). With a folder of inputs, an input
that cannot be read or predicted is recorded as failed in ``predict.json`` and the others are
still predicted; the command then exits with status 1.

DICOM files are grouped by ``SeriesInstanceUID`` (pydicom headers) and each series is read by
:func:`tcsa_uda.data.convert.dicom.read_dicom_series`: slices sorted by ``ImagePositionPatient``
projected on the slice normal, rescaled with ``RescaleSlope``/``Intercept``, the affine built in
DICOM's LPS patient frame and converted to NIfTI's RAS frame; the array is
``(columns, rows, slices)``, as dcm2niix writes it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import torch
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from tcsa_uda import __version__
from tcsa_uda.atomic import atomic_write_json
from tcsa_uda.data.contract import DATASET_FILE, read_dataset_json
from tcsa_uda.data.convert.dicom import read_dicom_series
from tcsa_uda.data.io import Volume, is_nifti, load_nifti, save_nifti
from tcsa_uda.errors import (
    ConfigError,
    DatasetError,
    MissingPathError,
    OutputExistsError,
    OutputWriteError,
    TcsaUdaError,
)
from tcsa_uda.evaluation.batching import inference_options
from tcsa_uda.evaluation.inference import predict_volume
from tcsa_uda.evaluation.model import LoadedModel, load_model, resolve_checkpoint
from tcsa_uda.evaluation.predictions import nifti_stem
from tcsa_uda.outputs import OutputFolder
from tcsa_uda.precision import autocast

PROBABILITY_SUFFIX = "_probabilities"
RECORD_FILE = "predict.json"


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class InputVolume:
    """One volume to predict.

    Attributes:
        name: output name relative to ``--out`` without extension (e.g. ``sub/case1``).
        source: the NIfTI file, or the folder of a DICOM series.
        dicom_files: the files of a DICOM series (empty for NIfTI).
    """

    name: str
    source: Path
    dicom_files: tuple[Path, ...] = ()

    @property
    def kind(self) -> str:
        return "dicom" if self.dicom_files else "nifti"


def find_inputs(path: str | Path) -> list[InputVolume]:
    """The NIfTI files and DICOM series of ``path`` (a NIfTI file or a folder, searched recursively).

    Files that are neither NIfTI nor DICOM are skipped, except a ``.dcm`` file that cannot be
    read, which is an error. Hidden files (``.*``, e.g. macOS ``._*`` AppleDouble copies) and
    ``__MACOSX`` folders are never read.

    Raises:
        MissingPathError: ``path`` does not exist.
        DatasetError: a single file that is not NIfTI, an unreadable ``.dcm`` file, a DICOM
            file without the tags needed to place it, two inputs with the same output name,
            or a folder with nothing to predict.
    """
    root = Path(path)
    if not root.exists():
        raise MissingPathError(f"{root}: input file or folder does not exist.")
    if root.is_file():
        if not is_nifti(root):
            raise DatasetError(
                f"{root}: expected a NIfTI file (.nii or .nii.gz) or a folder (NIfTI files and/or DICOM series)."
            )
        return [InputVolume(name=nifti_stem(root.name), source=root)]
    inputs: list[InputVolume] = []
    series: dict[str, list[tuple[Path, Any]]] = {}
    for p in sorted(root.rglob("*")):
        if p.name.startswith(".") or "__MACOSX" in p.relative_to(root).parts or not p.is_file():
            continue
        if is_nifti(p):
            rel = p.relative_to(root)
            inputs.append(InputVolume(name=(rel.parent / nifti_stem(p.name)).as_posix(), source=p))
            continue
        ds = _read_dicom_header(p)
        if ds is not None:
            series.setdefault(str(ds.SeriesInstanceUID), []).append((p, ds))
    inputs.extend(_series_inputs(root, series))
    if not inputs:
        raise DatasetError(
            f"{root}: no NIfTI file (.nii/.nii.gz) and no DICOM series found (searched all sub-folders)."
        )
    seen: dict[str, Path] = {}
    for item in inputs:
        key = item.name.lower()
        if key in seen:
            raise DatasetError(
                f"{root}: inputs {seen[key]} and {item.source} would both be written as {item.name}.nii.gz; rename one."
            )
        seen[key] = item.source
    return inputs


def _read_dicom_header(path: Path) -> Any | None:
    """The DICOM header of ``path``, or None when it is not a DICOM file."""
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except InvalidDicomError as exc:
        if path.suffix.lower() == ".dcm":
            raise DatasetError(f"{path}: cannot read as DICOM ({exc}).") from exc
        return None
    except Exception as exc:  # pydicom raises many types for corrupt files
        raise DatasetError(f"{path}: cannot read as DICOM ({type(exc).__name__}: {exc}).") from exc
    if "SeriesInstanceUID" not in ds:
        if "PixelData" in ds or path.suffix.lower() == ".dcm":
            raise DatasetError(f"{path}: DICOM file without SeriesInstanceUID; cannot group it into a series.")
        return None
    return ds


def _series_inputs(root: Path, series: dict[str, list[tuple[Path, Any]]]) -> list[InputVolume]:
    by_folder: dict[Path, list[tuple[str, list[tuple[Path, Any]]]]] = {}
    for uid, items in series.items():
        folder = Path(os.path.commonpath([str(p.parent) for p, _ in items]))
        by_folder.setdefault(folder, []).append((uid, items))
    out = []
    for folder, groups in sorted(by_folder.items()):
        rel = folder.relative_to(root)
        base = rel.as_posix() if rel.parts else root.name
        for k, (_, items) in enumerate(sorted(groups, key=lambda g: _series_number(g[1][0][1], 0))):
            name = base
            if len(groups) > 1:
                name = f"{base}_{_series_number(items[0][1], k + 1)}"
            out.append(InputVolume(name=name, source=folder, dicom_files=tuple(p for p, _ in items)))
    return out


def _series_number(ds: Any, default: int) -> int:
    value = ds.get("SeriesNumber")
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


# --------------------------------------------------------------------------------------------
# DICOM series -> volume


def read_dicom_volume(files: Sequence[str | Path], what: str = "DICOM series") -> Volume:
    """Read one DICOM series as a float32 (columns, rows, slices) volume with a RAS affine.

    Uses :func:`tcsa_uda.data.convert.dicom.read_dicom_series` (slices sorted along the normal,
    rescale applied, LPS -> RAS); uneven slice spacing is reported as a warning.

    Args:
        files: the files of one series, in any order.
        what: the series' name in messages.

    Raises:
        DatasetError: unreadable files, several series, multi-frame or inconsistent slices,
            two slices at one position, or missing geometry attributes.
    """
    series = read_dicom_series([Path(f) for f in files], what)
    for note in series.notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm")
    return Volume(array=np.asarray(series.array, dtype=np.float32), affine=series.affine, header=header)


def load_input(item: InputVolume, channel: int | None = None) -> Volume:
    """Read one input volume (NIfTI or DICOM series).

    Raises:
        MissingPathError / DatasetError: unreadable file or wrong dimensionality (named).
    """
    if item.dicom_files:
        return read_dicom_volume(item.dicom_files, str(item.source))
    return load_nifti(item.source, channel=channel, what="image")


# --------------------------------------------------------------------------------------------
# Prediction


@dataclass(frozen=True)
class PredictionRecord:
    """One input and what was written for it.

    Attributes:
        input: the NIfTI file or DICOM series folder.
        kind: ``nifti`` or ``dicom``.
        labels: the label map written, None when the input failed.
        probabilities: the probability map written, if asked for.
        shape: the input's (X, Y, Z) shape, None when the input failed.
        error: why the input failed (one line), None when it was predicted.
    """

    input: Path
    kind: str
    labels: Path | None
    probabilities: Path | None
    shape: tuple[int, int, int] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": str(self.input),
            "kind": self.kind,
            "status": "ok" if self.ok else "failed",
            "error": self.error,
            "labels": None if self.labels is None else str(self.labels),
            "probabilities": None if self.probabilities is None else str(self.probabilities),
            "shape": None if self.shape is None else list(self.shape),
        }


def check_model_for(loaded: LoadedModel, domain: str | None, classes: Sequence[str] | None) -> str:
    """The domain to predict for (default: the checkpoint's target), after checking classes.

    Raises:
        ConfigError: ``domain`` has no text embeddings in the checkpoint, no domain is known,
            or ``classes`` differ from the checkpoint's class names.
    """
    if classes is not None and list(classes) != loaded.class_names:
        raise ConfigError(
            f"{loaded.path}: the checkpoint segments classes {loaded.class_names}, not the expected {list(classes)}."
        )
    domain = domain or loaded.target
    if domain is None:
        raise ConfigError(f"{loaded.path}: no target domain recorded; pass --domain (one of {loaded.text.domains}).")
    if domain not in loaded.text.domains:
        raise ConfigError(
            f"--domain {domain!r}: the checkpoint {loaded.path} was trained for domains {loaded.text.domains} "
            f"(classes {loaded.class_names}); pick one of them."
        )
    return domain


def _without_previous_outputs(inputs: list[InputVolume], input_path: Path, out: Path) -> list[InputVolume]:
    """Drop inputs inside ``out`` when ``out`` is a sub-folder of the input folder (earlier results)."""
    root, dest = input_path.resolve(), out.resolve()
    if not input_path.is_dir() or dest == root or not dest.is_relative_to(root):
        return inputs
    kept = [i for i in inputs if not i.source.resolve().is_relative_to(dest)]
    if not kept:
        raise DatasetError(f"{input_path}: every input lies inside the output folder {out}; nothing to predict.")
    return kept


def check_output_folder(out: Path, inputs: Sequence[InputVolume]) -> None:
    """Refuse an output folder that holds an input or a label file of a dataset (not lifted by ``--overwrite``).

    Raises:
        OutputExistsError: naming the input, or the label file and its ``dataset.json``.
    """
    dest = out.resolve()
    for item in inputs:
        for p in (item.source, *item.dicom_files):
            if p.resolve() == dest or p.resolve().is_relative_to(dest):
                raise OutputExistsError(
                    f"predict --out {out}: the folder holds the input {p}; choose an output folder outside the inputs."
                )
    for folder in (dest, *dest.parents):
        if not (folder / DATASET_FILE).is_file():
            continue
        try:
            _, data = read_dataset_json(folder)
        except TcsaUdaError:
            continue  # not a readable dataset: the generic output check still protects the folder itself
        for label in _label_paths(data):
            path = (folder / label).resolve()
            if path.is_relative_to(dest):
                raise OutputExistsError(
                    f"predict --out {out}: the folder holds the label file {folder / label} of the dataset "
                    f"{folder / DATASET_FILE}; predictions never go next to ground truth, choose another output folder."
                )


def _label_paths(data: Any) -> list[str]:
    """The ``label`` paths of every case of a decoded ``dataset.json`` (malformed entries skipped)."""
    out: list[str] = []
    domains = data.get("domains") if isinstance(data, dict) else None
    for dom in domains.values() if isinstance(domains, dict) else ():
        cases = dom.get("cases") if isinstance(dom, dict) else None
        for case in cases if isinstance(cases, list) else ():
            label = case.get("label") if isinstance(case, dict) else None
            if isinstance(label, str) and label:
                out.append(label)
    return out


def predict_paths(
    checkpoint: str | Path,
    input_path: str | Path,
    out: str | Path,
    domain: str | None = None,
    probabilities: bool = False,
    batch_size: int | str = 16,
    flip: bool = False,
    device: torch.device | str = "cpu",
    channel: int | None = None,
    classes: Sequence[str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    precision: str = "auto",
) -> list[PredictionRecord]:
    """Predict every volume of ``input_path`` with a checkpoint and write label maps into ``out``.

    Args:
        checkpoint: a checkpoint file or a run folder (its ``final.pt``).
        input_path: a NIfTI file, or a folder of NIfTI files and/or DICOM series.
        out: output folder (see the module docstring for the layout).
        domain: the input's domain (modality) among the checkpoint's; default its target.
        probabilities: also write (X, Y, Z, C) float32 softmax maps.
        batch_size: slices per forward pass (no slice is dropped), or ``auto``
            (:mod:`tcsa_uda.evaluation.batching`).
        flip: horizontal-flip test-time augmentation.
        device: torch device.
        channel: the volume of a 4D NIfTI input to use.
        classes: the class names the user expects; an error when the checkpoint's differ.
        progress: show a progress bar over the volumes.
        overwrite: replace files in ``out`` that predict did not write.
        precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16`` inference.

    Returns:
        One record per input, in input order (also written to ``out/predict.json``). With a
        folder of inputs, an input that cannot be read or predicted is a record with ``error``
        set and the others are still predicted; a single input file raises instead.

    Raises:
        ConfigError: wrong domain or class set.
        OutputExistsError: ``out`` holds an input or a dataset's label file, or files predict
            did not write (without ``overwrite``).
        TcsaUdaError: with a single input file, an unreadable or non-3D input, with the file named.
        OutputWriteError: an output cannot be written (the run stops).
    """
    ck_path = resolve_checkpoint(checkpoint)
    loaded = load_model(ck_path, device)
    domain = check_model_for(loaded, domain, classes)
    settings = loaded.preprocessing
    text = loaded.text_for(domain, device)
    slices_per_pass, prec = inference_options(
        loaded.model, text, settings.size, batch_size, precision, flip, encoding=loaded.input_encoding
    )
    inputs = _without_previous_outputs(find_inputs(input_path), Path(input_path), Path(out))
    out = Path(out)
    check_output_folder(out, inputs)
    guard = OutputFolder(out, "predict", overwrite=overwrite)
    plan = []
    for item in inputs:
        labels_path = out / f"{item.name}.nii.gz"
        prob_path = out / f"{item.name}{PROBABILITY_SUFFIX}.nii.gz" if probabilities else None
        plan.append((item, labels_path, prob_path))
    guard.claim([out / RECORD_FILE, *(p for _, lab, prob in plan for p in (lab, prob) if p is not None)])
    batch = Path(input_path).is_dir()
    records: list[PredictionRecord] = []
    for item, labels_path, prob_path in tqdm(plan, desc="predict", unit="volume", disable=not progress):
        try:
            vol = load_input(item, channel)
            with autocast(prec, text.device):
                pred = predict_volume(
                    loaded.model,
                    vol.array,
                    vol.affine,
                    text,
                    settings,
                    slices_per_pass,
                    flip,
                    keep_probabilities=probabilities,
                    what=str(item.source),
                    domain=domain,
                    encoding=loaded.input_encoding,
                )
        except OutputWriteError:
            raise
        except TcsaUdaError as exc:
            if not batch:
                raise
            records.append(PredictionRecord(item.source, item.kind, None, None, None, error=str(exc)))
            continue
        save_nifti(labels_path, pred.labels, vol.affine, vol.header, kind="label")
        if prob_path is not None and pred.probabilities is not None:
            probs = np.moveaxis(pred.probabilities, 0, -1).astype(np.float32)
            save_nifti(prob_path, probs, vol.affine, vol.header, kind="probability")
        shape = (int(vol.array.shape[0]), int(vol.array.shape[1]), int(vol.array.shape[2]))
        records.append(PredictionRecord(item.source, item.kind, labels_path, prob_path, shape))
    atomic_write_json(
        out / RECORD_FILE,
        {
            "tool": f"tcsa-uda {__version__} predict",
            "checkpoint": str(ck_path),
            "domain": domain,
            "class_names": {str(i): n for i, n in enumerate(loaded.class_names)},
            "preprocessing": settings.to_dict(),
            "input_encoding": loaded.input_encoding,
            "flip": flip,
            "batch_size": slices_per_pass,
            "precision": prec,
            "probabilities": probabilities,
            "failed": sum(not r.ok for r in records),
            "outputs": [r.to_dict() for r in records],
        },
    )
    return records
