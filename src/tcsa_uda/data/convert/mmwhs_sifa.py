"""The preprocessed MM-WHS release of SIFA / PnP-AdaNet (and its MPSCL / TCSA-UDA numpy copy) -> the dataset contract.

Reads any of the three layouts of :mod:`tcsa_uda.data.convert.sifa_release` (MPSCL numpy slices
with their paired datalists, SIFA tfrecords, test volumes as ``.npz`` or ``image_`` / ``gth_``
NIfTI) and writes a dataset folder (``dataset.json`` + NIfTI, docs/dataset_format.md):

* **Test volumes** keep their MM-WHS ids (``image_mr_1007.nii.gz.npz`` -> case ``1007``), with the
  release's flip on axes 0 and 1 undone, so ``volume[:, :, k]`` is oriented like a training slice
  and is exactly the image the released evaluations feed to the network.
* **Training and validation slices carry no case id** (``mr_train_slice17``): they are stacked in
  slice-number order into pseudo-volumes of :data:`PSEUDO_VOLUME_SLICES` slices, cases
  ``train_pseudo_000``, ``val_pseudo_000``, ... (the summary names the slice numbers of each).
  They serve training and the source-validation score only; they are not anatomical volumes.
* **Intensities** are stored in the release's z-score space for every case: the test volumes
  and the tfrecords slices as released, the MPSCL ``.npy`` slices (already mapped to [-1, 1] by
  ``2 (z - lo) / (hi - lo) - 1``) mapped back with the inverse of that map. Each domain gets the
  release's ``intensity_range`` (MR -1.8/4.4, CT -2.8/3.2), so
  ``tcsa-uda prepare --normalization fixed`` reproduces the released network inputs for all
  cases (the ``.npy`` slices to within float32 rounding, < 1e-6).
* **Labels** are the SIFA ids 1 MYO, 2 LAC, 3 LVC, 4 AA. The value 5 that SIFA's tfrecords also
  hold (one-hot encoded as all zeros by SIFA, i.e. ignored) becomes background; the summary
  counts those pixels.
* **Geometry.** The release has none: every volume gets a nominal 1 mm affine whose third array
  axis is anterior-posterior, so ``prepare --axis coronal`` (or ``--axis 2``) returns the
  release's 2-D slices exactly and distances in mm equal pixel distances of the release.

What cannot be detected: the MR training and validation slices were cut from all 20 labelled
MM-WHS MR volumes, so the four MR test subjects are among them, but no slice name says which
subject it comes from. The converter can neither find nor remove those slices; it says so in
the summary.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tcsa_uda.data.convert.common import natural_key, require_dir
from tcsa_uda.data.convert.mmwhs import CLASS_NAMES, MODALITIES, TEST_IDS
from tcsa_uda.data.convert.sifa_release import (
    MODALITY_NAMES,
    SliceFile,
    find_release_files,
    read_npy_slice,
    read_test_volume,
    read_tfrecord_slices,
    release_labels,
)
from tcsa_uda.data.convert.writer import ConversionResult, DatasetWriter
from tcsa_uda.data.normalize import FIXED_PRESETS, UNIT_TOLERANCE, invert_fixed_range
from tcsa_uda.errors import ConfigError, DatasetError

DATASET_NAME = "mmwhs_sifa"
PSEUDO_VOLUME_SLICES = 64
"""Training slices stacked into one pseudo-volume (the names carry no case id)."""
SIFA_AFFINE = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
"""Nominal 1 mm affine: array axis 0 (rows) -> inferior, 1 (columns) -> right, 2 (slices) -> anterior."""
RELEASE_RANGES: dict[str, tuple[float, float]] = FIXED_PRESETS["sifa"]
"""The release's fixed statistics per modality: z-score ``lo`` -> -1, ``hi`` -> +1."""
SLICE_VALUES: tuple[str, ...] = ("unit", "zscore")
"""Intensity space of ``.npy`` slices: ``unit`` = already in [-1, 1] (MPSCL), ``zscore`` = as the test volumes."""
MR_SUBJECTS_NOTE = (
    "MR: the release's MR train and val slices were cut from all 20 labelled MM-WHS MR volumes (16 train + 4 val "
    "volumes of 600 slices, PnP-AdaNet README), so the MR test subjects 1007, 1009, 1018 and 1019 are among them; "
    "slice names carry no case id, so those slices can be neither identified nor removed"
)


def _to_zscore(image: np.ndarray, entry: SliceFile, slice_values: str) -> np.ndarray:
    """An ``.npy`` slice in the release's z-score space (see the module docstring)."""
    if slice_values == "zscore":
        return image
    low, high = float(image.min()), float(image.max())
    if low < -1.0 - UNIT_TOLERANCE or high > 1.0 + UNIT_TOLERANCE:
        raise DatasetError(
            f"{entry.image}: expected an MPSCL slice already mapped to [-1, 1], found values in [{low:.4g}, "
            f"{high:.4g}]; if your .npy slices hold z-scores like the test volumes, convert with --slice-values zscore."
        )
    lo, hi = RELEASE_RANGES[entry.modality]
    return invert_fixed_range(image, lo, hi, str(entry.image))


