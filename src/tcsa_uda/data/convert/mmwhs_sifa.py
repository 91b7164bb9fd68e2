"""The preprocessed MM-WHS release of the SIFA / MPSCL line -> the dataset contract.

Many users hold this release instead of the raw MM-WHS download (docs/protocols.md):

* **Test volumes**: one ``*.npz`` per volume, ``arr_0`` the image ``(H, W, D)`` and ``arr_1`` the
  label, flipped on axes 0 and 1 relative to the training slices. The flip is undone here, so
  ``volume[:, :, k]`` is oriented like a training slice. The case id is the four-digit MM-WHS id
  in the file name (e.g. ``image_mr_1007.npz`` -> ``1007``), else the file stem.
* **Training slices**: ``.npy`` / ``.npz`` files listed in text datalists whose name gives the
  modality and the split (``train_mr.txt``, ``validation_ct.txt``, ...). A line holds an image
  path, optionally followed by a label path. A path is resolved against the datalist's folder,
  then the ``--root`` folder, then by file name anywhere under ``--root``. A slice file holds
  image and label: ``.npz`` with keys ``arr_0``/``arr_1`` (or ``image``/``label``), ``.npy`` of
  shape ``(H, W, 2)`` / ``(2, H, W)``, or a 2D ``.npy`` with a sibling ``<stem>_label.npy``.

Training slices become volumes in one of two ways (recorded in the summary):

* **per case** when every slice name of a datalist carries an MM-WHS id and a slice number
  (``mr_train_1001_slice_12.npy``, ``ct_1003_7.npz``): slices are stacked by number. A training
  case whose id is also a test id (a known leak of this release for MR) is kept under the id
  ``<id>_<split>`` and noted.
* **pseudo-volumes** otherwise: consecutive slices of the datalist, in its order, are stacked
  by :data:`PSEUDO_VOLUME_SLICES` into cases ``<split>_pseudo_000``, ... . They serve training
  only (each slice is still seen whole); they are not anatomical volumes.

Labels are already the SIFA ids 1 myocardium, 2 left atrium blood cavity, 3 left ventricle blood
cavity, 4 ascending aorta. The release has no geometry: every volume gets a nominal 1 mm
affine whose third array axis is anterior-posterior, so ``tcsa-uda prepare --axis coronal``
(or ``--axis 2``) returns exactly the release's 2D slices. Distances in mm therefore equal
distances in pixels of the release.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tcsa_uda.data.convert.common import iter_files, natural_key, require_dir
from tcsa_uda.data.convert.mmwhs import CLASS_NAMES, MODALITIES, TEST_IDS
from tcsa_uda.data.convert.writer import ConversionResult, DatasetWriter
from tcsa_uda.errors import DatasetError

DATASET_NAME = "mmwhs_sifa"
PSEUDO_VOLUME_SLICES = 64
"""Training slices stacked into one pseudo-volume when the file names give no case id."""
SIFA_AFFINE = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
"""Nominal 1 mm affine: array axis 0 (rows) -> inferior, 1 (columns) -> right, 2 (slices) -> anterior."""
IMAGE_KEYS = ("arr_0", "image", "img", "data", "x")
LABEL_KEYS = ("arr_1", "label", "seg", "gt", "mask", "y")
LABEL_SUFFIXES = ("_label", "_seg", "_gt", "_mask")
SLICE_SUFFIXES = (".npy", ".npz")
_CASE_SLICE = re.compile(r"(?<!\d)(?P<case>1\d{3})(?!\d)\D+(?P<slice>\d+)\D*$")
_CASE_ONLY = re.compile(r"(?<!\d)(?P<case>1\d{3})(?!\d)")
_SPLIT_WORDS = (
    ("val", "val"),
    ("valid", "val"),
    ("validation", "val"),
    ("train", "train"),
    ("training", "train"),
    ("test", "test"),
    ("testing", "test"),
)


@dataclass(frozen=True)
class SliceEntry:
    """One line of a datalist: the image file and, if given, the label file."""

    image: Path
    label: Path | None
    datalist: Path
    line: int


def modality_of(text: str) -> str | None:
    """``CT`` or ``MR`` from a file or folder name (a whole token first, then a substring)."""
    lower = text.lower()
    tokens = set(re.split(r"[^a-z0-9]+", lower))
    hits = {m for m in ("ct", "mr") if m in tokens}
    if len(hits) != 1:
        hits = hits if hits else {m for m in ("ct", "mr") if m in lower}
    return hits.pop().upper() if len(hits) == 1 else None


def split_of(name: str) -> str | None:
    """``train``, ``val`` or ``test`` from a datalist name."""
    tokens = re.split(r"[^a-z0-9]+", name.lower())
    for token in tokens:
        for word, split in _SPLIT_WORDS:
            if token == word or (token.startswith(word) and token[len(word) :] in ("ct", "mr", "list", "set")):
                return split
    return None


class _Resolver:
    """Resolves datalist paths: datalist folder, then root, then unique file name under root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_name: dict[str, list[Path]] | None = None

    def __call__(self, raw: str, datalist: Path, line: int) -> Path:
        text = raw.strip().strip("'\"").replace("\\", "/")
        rel = Path(text)
        for base in (datalist.parent, self.root):
            candidate = rel if rel.is_absolute() else base / rel
            if candidate.is_file():
                return candidate
        if self._by_name is None:
            self._by_name = defaultdict(list)
            for f in iter_files(self.root):
                self._by_name[f.name.lower()].append(f)
        hits = self._by_name.get(rel.name.lower(), [])
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise DatasetError(
                f"{datalist}:{line}: expected the file {text!r} next to the datalist, under {self.root} or by name "
                "below it, found none."
            )
        raise DatasetError(
            f"{datalist}:{line}: the file name of {text!r} is ambiguous under {self.root}: "
            f"{[str(h) for h in hits[:3]]}."
        )


