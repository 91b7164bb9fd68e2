"""The files of the preprocessed MM-WHS release of SIFA / PnP-AdaNet and its MPSCL / TCSA-UDA numpy copy.

Three layouts exist in the wild, all cut from the same heart-centred, z-scored volumes
(docs/reproduce.md, "MM-WHS from the SIFA / MPSCL release"). This module finds their files under
one folder and reads them; :mod:`tcsa_uda.data.convert.mmwhs_sifa` turns them into a dataset.

* **MPSCL / TCSA-UDA numpy** (root ``data_np/``, lists in ``data/datalist/``)::

      train_mr/mr_train_slice{N}.npy        gt_train_mr/mr_train_slice{N}_gt.npy   (N = 0..9599)
      train_ct/ct_train_slice{N}.npy        gt_train_ct/ct_train_slice{N}_gt.npy   (0..8399)
      val_mr/mr_val_slice{N}.npy            gt_val_mr/mr_val_slice{N}_gt.npy       (0..2399)
      val_ct/ct_val_slice{N}.npy            gt_val_ct/ct_val_slice{N}_gt.npy       (0..1199)
      test_mr/image_mr_{1007,1009,1018,1019}.nii.gz.npz
      test_ct/image_ct_{1003,1008,1014,1019}.nii.gz.npz
      datalist: train_mr.txt + train_mr_gt.txt, val_mr.txt + val_mr_gt.txt, ... (same for ct),
                test_mr.txt, test_ct.txt

  A slice ``.npy`` is a 2-D float32 (H, W) image already mapped to [-1, 1]; its ``_gt.npy`` holds
  the class ids. The datalists hold one absolute path per line (the authors' machine), sorted as
  strings (slice0, slice1, slice10, ...), image list and ``_gt`` list paired line by line.
* **SIFA / PnP-AdaNet tfrecords**: ``{ct,mr}_{train,val}_tfs/{ct,mr}_{train,val}_slice{N}.tfrecords``,
  one ``tf.train.Example`` per file (:mod:`~tcsa_uda.data.convert.tfrecord`) with the int64
  features ``dsize_dim0..2`` and ``lsize_dim0..2`` (256, 256, 3) and the byte features
  ``data_vol`` and ``label_vol``: little-endian float32 arrays of shape (dsize_dim0, dsize_dim1,
  dsize_dim2) and (lsize_dim0, lsize_dim1, lsize_dim2) in C order, three consecutive coronal slices
  of z-scored intensities and their labels. SIFA's ``data_loader.py`` reshapes both to
  (256, 256, 3) and trains on channel 1, the middle slice, as this reader does. The released
  files also carry ``bias_dim0..2``, ``mask_scale`` and ``mask_vol``, which nothing reads.
* **SIFA test volumes**: ``image_{ct,mr}_{id}.nii.gz`` with ``gth_{ct,mr}_{id}.nii.gz`` (folders
  ``test_ct_image_n_labels/``, ``test_mr_image_labels/`` in the download): the z-scored volume and
  its labels; the MPSCL ``.npz`` test files are these arrays saved with ``np.savez`` (``arr_0``,
  ``arr_1``, (H, W, D) in medpy's x, y, z order, which is nibabel's too).

Both test forms are flipped on array axes 0 and 1 relative to the training slices; every
released evaluation flips them back before predicting, and :func:`read_test_volume` does the
same. Training and validation slices carry no case id in their names.

A path in a datalist is used as written when it exists; otherwise (the authors' absolute paths)
the file is found by its name anywhere under the given root, and a name found twice is an error.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from tcsa_uda.data.convert.common import iter_files, load_nifti_raw
from tcsa_uda.data.convert.tfrecord import iter_examples
from tcsa_uda.errors import DatasetError

MODALITY_NAMES = ("CT", "MR")
SLICE_SPLITS = ("train", "val")
SLICE_NAME = re.compile(r"(?P<mod>ct|mr)_(?P<split>train|val)_slice(?P<num>\d+)(?P<gt>_gt)?\.(?P<ext>npy|tfrecords)")
TEST_NPZ_NAME = re.compile(r"image_(?P<mod>ct|mr)_(?P<case>\d+)(?:\.nii(?:\.gz)?)?\.npz")
TEST_IMAGE_NAME = re.compile(r"image_(?P<mod>ct|mr)_(?P<case>\d+)\.nii(?:\.gz)?")
TEST_LABEL_NAME = re.compile(r"gth_(?P<mod>ct|mr)_(?P<case>\d+)\.nii(?:\.gz)?")
DATALIST_NAME = re.compile(r"(?P<split>train|val|test)_(?P<mod>ct|mr)(?P<gt>_gt)?\.txt")
TFRECORD_KEYS = ("dsize_dim0", "dsize_dim1", "dsize_dim2", "lsize_dim0", "lsize_dim1", "lsize_dim2")
"""The int64 shape features of a SIFA slice record (``data_vol`` and ``label_vol`` hold the arrays)."""
IGNORED_LABEL = 5
"""A label value found in SIFA's tfrecords beside 0..4; SIFA one-hot encodes it as all zeros (ignored)."""