def _read_slices(files: list[SliceFile], slice_values: str) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Images (z-score space), labels (0..4) and the count of ignored-label pixels of some slice files."""
    images, labels, ignored = [], [], 0
    for entry in files:
        if entry.kind == "npy":
            image, raw = read_npy_slice(entry)
            pairs = [(_to_zscore(image, entry, slice_values), raw)]
        else:
            pairs = read_tfrecord_slices(entry)
        for image, raw in pairs:
            label, n = release_labels(raw, str(entry.label or entry.image))
            images.append(image)
            labels.append(label)
            ignored += n
    return images, labels, ignored


def convert_mmwhs_sifa(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    slice_values: str = "unit",
    progress: bool = True,
) -> ConversionResult:
    """Convert the SIFA / MPSCL MM-WHS release under ``root`` into a dataset folder.

    Args:
        root: folder holding the release (any of the layouts; searched recursively).
        out: output dataset folder.
        slice_values: intensity space of ``.npy`` training slices: ``unit`` (the MPSCL release,
            already in [-1, 1]; mapped back to z-scores) or ``zscore`` (kept).
        progress: show progress bars.

    Raises:
        MissingPathError: ``root`` is not a folder.
        ConfigError: an unknown ``slice_values``.
        DatasetError: no test volume or no training slice for a modality, unreadable or
            inconsistent files (named), or an output that fails verification.
    """
    if slice_values not in SLICE_VALUES:
        raise ConfigError(f"--slice-values: expected one of {', '.join(SLICE_VALUES)}, found {slice_values!r}.")
    root_dir = require_dir(root, "--root folder")
    found = find_release_files(root_dir)
    writer = DatasetWriter(
        out=Path(out),
        name=DATASET_NAME,
        class_names=CLASS_NAMES,
        modalities=MODALITIES,
        description=(
            "MM-WHS 2017 from the SIFA / PnP-AdaNet preprocessed release (tcsa-uda convert mmwhs-sifa); intensities "
            "in the release's z-score space, intensity_range = its fixed statistics."
        ),
        reference="C. Chen et al., Synergistic Image and Feature Adaptation (SIFA), AAAI 2019 / IEEE TMI 2020",
        intensity_ranges=RELEASE_RANGES,
    )
    for note in found.notes:
        writer.note(note)
    for modality in MODALITY_NAMES:
        if not found.tests.get(modality):
            raise DatasetError(
                f"{root_dir}: expected the {modality} test volumes (image_{modality.lower()}_<id>.nii.gz.npz, or "
                f"image_{modality.lower()}_<id>.nii.gz with gth_{modality.lower()}_<id>.nii.gz), found none."
            )
        if (modality, "train") not in found.slices:
            stem = f"{modality.lower()}_train_slice<N>"
            raise DatasetError(
                f"{root_dir}: expected {modality} training slices ({stem}.npy with {stem}_gt.npy, or "
                f"{stem}.tfrecords), found none."
            )

    for modality in MODALITY_NAMES:
        tests = found.tests[modality]
        if set(tests) != set(TEST_IDS[modality]):
            writer.note(
                f"{modality}: test ids {sorted(tests, key=natural_key)} differ from the literature split "
                f"{list(TEST_IDS[modality])}"
            )
        kinds = sorted({t.kind for t in tests.values()})
        writer.note(
            f"{modality}: {len(tests)} test volume(s) ({', '.join(kinds)}); flip on axes 0 and 1 undone; file "
            "geometry replaced by the nominal 1 mm affine"
        )
        for cid in sorted(tests, key=natural_key):
            test = tests[cid]
            image, raw = read_test_volume(test)
            label, n = release_labels(raw, str(test.label or test.image))
            if n:
                writer.note(f"{modality} test {cid}: {n} voxel(s) of label value 5 set to background")
            writer.add(modality, cid, "test", image, SIFA_AFFINE, label, source=str(test.image))

    for (modality, split), files in sorted(found.slices.items()):
        kind = files[0].kind
        how = (
            "mapped back from [-1, 1] to the release's z-scores"
            if kind == "npy" and slice_values == "unit"
            else "z-scores as released"
        )
        writer.note(
            f"{modality} {split}: {len(files)} {kind} slice file(s) (names carry no case id) stacked in slice-number "
            f"order into pseudo-volumes {split}_pseudo_000... of up to {PSEUDO_VOLUME_SLICES} slices; intensities "
            f"{how}"
        )
        ignored = 0
        chunks = [files[i : i + PSEUDO_VOLUME_SLICES] for i in range(0, len(files), PSEUDO_VOLUME_SLICES)]
        for k, chunk in enumerate(tqdm(chunks, desc=f"{modality} {split} slices", unit="volume", disable=not progress)):
            images, labels, n = _read_slices(chunk, slice_values)
            ignored += n
            shapes = sorted({im.shape for im in images})
            if len(shapes) != 1:
                raise DatasetError(
                    f"{chunk[0].image.parent}: {modality} {split} slices {chunk[0].number}..{chunk[-1].number} differ "
                    f"in shape: {shapes}."
                )
            source = (
                f"{chunk[0].image.name} .. {chunk[-1].image.name} ({len(images)} slices; "
                f"numbers {chunk[0].number}..{chunk[-1].number})"
            )
            writer.add(
                modality,
                f"{split}_pseudo_{k:03d}",
                split,
                np.stack(images, axis=-1),  # (H, W, S)
                SIFA_AFFINE,
                np.stack(labels, axis=-1),
                source=source,
            )
        if ignored:
            writer.note(
                f"{modality} {split}: {ignored} pixel(s) of label value 5 (ignored by SIFA's loss) set to background"
            )
    if any(m == "MR" for m, _ in found.slices):
        writer.note(MR_SUBJECTS_NOTE)
    return writer.finish()