def read_datalist(path: Path, resolve: _Resolver) -> list[SliceEntry]:
    """The entries of one datalist (blank lines and ``#`` comments skipped)."""
    entries = []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) > 2:
            raise DatasetError(
                f"{path}:{i}: expected an image path, optionally followed by a label path, found {len(parts)} fields: "
                f"{text!r}."
            )
        image = resolve(parts[0], path, i)
        label = resolve(parts[1], path, i) if len(parts) == 2 else None
        entries.append(SliceEntry(image, label, path, i))
    return entries


def _pick(npz: np.lib.npyio.NpzFile, keys: tuple[str, ...]) -> np.ndarray | None:
    for key in keys:
        if key in npz.files:
            return np.asarray(npz[key])
    return None


def _sibling_label(path: Path) -> Path | None:
    for suffix in LABEL_SUFFIXES:
        candidate = path.with_name(path.stem + suffix + path.suffix)
        if candidate.is_file():
            return candidate
    return None


def _load_array(path: Path) -> np.ndarray | np.lib.npyio.NpzFile:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read as a numpy .npy/.npz file ({type(exc).__name__}: {exc}).") from exc


def load_slice(entry: SliceEntry) -> tuple[np.ndarray, np.ndarray]:
    """One training slice as ``(image, label)``, both (H, W).

    Raises:
        DatasetError: unreadable file, no label found, or unexpected shapes (file named).
    """
    data = _load_array(entry.image)
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            image, label = _pick(data, IMAGE_KEYS), _pick(data, LABEL_KEYS)
        if image is None:
            raise DatasetError(
                f"{entry.image}: expected an image array under one of {list(IMAGE_KEYS)}, found keys {data.files}."
            )
    else:
        image, label = np.asarray(data), None
        if image.ndim == 3 and image.shape[-1] == 2:
            image, label = image[..., 0], image[..., 1]
        elif image.ndim == 3 and image.shape[0] == 2:
            image, label = image[0], image[1]
    if entry.label is not None:
        loaded = _load_array(entry.label)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                label = _pick(loaded, LABEL_KEYS + IMAGE_KEYS)
        else:
            label = np.asarray(loaded)
    elif label is None:
        sibling = _sibling_label(entry.image)
        if sibling is not None:
            loaded = _load_array(sibling)
            label = (
                np.asarray(loaded)
                if not isinstance(loaded, np.lib.npyio.NpzFile)
                else _pick(loaded, LABEL_KEYS + IMAGE_KEYS)
            )
    if label is None:
        raise DatasetError(
            f"{entry.image} ({entry.datalist}:{entry.line}): expected a label (npz key arr_1/label, a (H, W, 2) array, "
            f"a second path on the datalist line or a sibling {entry.image.stem}_label{entry.image.suffix}), found "
            "none."
        )
    image, label = np.squeeze(image), np.squeeze(label)
    if image.ndim != 2 or label.shape != image.shape:
        raise DatasetError(
            f"{entry.image}: expected a 2D image slice and a label of the same shape, found {image.shape} and "
            f"{label.shape}."
        )
    return image.astype(np.float32), _check_ids(label, entry.image)


