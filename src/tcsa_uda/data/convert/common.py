"""Helpers shared by the benchmark converters (``tcsa-uda convert ...``).

A converter discovers the files of one raw download (:func:`find_files`), maps its label codes
to consecutive ids (:func:`map_codes`), puts every volume in RAS+ voxel order without resampling
(:func:`to_ras`), assigns the literature's split (:func:`carve_val`, :func:`check_test_cases`)
and hands each case to a :class:`DatasetWriter`. The writer saves NIfTI files atomically, writes
``dataset.json`` and ``split.json`` in the contract of :mod:`tcsa_uda.data.contract`, counts the
voxels of every class, runs :func:`tcsa_uda.data.verify.verify_dataset` on the result and writes
``summary.json``. A conversion whose output fails verification raises :class:`DatasetError`.

Things the download lacks that are not fatal (a missing training case, an image without a label,
an unexpected label code) are *notes*: printed with the summary and saved in ``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from tcsa_uda.atomic import atomic_write_json
from tcsa_uda.data.contract import DATASET_FILE, SPLITS, CaseSpec, DatasetSpec, DomainSpec, dataset_to_dict
from tcsa_uda.data.io import save_nifti
from tcsa_uda.data.verify import VerifyReport, verify_dataset
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError

SUMMARY_FILE = "summary.json"
SPLIT_FILE = "split.json"
SPLIT_FORMAT = "tcsa-uda split v1"
NIFTI_RE = r"\.nii(?:\.gz)?"
"""Regular-expression fragment matching a NIfTI suffix (``.nii`` or ``.nii.gz``, any case)."""

MIN_CASES_FOR_VAL = 10
"""A domain needs at least this many labelled training cases before a val split is carved."""
DEFAULT_VAL_FRACTION = 0.1
"""Share of the labelled training cases moved to ``val`` (rounded, at least 1) by default."""

_IMAGE_DTYPES = (np.uint8, np.int16, np.uint16, np.int32, np.float32)


# --------------------------------------------------------------------------------------------
# Discovery


def require_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Return ``path`` as a Path if it is a folder.

    Raises:
        MissingPathError: naming ``what`` (e.g. ``--ct folder``) and what was found instead.
    """
    path = Path(path)
    if not path.is_dir():
        found = "a file" if path.exists() else "nothing"
        raise MissingPathError(f"{path}: expected the {what} to be a folder, found {found}.")
    return path


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root`` (recursive, sorted), without hidden files.

    Names starting with ``.`` are skipped: among them the ``._name`` AppleDouble files that
    archives made on macOS contain next to every real file.
    """
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def find_files(root: Path, pattern: str) -> list[tuple[Path, re.Match[str]]]:
    """Files under ``root`` whose *name* matches ``pattern`` in full, ignoring letter case.

    Args:
        root: folder searched recursively (nested folders of any depth).
        pattern: regular expression for the file name (use :data:`NIFTI_RE` for the suffix).

    Returns:
        ``(path, match)`` pairs in sorted path order.
    """
    regex = re.compile(pattern, re.IGNORECASE)
    out: list[tuple[Path, re.Match[str]]] = []
    for path in iter_files(root):
        match = regex.fullmatch(path.name)
        if match is not None:
            out.append((path, match))
    return out


def index_unique(
    found: Sequence[tuple[Path, re.Match[str]]], key: Any, root: Path, what: str
) -> dict[Any, Path]:
    """Map ``key(match)`` -> path, refusing two files for one key.

    Raises:
        DatasetError: two files (e.g. ``x.nii`` and ``x.nii.gz``, or two nested copies) give the
            same key; both are named.
    """
    out: dict[Any, Path] = {}
    for path, match in found:
        k = key(match)
        if k in out:
            raise DatasetError(
                f"{root}: expected one {what} file per case, found two for {k!r}: {out[k]} and {path}; "
                "remove one of them."
            )
        out[k] = path
    return out


def natural_key(text: str) -> list[Any]:
    """Sort key that orders embedded numbers numerically (``img2`` before ``img10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def check_test_cases(test_ids: Collection[str], present: Collection[str], domain: str, where: Path, expected_files: str) -> None:
    """Raise when a literature test case is missing (missing training cases are only notes).

    Raises:
        MissingPathError: naming the folder, the missing ids and the files that were expected.
    """
    missing = sorted(set(test_ids) - set(present), key=natural_key)
    if missing:
        raise MissingPathError(
            f"{where}: the {domain} test case(s) {missing} of the literature split are missing or incomplete "
            f"(expected {expected_files}); the published split cannot be reproduced without them."
        )


# --------------------------------------------------------------------------------------------
# Arrays


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder the voxel axes of a volume to the closest RAS+ order, without resampling.

    Only axis permutations and flips are applied, and the affine is updated so that every voxel
    keeps its world position: after this ``nibabel.aff2axcodes(affine) == ('R', 'A', 'S')`` for
    any non-degenerate affine (an oblique one goes to its closest axes).

    Args:
        array: (X, Y, Z) volume.
        affine: (4, 4) voxel-to-world affine of ``array`` (reorient a label with its image's
            affine so both get the same transform).

    Returns:
        ``(array, affine)`` in RAS+ voxel order.
    """
    ornt = io_orientation(affine)
    transform = ornt_transform(ornt, axcodes2ornt(("R", "A", "S")))
    out = apply_orientation(array, transform)
    new_affine = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(transform, array.shape)
    return np.ascontiguousarray(out), new_affine


def map_codes(label: np.ndarray, mapping: Mapping[int, int], ignored: Collection[int] = ()) -> tuple[np.ndarray, dict[int, int]]:
    """Map raw label codes to consecutive class ids; every other code becomes background 0.

    Args:
        label: integer (or whole-valued float) raw label map of any shape.
        mapping: raw code -> class id (ids 1..C-1).
        ignored: raw codes that are expected and mapped to background silently (e.g. the
            MM-WHS right ventricle 600); 0 is always expected.

    Returns:
        ``(ids, unexpected)``: uint8 ids of ``label``'s shape, and ``{code: voxel count}`` of the
        codes that are neither mapped, ignored nor 0 (reported by the converters).

    Raises:
        DatasetError: non-integer values in ``label``.
    """
    arr = np.asarray(label)
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise DatasetError("expected whole-number label codes, found non-integer values")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "biu":
        raise DatasetError(f"expected an integer label map, found dtype {arr.dtype}")
    codes, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
    lut = np.zeros(len(codes), dtype=np.uint8)
    unexpected: dict[int, int] = {}
    known = set(ignored) | {0}
    for i, (code, n) in enumerate(zip(codes.tolist(), counts.tolist(), strict=True)):
        if code in mapping:
            lut[i] = mapping[code]
        elif code not in known:
            unexpected[int(code)] = int(n)
    return lut[inverse].reshape(arr.shape), unexpected


def image_dtype(array: np.ndarray) -> np.ndarray:
    """``array`` in a compact NIfTI dtype: integer types kept when they fit, else float32."""
    if array.dtype in _IMAGE_DTYPES:
        return array
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    return array.astype(np.float32)


def describe_codes(codes: Mapping[int, int]) -> str:
    """``{600: 12, 850: 3}`` -> ``"600 (12 voxels), 850 (3 voxels)"``."""
    return ", ".join(f"{c} ({n} voxels)" for c, n in sorted(codes.items()))


# --------------------------------------------------------------------------------------------
# Splits


def check_fraction(value: float, name: str) -> float:
    """Validate a split fraction in [0, 1).

    Raises:
        ConfigError: naming the option and the value found.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{name}: expected a fraction in [0, 1), found {value!r}.")
    return float(value)


def domain_rng(seed: int, domain: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the domain name (stable across runs)."""
    return np.random.default_rng([int(seed), zlib.crc32(domain.encode("utf-8"))])


def carve_val(train_ids: Sequence[str], fraction: float, seed: int, domain: str, min_cases: int = MIN_CASES_FOR_VAL) -> list[str]:
    """The training ids moved to ``val``: deterministic for ``seed`` and ``domain``.

    ``k = max(1, round(fraction * n))`` ids are drawn from the ``n`` sorted ids when
    ``n >= min_cases`` and ``fraction > 0``; otherwise none (small downloads keep every case for
    training).

    Returns:
        The val ids, sorted naturally.
    """
    fraction = check_fraction(fraction, "val fraction")
    n = len(train_ids)
    if fraction <= 0.0 or n < min_cases:
        return []
    k = max(1, math.floor(fraction * n + 0.5))
    pool = sorted(train_ids, key=natural_key)
    picked = domain_rng(seed, domain).choice(len(pool), size=k, replace=False)
    return sorted((pool[int(i)] for i in picked), key=natural_key)


def write_split_file(path: Path, dataset: str, seed: int, splits: Mapping[str, Mapping[str, Sequence[str]]], notes: Sequence[str] = ()) -> None:
    """Write ``split.json``: ``{"format", "dataset", "seed", "domains": {domain: {split: [ids]}}}``."""
    domains = {d: {s: sorted(per.get(s, []), key=natural_key) for s in SPLITS} for d, per in splits.items()}
    atomic_write_json(path, {"format": SPLIT_FORMAT, "dataset": dataset, "seed": int(seed), "domains": domains, "notes": list(notes)})


def read_split_file(path: str | os.PathLike[str], domains: Collection[str]) -> dict[str, dict[str, list[str]]]:
    """Read a ``split.json`` written by a converter and check it.

    Args:
        path: the split file.
        domains: the domain names the file must define.

    Returns:
        domain -> split -> case ids.

    Raises:
        MissingPathError: the file does not exist.
        DatasetError: not a split file, a domain or split missing, an id listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"{path}: split file does not exist (expected a split.json written by tcsa-uda convert).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: expected a JSON split file, found unreadable content ({exc}).") from exc
    if not isinstance(data, dict) or data.get("format") != SPLIT_FORMAT or not isinstance(data.get("domains"), dict):
        raise DatasetError(f"{path}: expected a split file with format {SPLIT_FORMAT!r} and a 'domains' mapping, found {str(data)[:120]!r}.")
    out: dict[str, dict[str, list[str]]] = {}
    seen: dict[str, str] = {}
    for domain in domains:
        per = data["domains"].get(domain)
        if not isinstance(per, dict):
            raise DatasetError(f"{path}: expected domain {domain!r} in 'domains', found {sorted(data['domains'])}.")
        out[domain] = {}
        for split in SPLITS:
            ids = per.get(split, [])
            if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
                raise DatasetError(f"{path}: domains.{domain}.{split}: expected a list of case ids, found {ids!r}.")
            for cid in ids:
                if cid in seen:
                    raise DatasetError(f"{path}: case {cid!r} is listed twice ({seen[cid]} and {domain}/{split}); each case belongs to one domain and split.")
                seen[cid] = f"{domain}/{split}"
            out[domain][split] = list(ids)
    return out


# --------------------------------------------------------------------------------------------
# Writing, summary, verification


def safe_name(case_id: str) -> str:
    """A file-name-safe spelling of a case id."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", case_id)
    return "_" + safe if safe.startswith(".") else safe


@dataclass
class CaseRecord:
    """What the summary knows of one written case."""

    domain: str
    id: str
    split: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    voxels: list[int] | None
    source: str

    def to_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "split": self.split,
            "shape": list(self.shape),
            "spacing_mm": [round(s, 6) for s in self.spacing],
            "source": self.source,
        }
        out["voxels"] = None if self.voxels is None else dict(zip(class_names, self.voxels, strict=True))
        return out


@dataclass
class ConversionResult:
    """The outcome of one converter run.

    Attributes:
        out: the dataset folder written.
        spec: the dataset as written (``dataset.json``).
        summary: the content of ``summary.json``.
        report: the verification report (always ``ok``; a failed one raises instead).
    """

    out: Path
    spec: DatasetSpec
    summary: dict[str, Any]
    report: VerifyReport

    def format(self) -> str:
        """The human-readable summary (also printed by the command line)."""
        return format_summary(self.summary)


@dataclass
class DatasetWriter:
    """Collects the cases of one conversion and writes the dataset folder.

    Files: ``OUT/<domain>/<id>_image.nii.gz`` and ``OUT/<domain>/<id>_label.nii.gz``.

    Attributes:
        out: output folder (created).
        name: dataset name in ``dataset.json``.
        class_names: class names ordered by id, background first.
        modalities: domain name -> modality phrase used in text prompts.
        description, reference: free text written into ``dataset.json``.
        seed: seed of any random split step (recorded in ``split.json``).
    """

    out: Path
    name: str
    class_names: Sequence[str]
    modalities: Mapping[str, str]
    description: str = ""
    reference: str = ""
    seed: int = 0
    notes: list[str] = field(default_factory=list)
    _cases: dict[str, list[CaseSpec]] = field(default_factory=dict)
    _records: list[CaseRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._cases = {d: [] for d in self.modalities}

    def note(self, message: str) -> None:
        """Record a non-fatal finding (missing case, unexpected code, ...) for the summary."""
        self.notes.append(message)

    def add(
        self,
        domain: str,
        case_id: str,
        split: str,
        image: np.ndarray,
        affine: np.ndarray,
        label: np.ndarray | None,
        source: str,
    ) -> None:
        """Write one case (image and optional label on the same grid) and record it.

        Args:
            domain: a key of ``modalities``.
            case_id: unique within the domain.
            split: ``train``, ``val`` or ``test``.
            image: (X, Y, Z) intensities.
            affine: (4, 4) voxel-to-world affine shared by image and label.
            label: (X, Y, Z) class ids in ``0..C-1`` or None (unlabelled case).
            source: where the case came from (shown in the summary).

        Raises:
            DatasetError: an unknown domain or split, a repeated id, a label on another grid or
                with ids outside the classes (a converter bug or a corrupt input file).
        """
        if domain not in self._cases:
            raise DatasetError(f"{source}: unknown domain {domain!r}; expected one of {sorted(self._cases)}.")
        if split not in SPLITS:
            raise DatasetError(f"{source}: expected split in {list(SPLITS)}, found {split!r}.")
        if any(c.id == case_id for c in self._cases[domain]):
            raise DatasetError(f"{source}: case id {case_id!r} appears twice in domain {domain!r}.")
        if image.ndim != 3:
            raise DatasetError(f"{source}: expected a 3D image, found shape {image.shape}.")
        stem = f"{safe_name(domain)}/{safe_name(case_id)}"
        image_rel = f"{stem}_image.nii.gz"
        save_nifti(self.out / image_rel, image_dtype(np.asarray(image)), affine)
        label_rel: str | None = None
        voxels: list[int] | None = None
        if label is not None:
            if label.shape != image.shape:
                raise DatasetError(f"{source}: expected the label shape to equal the image shape {image.shape}, found {label.shape}.")
            ids = np.asarray(label)
            if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= len(self.class_names)):
                raise DatasetError(
                    f"{source}: expected class ids in 0..{len(self.class_names) - 1}, found values in [{ids.min()}, {ids.max()}]."
                )
            ids = ids.astype(np.uint8)
            voxels = np.bincount(ids.ravel(), minlength=len(self.class_names)).tolist()
            label_rel = f"{stem}_label.nii.gz"
            save_nifti(self.out / label_rel, ids, affine)
        spacing = tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))
        self._cases[domain].append(CaseSpec(id=case_id, image=image_rel, split=split, label=label_rel))
        self._records.append(CaseRecord(domain, case_id, split, tuple(image.shape), spacing, voxels, source))

    def spec(self) -> DatasetSpec:
        """The dataset written so far."""
        labels = {n: i for i, n in enumerate(self.class_names)}
        domains = {d: DomainSpec(name=d, modality=self.modalities[d], cases=tuple(cs)) for d, cs in self._cases.items()}
        return DatasetSpec(name=self.name, labels=labels, domains=domains, root=self.out)

    def splits(self) -> dict[str, dict[str, list[str]]]:
        """domain -> split -> case ids, as written."""
        return {d: {s: [c.id for c in cs if c.split == s] for s in SPLITS} for d, cs in self._cases.items()}

    def finish(self, progress: bool = False) -> ConversionResult:
        """Write ``dataset.json``, ``split.json`` and ``summary.json``; verify the folder.

        Raises:
            DatasetError: a domain has no case, or verification found problems (all listed;
                ``summary.json`` is written first so they can be inspected).
        """
        empty = [d for d, cs in self._cases.items() if not cs]
        if empty:
            raise DatasetError(f"{self.out}: no case was converted for domain(s) {empty}; see the notes above:\n" + "\n".join(self.notes))
        spec = self.spec()
        data = dataset_to_dict(spec)
        if self.description:
            data["description"] = self.description
        if self.reference:
            data["reference"] = self.reference
        atomic_write_json(self.out / DATASET_FILE, data)
        write_split_file(self.out / SPLIT_FILE, self.name, self.seed, self.splits(), self.notes)
        report = verify_dataset(self.out, progress=progress)
        summary = self._summary(report)
        atomic_write_json(self.out / SUMMARY_FILE, summary)
        if not report.ok:
            raise DatasetError(f"{self.out}: the converted dataset failed verification:\n{report.format()}")
        return ConversionResult(out=self.out, spec=spec, summary=summary, report=report)

    def _summary(self, report: VerifyReport) -> dict[str, Any]:
        domains: dict[str, Any] = {}
        for d, modality in self.modalities.items():
            records = [r for r in self._records if r.domain == d]
            labelled = [r for r in records if r.voxels is not None]
            totals = np.sum([r.voxels for r in labelled], axis=0).tolist() if labelled else [0] * len(self.class_names)
            domains[d] = {
                "modality": modality,
                "cases": {s: sum(r.split == s for r in records) for s in SPLITS},
                "labelled": len(labelled),
                "voxels": dict(zip(self.class_names, (int(v) for v in totals), strict=True)),
                "case_list": [r.to_dict(self.class_names) for r in records],
            }
        return {
            "dataset": self.name,
            "out": str(self.out),
            "classes": list(self.class_names),
            "seed": self.seed,
            "domains": domains,
            "notes": list(self.notes),
            "verify": {"ok": report.ok, "problems": [str(p) for p in report.problems], "warnings": list(report.warnings)},
        }


def format_summary(summary: Mapping[str, Any]) -> str:
    """Human-readable lines of a ``summary.json`` mapping."""
    lines = [f"{summary['dataset']}: written to {summary['out']}"]
    for d, info in summary["domains"].items():
        per = ", ".join(f"{s} {info['cases'][s]}" for s in SPLITS)
        total = sum(info["cases"].values())
        lines.append(f"  {d} ({info['modality']}): {total} case(s) ({per}); labelled {info['labelled']}")
        lines.append("    voxels: " + ", ".join(f"{name} {n}" for name, n in info["voxels"].items()))
    notes = summary.get("notes", [])
    if notes:
        lines.append(f"  {len(notes)} note(s):")
        lines.extend(f"    - {n}" for n in notes)
    verify = summary.get("verify", {})
    if verify.get("ok"):
        lines.append(f"  verify: OK ({len(verify.get('warnings', []))} warning(s))")
    else:
        lines.append(f"  verify: {len(verify.get('problems', []))} problem(s)")
        lines.extend(f"    - {p}" for p in verify.get("problems", []))
    return "\n".join(lines)


def load_nifti_raw(path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Load a raw-download NIfTI as ``(array, affine)``; a 4D file with one volume is squeezed.

    Raises:
        DatasetError: unreadable file or not 3D (the message names the file).
    """
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DatasetError(f"{path}: cannot read the {what} as NIfTI ({type(exc).__name__}: {exc}).") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DatasetError(f"{path}: expected a 3D {what}, found shape {data.shape}.")
    return np.asarray(data), np.asarray(img.affine, dtype=np.float64)


def check_same_grid(image: tuple[np.ndarray, np.ndarray], label: tuple[np.ndarray, np.ndarray], image_path: Path, label_path: Path, writer: DatasetWriter, atol: float = 1e-3) -> None:
    """The label must have the image's shape; an affine difference is a note (headers differ in practice).

    Raises:
        DatasetError: the shapes differ (both files named).
    """
    if image[0].shape != label[0].shape:
        raise DatasetError(
            f"{label_path}: expected the label shape to equal the shape {image[0].shape} of {image_path}, found {label[0].shape}."
        )
    diff = float(np.abs(image[1] - label[1]).max())
    if diff > atol:
        writer.note(f"{label_path}: affine differs from its image's by up to {diff:.4g}; the image affine is used for both.")
