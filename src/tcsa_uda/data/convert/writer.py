"""Writing a converted dataset: NIfTI files, ``dataset.json``, ``split.json``, summary, verification.

:class:`DatasetWriter` saves each case atomically, counts the voxels of every class, writes
``dataset.json`` in the contract of :mod:`tcsa_uda.data.contract` and ``split.json``, runs
:func:`tcsa_uda.data.verify.verify_dataset` on the folder and writes ``summary.json``. A
conversion whose output fails verification raises :class:`DatasetError`.

Faults: a converter wraps the reading of each case in :meth:`DatasetWriter.case_faults`. A
user-facing error (:class:`~tcsa_uda.errors.TcsaUdaError`: unreadable DICOM series or NIfTI,
mismatched label, ...) in a training or validation case skips that case with a note (listed in
``summary.json`` under ``skipped_cases``); in a test case it stops the conversion, since the
published split cannot be reproduced without it. Raw label codes that a converter maps to a class
under another code than the documented one are listed under ``remapped_codes`` with their file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcsa_uda.atomic import atomic_write_json, make_dir
from tcsa_uda.data.contract import DATASET_FILE, SPLITS, CaseSpec, DatasetSpec, DomainSpec, dataset_to_dict
from tcsa_uda.data.convert.common import image_dtype
from tcsa_uda.data.convert.splits import SPLIT_FILE, write_split_file
from tcsa_uda.data.io import save_nifti
from tcsa_uda.data.verify import VerifyReport, verify_dataset
from tcsa_uda.errors import DatasetError, TcsaUdaError

SUMMARY_FILE = "summary.json"


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
        intensity_ranges: domain -> ``(lo, hi)`` written as the domain's ``intensity_range``
            (used by ``prepare --normalization fixed``); domains not listed get none.
    """

    out: Path
    name: str
    class_names: Sequence[str]
    modalities: Mapping[str, str]
    description: str = ""
    reference: str = ""
    seed: int = 0
    intensity_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    remapped: list[dict[str, Any]] = field(default_factory=list)
    _cases: dict[str, list[CaseSpec]] = field(default_factory=dict, init=False, repr=False)
    _records: list[CaseRecord] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        make_dir(self.out)
        self._cases = {d: [] for d in self.modalities}

    def note(self, message: str) -> None:
        """Record a non-fatal finding (missing case, unexpected code, ...) for the summary."""
        self.notes.append(message)

    def skip(self, domain: str, case_id: str, split: str, reason: str) -> None:
        """Record that a case was left out (a note and an entry of ``skipped_cases``)."""
        self.skipped.append({"domain": domain, "id": case_id, "split": split, "reason": reason})
        self.note(f"{domain} {split} case {case_id} skipped: {reason}")

    def remap(self, file: str | Path, code: int, class_id: int, voxels: int, reason: str) -> None:
        """Record that raw ``code`` of ``file`` was mapped to ``class_id`` (``remapped_codes`` and a note)."""
        name = self.class_names[class_id]
        self.remapped.append(
            {"file": str(file), "code": int(code), "class_id": int(class_id), "class": name, "voxels": int(voxels)}
        )
        self.note(f"{file}: raw code {code} ({voxels} voxels) remapped to {class_id} {name!r} ({reason})")

    @contextmanager
    def case_faults(self, domain: str, case_id: str, split: str) -> Iterator[None]:
        """Turn a user-facing error while converting one case into a skipped case, except for test cases.

        Use as ``with writer.case_faults(domain, cid, split): ...`` around reading and adding one
        case; the loop then continues with the next case.

        Raises:
            TcsaUdaError: the error of a ``test`` case, prefixed with the domain and case id (same
                class, one line).
        """
        try:
            yield
        except TcsaUdaError as exc:
            if split == "test":
                raise type(exc)(
                    f"{domain} test case {case_id} (part of the literature split, cannot be skipped): {exc}"
                ) from exc
            self.skip(domain, case_id, split, str(exc))

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
        ids: np.ndarray | None = None
        if label is not None:  # checked before anything is written: a refused case leaves no file
            if label.shape != image.shape:
                raise DatasetError(
                    f"{source}: expected the label shape to equal the image shape {image.shape}, found {label.shape}."
                )
            ids = np.asarray(label)
            if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= len(self.class_names)):
                raise DatasetError(
                    f"{source}: expected class ids in 0..{len(self.class_names) - 1}, found values in [{ids.min()}, "
                    f"{ids.max()}]."
                )
            ids = ids.astype(np.uint8)
        stem = f"{safe_name(domain)}/{safe_name(case_id)}"
        image_rel = f"{stem}_image.nii.gz"
        save_nifti(self.out / image_rel, image_dtype(np.asarray(image)), affine)
        label_rel: str | None = None
        voxels: list[int] | None = None
        if ids is not None:
            voxels = np.bincount(ids.ravel(), minlength=len(self.class_names)).tolist()
            label_rel = f"{stem}_label.nii.gz"
            save_nifti(self.out / label_rel, ids, affine, kind="label")
        spacing = tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))
        self._cases[domain].append(CaseSpec(id=case_id, image=image_rel, split=split, label=label_rel))
        self._records.append(CaseRecord(domain, case_id, split, tuple(image.shape), spacing, voxels, source))

    def spec(self) -> DatasetSpec:
        """The dataset written so far."""
        labels = {n: i for i, n in enumerate(self.class_names)}
        domains = {
            d: DomainSpec(
                name=d, modality=self.modalities[d], cases=tuple(cs), intensity_range=self.intensity_ranges.get(d)
            )
            for d, cs in self._cases.items()
        }
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
            raise DatasetError(
                f"{self.out}: no case was converted for domain(s) {empty}; see the notes above:\n"
                + "\n".join(self.notes)
            )
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
            counts = [r.voxels for r in labelled if r.voxels is not None]
            totals = np.sum(counts, axis=0).tolist() if counts else [0] * len(self.class_names)
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
            "skipped_cases": list(self.skipped),
            "remapped_codes": list(self.remapped),
            "verify": {
                "ok": report.ok,
                "problems": [str(p) for p in report.problems],
                "warnings": list(report.warnings),
            },
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


def check_same_grid(
    image: tuple[np.ndarray, np.ndarray],
    label: tuple[np.ndarray, np.ndarray],
    image_path: Path,
    label_path: Path,
    writer: DatasetWriter,
    atol: float = 1e-3,
) -> None:
    """The label must have the image's shape; an affine difference is a note (headers differ in practice).

    Raises:
        DatasetError: the shapes differ (both files named).
    """
    if image[0].shape != label[0].shape:
        raise DatasetError(
            f"{label_path}: expected the label shape to equal the shape {image[0].shape} of {image_path}, found "
            f"{label[0].shape}."
        )
    diff = float(np.abs(image[1] - label[1]).max())
    if diff > atol:
        writer.note(
            f"{label_path}: affine differs from its image's by up to {diff:.4g}; the image affine is used for both."
        )