@dataclass(frozen=True)
class SliceFile:
    """One training or validation slice file of the release.

    Attributes:
        modality: ``CT`` or ``MR``.
        split: ``train`` or ``val``.
        number: ``N`` of ``{mod}_{split}_slice{N}``.
        image: the ``.npy`` image or the ``.tfrecords`` file.
        label: the ``_gt.npy`` label (None for tfrecords, which hold their label).
        origin: where it was listed (``train_mr.txt:12``) or ``by name``.
    """

    modality: str
    split: str
    number: int
    image: Path
    label: Path | None
    origin: str

    @property
    def kind(self) -> str:
        """``npy`` or ``tfrecords``."""
        return "tfrecords" if self.image.suffix.lower() == ".tfrecords" else "npy"


@dataclass(frozen=True)
class VolumeFile:
    """One test volume of the release: an MPSCL ``.npz`` or a SIFA image / ``gth`` NIfTI pair."""

    modality: str
    case_id: str
    image: Path
    label: Path | None  # the gth NIfTI; None for an npz (label inside)

    @property
    def kind(self) -> str:
        """``npz`` or ``nifti``."""
        return "npz" if self.label is None else "nifti"


@dataclass
class ReleaseFiles:
    """Everything :func:`find_release_files` found.

    Attributes:
        slices: ``(modality, split)`` -> slice files in slice-number order.
        tests: modality -> case id -> test file.
        notes: non-fatal findings (how the files were found, files ignored).
    """

    slices: dict[tuple[str, str], list[SliceFile]] = field(default_factory=dict)
    tests: dict[str, dict[str, VolumeFile]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class NameIndex:
    """Files under a root by lower-cased name; resolves datalist paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.by_name: dict[str, list[Path]] = defaultdict(list)
        for path in iter_files(root):
            self.by_name[path.name.lower()].append(path)

    def resolve(self, text: str, datalist: Path, line: int) -> Path:
        """The file a datalist line names: the path as written if it exists, else by name under the root.

        Raises:
            DatasetError: no file of that name, or several (list, line and candidates named).
        """
        rel = Path(text.strip().strip("'\"").replace("\\", "/"))
        for candidate in (rel, datalist.parent / rel, self.root / rel):
            if candidate.is_file():
                return candidate
        hits = self.by_name.get(rel.name.lower(), [])
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise DatasetError(
                f"{datalist}:{line}: expected the file {rel.name!r} (listed as {text.strip()!r}) under {self.root}, "
                "found none."
            )
        raise DatasetError(
            f"{datalist}:{line}: the file name {rel.name!r} is ambiguous under {self.root}: "
            f"{', '.join(str(h) for h in hits[:3])}{' ...' if len(hits) > 3 else ''}; keep one copy."
        )

    def unique(self, name: str, what: str) -> Path | None:
        """The single file named ``name`` (None if absent).

        Raises:
            DatasetError: several files carry that name.
        """
        hits = self.by_name.get(name.lower(), [])
        if len(hits) > 1:
            raise DatasetError(
                f"{self.root}: expected one {what} named {name!r}, found {len(hits)}: "
                f"{', '.join(str(h) for h in hits[:3])}; keep one copy."
            )
        return hits[0] if hits else None


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a datalist with their 1-based numbers."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the datalist ({exc}).") from exc
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _slice_match(path: Path, where: str, modality: str, split: str, label: bool) -> re.Match[str]:
    match = SLICE_NAME.fullmatch(path.name.lower())
    what = f"{modality.lower()}_{split}_slice<N>{'_gt' if label else ''}.npy"
    if (
        match is None
        or match.group("ext") != "npy"
        or match.group("mod") != modality.lower()
        or match.group("split") != split
        or bool(match.group("gt")) != label
    ):
        raise DatasetError(f"{where}: expected a file named {what}, found {path.name!r}.")
    return match


def _listed_slices(index: NameIndex, images: Path, labels: Path, modality: str, split: str) -> list[SliceFile]:
    """Pair an image datalist with its ``_gt`` list line by line."""
    image_lines, label_lines = _read_lines(images), _read_lines(labels)
    if len(image_lines) != len(label_lines):
        raise DatasetError(
            f"{labels}: expected one label path per image of {images.name} ({len(image_lines)} lines), found "
            f"{len(label_lines)} lines."
        )
    out = []
    for (i, image_text), (j, label_text) in zip(image_lines, label_lines, strict=True):
        image = index.resolve(image_text, images, i)
        label = index.resolve(label_text, labels, j)
        match = _slice_match(image, f"{images}:{i}", modality, split, label=False)
        _slice_match(label, f"{labels}:{j}", modality, split, label=True)
        if label.name.lower() != f"{image.stem}_gt.npy".lower():
            raise DatasetError(
                f"{labels}:{j}: expected the label of {image.name} ({images.name}:{i}), {image.stem}_gt.npy, found "
                f"{label.name}; the two lists must be paired line by line."
            )
        out.append(SliceFile(modality, split, int(match.group("num")), image, label, f"{images.name}:{i}"))
    return out


def _named_slices(index: NameIndex, modality: str, split: str, ext: str) -> list[SliceFile]:
    """Slice files of one modality and split found by their names (no datalist)."""
    out = []
    for paths in index.by_name.values():
        for path in paths:
            match = SLICE_NAME.fullmatch(path.name.lower())
            if (
                match is None
                or match.group("gt")
                or match.group("ext") != ext
                or (match.group("mod"), match.group("split")) != (modality.lower(), split)
            ):
                continue
            label = None
            if ext == "npy":
                label = index.unique(f"{path.stem}_gt.npy", "label slice")
                if label is None:
                    raise DatasetError(
                        f"{path}: expected its label {path.stem}_gt.npy under {index.root} (folder "
                        f"gt_{split}_{modality.lower()}), found none."
                    )
            out.append(SliceFile(modality, split, int(match.group("num")), path, label, "by name"))
    return out


def _check_numbers(files: list[SliceFile], modality: str, split: str) -> list[SliceFile]:
    files = sorted(files, key=lambda f: f.number)
    for a, b in pairwise(files):
        if a.number == b.number:
            raise DatasetError(
                f"{modality} {split}: slice number {a.number} appears twice: {a.image} ({a.origin}) and {b.image} "
                f"({b.origin})."
            )
    return files


def _find_tests(index: NameIndex, lists: dict[str, Path], notes: list[str]) -> dict[str, dict[str, VolumeFile]]:
    tests: dict[str, dict[str, VolumeFile]] = {m: {} for m in MODALITY_NAMES}

    def add(test: VolumeFile) -> None:
        known = tests[test.modality].get(test.case_id)
        if known is not None and known.image != test.image:
            raise DatasetError(
                f"{index.root}: expected one {test.modality} test volume per case, found two for {test.case_id!r}: "
                f"{known.image} and {test.image}; keep one."
            )
        tests[test.modality][test.case_id] = test

    for paths in index.by_name.values():
        for path in paths:
            name = path.name.lower()
            if (m := TEST_NPZ_NAME.fullmatch(name)) is not None:
                add(VolumeFile(m.group("mod").upper(), m.group("case"), path, None))
            elif (m := TEST_IMAGE_NAME.fullmatch(name)) is not None:
                mod, case = m.group("mod"), m.group("case")
                label = index.unique(f"gth_{mod}_{case}.nii.gz", "label volume") or index.unique(
                    f"gth_{mod}_{case}.nii", "label volume"
                )
                if label is None:
                    raise DatasetError(
                        f"{path}: expected its label gth_{mod}_{case}.nii.gz under {index.root}, found none."
                    )
                add(VolumeFile(mod.upper(), case, path, label))
    for modality, listed_in in lists.items():
        keep: dict[str, VolumeFile] = {}
        for i, text in _read_lines(listed_in):
            path = index.resolve(text, listed_in, i)
            m = TEST_NPZ_NAME.fullmatch(path.name.lower())
            if m is None or m.group("mod").upper() != modality:
                raise DatasetError(
                    f"{listed_in}:{i}: expected a test volume image_{modality.lower()}_<id>.nii.gz.npz, found "
                    f"{path.name!r}."
                )
            case = m.group("case")
            keep[case] = tests[modality].get(case) or VolumeFile(modality, case, path, None)
        dropped = sorted(set(tests[modality]) - set(keep))
        if dropped:
            notes.append(f"{modality}: test volume(s) {dropped} found but not listed in {listed_in.name}; ignored")
        tests[modality] = keep
    return tests


def find_release_files(root: Path) -> ReleaseFiles:
    """Find the slices and test volumes of any of the three layouts under ``root``.

    Slices of a modality and split come from its datalist pair when both lists exist (membership
    and pairing), else from the file names. ``.npy`` and ``.tfrecords`` slices of the same
    modality and split cannot be mixed. Test volumes are found by name; a ``test_<mod>.txt``
    list, when present, selects them.

    Raises:
        DatasetError: a list without its partner, lists of different lengths, misnamed or
            mispaired files, a file name found twice, slices in both formats, a slice number
            listed twice, a test image without its ``gth`` label, or two test files for a case.
    """
    index = NameIndex(root)
    found = ReleaseFiles()
    lists: dict[tuple[str, str, bool], Path] = {}
    for paths in index.by_name.values():
        for path in paths:
            m = DATALIST_NAME.fullmatch(path.name.lower())
            if m is None:
                continue
            key = (m.group("mod").upper(), m.group("split"), bool(m.group("gt")))
            if key in lists:
                raise DatasetError(f"{root}: two datalists named {path.name}: {lists[key]} and {path}; keep one.")
            lists[key] = path
    for (modality, split, gt), path in sorted(lists.items()):
        if split == "test" and gt:
            raise DatasetError(f"{path}: test volumes hold their labels; a test _gt list is not expected.")
        if split != "test" and (modality, split, not gt) not in lists:
            partner = f"{split}_{modality.lower()}{'' if gt else '_gt'}.txt"
            raise DatasetError(f"{path}: expected its partner list {partner} next to it, found none.")
    for modality in MODALITY_NAMES:
        for split in SLICE_SPLITS:
            images, labels = lists.get((modality, split, False)), lists.get((modality, split, True))
            npy = (
                _listed_slices(index, images, labels, modality, split)
                if images is not None and labels is not None
                else _named_slices(index, modality, split, "npy")
            )
            records = _named_slices(index, modality, split, "tfrecords")
            if npy and records:
                raise DatasetError(
                    f"{root}: {modality} {split} slices exist both as .npy ({len(npy)}) and as .tfrecords "
                    f"({len(records)}); point --root at one release."
                )
            files = npy or records
            if not files:
                continue
            found.slices[(modality, split)] = _check_numbers(files, modality, split)
            how = f"datalists {images.name} + {labels.name}" if images and labels and npy else "file names"
            found.notes.append(f"{modality} {split}: {len(files)} {files[0].kind} slice file(s), found by {how}")
    test_lists = {m: p for (m, split, _), p in lists.items() if split == "test"}
    found.tests = _find_tests(index, test_lists, found.notes)
    return found


# --------------------------------------------------------------------------------------------
# Reading


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read the {what} as a .npy file ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(arr, np.ndarray):
        raise DatasetError(f"{path}: expected a .npy array, found an archive with {list(arr.files)}.")
    return arr


def release_labels(label: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    """Class ids 0..4 as uint8, and the number of pixels of value :data:`IGNORED_LABEL` set to 0.

    Raises:
        DatasetError: non-integer values, or values other than 0..5.
    """
    arr = np.asarray(label)
    if arr.dtype.kind not in "biuf" or (
        arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all())
    ):
        raise DatasetError(f"{where}: expected integer class ids 0..4, found non-integer label values.")
    values = np.unique(arr)
    bad = [v for v in values.tolist() if v < 0 or v > IGNORED_LABEL]
    if bad:
        raise DatasetError(
            f"{where}: expected the SIFA class ids 0..4 (1 MYO, 2 LAC, 3 LVC, 4 AA), found values {bad[:10]}."
        )
    ignored = arr == IGNORED_LABEL
    n_ignored = int(np.count_nonzero(ignored))
    out = arr.astype(np.uint8)
    out[ignored] = 0
    return out, n_ignored


def read_npy_slice(entry: SliceFile) -> tuple[np.ndarray, np.ndarray]:
    """An MPSCL slice as ``(image, raw label)``: float32 (H, W) and the label array (H, W).

    Raises:
        DatasetError: unreadable, not 2-D, or label of another shape (file named).
    """
    if entry.label is None:
        raise DatasetError(f"{entry.image}: an .npy slice needs its _gt.npy label file.")
    image = np.squeeze(_load_npy(entry.image, "image slice"))
    label = np.squeeze(_load_npy(entry.label, "label slice"))
    if image.ndim != 2 or image.dtype.kind not in "iuf":
        raise DatasetError(f"{entry.image}: expected a 2-D image slice (H, W), found {image.dtype} {image.shape}.")
    if label.shape != image.shape:
        raise DatasetError(
            f"{entry.label}: expected the label shape to equal the image shape {image.shape} of {entry.image.name}, "
            f"found {label.shape}."
        )
    return image.astype(np.float32), label


def read_tfrecord_slices(entry: SliceFile) -> list[tuple[np.ndarray, np.ndarray]]:
    """The middle slice of every record of a SIFA tfrecords file, as ``(image, raw label)`` (H, W) pairs.

    Raises:
        DatasetError: CRC mismatch, malformed Example, missing feature, or byte counts that do
            not match the shape features (file and record named).
    """
    out = []
    for number, example in enumerate(iter_examples(entry.image)):
        where = f"{entry.image}: record {number}"
        missing = [k for k in (*TFRECORD_KEYS, "data_vol", "label_vol") if k not in example]
        if missing:
            raise DatasetError(f"{where}: expected the SIFA features {missing} too, found {sorted(example)}.")
        d0, d1, d2, l0, l1, l2 = (example[k].scalar_int(k, where) for k in TFRECORD_KEYS)
        arrays = []
        for key, shape in (("data_vol", (d0, d1, d2)), ("label_vol", (l0, l1, l2))):
            raw = example[key].single_bytes(key, where)
            if min(shape) < 1 or len(raw) != 4 * int(np.prod(shape)):
                raise DatasetError(
                    f"{where}: expected {key} to hold float32 values of shape {shape} "
                    f"({4 * int(np.prod(shape))} bytes), found {len(raw)} bytes."
                )
            arrays.append(np.frombuffer(raw, dtype="<f4").reshape(shape))
        data, label = arrays
        if (l0, l1) != (d0, d1):
            raise DatasetError(f"{where}: expected the label size {(d0, d1)} of data_vol, found {(l0, l1)}.")
        out.append((np.array(data[:, :, d2 // 2], dtype=np.float32), np.array(label[:, :, l2 // 2])))
    if not out:
        raise DatasetError(f"{entry.image}: expected at least one record, found an empty TFRecord file.")
    return out


def read_test_volume(test: VolumeFile) -> tuple[np.ndarray, np.ndarray]:
    """A test volume as ``(image, raw label)``, (H, W, D), with the release's flip on axes 0 and 1 undone.

    Raises:
        DatasetError: unreadable, not 3-D, no label, or shapes that differ (file named).
    """
    if test.label is None:
        try:
            with np.load(test.image, allow_pickle=False) as npz:
                if "arr_0" not in npz.files or "arr_1" not in npz.files:
                    raise DatasetError(
                        f"{test.image}: expected the arrays arr_0 (image) and arr_1 (label), found {npz.files}."
                    )
                image, label = np.asarray(npz["arr_0"]), np.asarray(npz["arr_1"])
        except (OSError, ValueError, EOFError) as exc:
            raise DatasetError(f"{test.image}: cannot read as an .npz file ({type(exc).__name__}: {exc}).") from exc
        label_file = test.image
    else:
        image, _ = load_nifti_raw(test.image, "test image")
        label, _ = load_nifti_raw(test.label, "test label")
        label_file = test.label
    if image.ndim != 3 or label.shape != image.shape:
        raise DatasetError(
            f"{label_file}: expected a 3-D test image and a label of the same shape, found {image.shape} and "
            f"{label.shape}."
        )
    # The release stores test volumes flipped on axes 0 and 1 relative to the training slices.
    image = np.ascontiguousarray(image[::-1, ::-1], dtype=np.float32)
    label = np.ascontiguousarray(label[::-1, ::-1])
    return image, label


__all__ = [
    "IGNORED_LABEL",
    "ReleaseFiles",
    "SliceFile",
    "VolumeFile",
    "find_release_files",
    "read_npy_slice",
    "read_test_volume",
    "read_tfrecord_slices",
    "release_labels",
]