def _check_ids(label: np.ndarray, path: Path) -> np.ndarray:
    arr = np.asarray(label)
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise DatasetError(f"{path}: expected integer class ids 0..4, found non-integer label values.")
    values = np.unique(arr)
    if values.size and (values.min() < 0 or values.max() >= len(CLASS_NAMES)):
        raise DatasetError(
            f"{path}: expected the SIFA class ids 0..{len(CLASS_NAMES) - 1} (1 MYO, 2 LAC, 3 LVC, 4 AA), found values "
            f"{values.tolist()[:10]}."
        )
    return arr.astype(np.uint8)


def load_test_volume(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A test ``.npz`` as ``(image, label)`` (H, W, D) with the release's flip undone; None if not 3D.

    Raises:
        DatasetError: unreadable, no ``arr_1`` label, or shapes differ.
    """
    data = _load_array(path)
    if not isinstance(data, np.lib.npyio.NpzFile):
        return None
    with data:
        image, label = _pick(data, IMAGE_KEYS), _pick(data, LABEL_KEYS)
    if image is None or image.ndim != 3:
        return None
    if label is None or label.shape != image.shape:
        found = None if label is None else label.shape
        raise DatasetError(
            f"{path}: expected a test volume with arr_0 image and arr_1 label of equal shape {image.shape}, found "
            f"label {found}."
        )
    image = np.flip(np.flip(image, axis=0), axis=1)  # (H, W, D) back to the training slices' orientation
    label = np.flip(np.flip(label, axis=0), axis=1)
    return np.ascontiguousarray(image, dtype=np.float32), _check_ids(np.ascontiguousarray(label), path)


def _stack_cases(entries: list[SliceEntry]) -> tuple[dict[str, list[SliceEntry]], bool]:
    """Group entries into cases: per MM-WHS id and slice number if all names allow it, else pseudo-volumes."""
    matches = [(m, e) for e in entries if (m := _CASE_SLICE.search(e.image.stem)) is not None]
    if entries and len(matches) == len(entries):
        groups: dict[str, list[tuple[int, SliceEntry]]] = defaultdict(list)
        for m, e in matches:
            groups[m.group("case")].append((int(m.group("slice")), e))
        out: dict[str, list[SliceEntry]] = {}
        for cid, items in groups.items():
            items.sort(key=lambda t: t[0])
            numbers = [n for n, _ in items]
            if len(set(numbers)) != len(numbers):
                dup = sorted({n for n in numbers if numbers.count(n) > 1})[:5]
                raise DatasetError(f"{entries[0].datalist}: case {cid} lists slice number(s) {dup} twice.")
            out[cid] = [e for _, e in items]
        return out, True
    chunks = {
        f"{i // PSEUDO_VOLUME_SLICES:03d}": entries[i : i + PSEUDO_VOLUME_SLICES]
        for i in range(0, len(entries), PSEUDO_VOLUME_SLICES)
    }
    return chunks, False


def convert_mmwhs_sifa(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    progress: bool = True,
) -> ConversionResult:
    """Convert the SIFA/MPSCL MM-WHS release (test ``.npz`` volumes, training slices + datalists).

    Args:
        root: folder of the release (searched recursively for ``*.npz`` and ``*.txt`` datalists).
        out: output dataset folder.
        progress: show a progress bar.

    Raises:
        MissingPathError: the folder does not exist.
        DatasetError: no test volume or no training datalist for a modality, unreadable or
            inconsistent files, or the output fails verification.
    """
    root_dir = require_dir(root, "--root folder")
    writer = DatasetWriter(
        out=Path(out),
        name=DATASET_NAME,
        class_names=CLASS_NAMES,
        modalities=MODALITIES,
        description="MM-WHS 2017 from the SIFA/MPSCL preprocessed release (tcsa-uda convert mmwhs-sifa).",
        reference="C. Chen et al., Synergistic Image and Feature Adaptation (SIFA), AAAI 2019 / IEEE TMI 2020",
    )
    resolve = _Resolver(root_dir)
    lists: dict[tuple[str, str], list[SliceEntry]] = defaultdict(list)
    for path in iter_files(root_dir):
        if path.suffix.lower() != ".txt":
            continue
        domain, split = modality_of(path.name), split_of(path.name)
        if domain is None or split is None:
            writer.note(f"{path}: not read as a datalist (its name gives no ct/mr and train/val/test)")
            continue
        if split == "test":
            continue  # test volumes are the *.npz files themselves
        lists[(domain, split)].extend(read_datalist(path, resolve))
    listed = {e.image.resolve() for es in lists.values() for e in es} | {
        e.label.resolve() for es in lists.values() for e in es if e.label
    }

    tests: dict[str, dict[str, Path]] = {d: {} for d in MODALITIES}
    candidates = [p for p in iter_files(root_dir) if p.suffix.lower() == ".npz" and p.resolve() not in listed]
    for path in tqdm(candidates, desc="scan test volumes", unit="file", disable=not progress):
        vol = load_test_volume(path)
        if vol is None:
            writer.note(f"{path}: a 2D .npz not listed in any datalist; ignored")
            continue
        domain = modality_of(str(path.relative_to(root_dir)))
        if domain is None:
            raise DatasetError(
                f"{path}: cannot tell whether this test volume is CT or MR; put 'ct' or 'mr' in its file or folder "
                "name."
            )
        m = _CASE_ONLY.search(path.stem)
        cid = m.group("case") if m else path.stem
        if cid in tests[domain]:
            raise DatasetError(
                f"{root_dir}: expected one {domain} test volume per case, found two for {cid!r}: {tests[domain][cid]} "
                f"and {path}."
            )
        tests[domain][cid] = path
        del vol  # read again when written: keeps one volume in memory at a time
    for domain in MODALITIES:
        if not tests[domain]:
            raise DatasetError(
                f"{root_dir}: expected the {domain} test volumes (*.npz with arr_0 image and arr_1 label, 'ct'/'mr' "
                "in the name), found none."
            )
        if not any(d == domain for d, _ in lists):
            raise DatasetError(
                f"{root_dir}: expected a {domain} training datalist (e.g. train_{domain.lower()}.txt) listing slice "
                "files, found none."
            )
        if set(tests[domain]) != set(TEST_IDS[domain]):
            writer.note(
                f"{domain}: test ids {sorted(tests[domain], key=natural_key)} differ from the literature split "
                f"{list(TEST_IDS[domain])}"
            )
        for cid in sorted(tests[domain], key=natural_key):
            loaded = load_test_volume(tests[domain][cid])
            if loaded is None:  # changed on disk since the scan
                raise DatasetError(f"{tests[domain][cid]}: expected a 3D test volume, found none on the second read.")
            image, label = loaded
            writer.add(domain, cid, "test", image, SIFA_AFFINE, label, source=str(tests[domain][cid]))

    for (domain, split), entries in sorted(lists.items()):
        groups, per_case = _stack_cases(entries)
        how = (
            "per case from the slice names"
            if per_case
            else f"as pseudo-volumes of up to {PSEUDO_VOLUME_SLICES} slices (names carry no case id)"
        )
        writer.note(
            f"{domain} {split}: {len(entries)} slice(s) from {len({e.datalist for e in entries})} datalist(s) stacked "
            f"{how}"
        )
        taken = {c.id for c in writer.spec().domains[domain].cases}
        for key, members in tqdm(groups.items(), desc=f"{domain} {split} slices", unit="case", disable=not progress):
            cid = key if per_case else f"{split}_pseudo_{key}"
            if cid in taken:
                if cid in tests[domain]:
                    writer.note(
                        f"{domain} case {cid}: also a test volume; its {split} slices are kept as {cid}_{split} (test "
                        "subject seen in training)"
                    )
                cid = f"{cid}_{split}"
            pairs = [load_slice(e) for e in members]
            shapes = {p[0].shape for p in pairs}
            if len(shapes) != 1:
                raise DatasetError(
                    f"{members[0].datalist}: slices of {domain} {cid} differ in shape: {sorted(shapes)}."
                )
            image = np.stack([p[0] for p in pairs], axis=-1)  # (H, W, S)
            label = np.stack([p[1] for p in pairs], axis=-1)
            writer.add(domain, cid, split, image, SIFA_AFFINE, label, source=str(members[0].datalist))
            taken.add(cid)
    return writer.finish()
