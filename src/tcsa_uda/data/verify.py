"""Check a dataset folder completely before any training (``tcsa-uda verify DATASET``).

The structure of ``dataset.json`` is checked by :func:`tcsa_uda.data.contract.parse_dataset`;
this module adds the checks that need the files: every image and label exists and loads as a 3D
volume (a 4D file needs the domain's ``channel``), image and label agree in shape and affine,
images hold only finite values, and label maps hold only integer values among the declared ids.

Every problem is collected (one unreadable file never stops the run), so one call lists all that
must be fixed. File checks also run when ``dataset.json`` has structural problems, on every case
entry whose ``id`` and paths are usable. The checks follow nnU-Net's
``verify_dataset_integrity`` in spirit; see docs/dataset_format.md for the contract.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm import tqdm

from tcsa_uda.data.contract import (
    DATASET_FILE,
    SPLITS,
    CaseSpec,
    DatasetSpec,
    Problem,
    parse_dataset,
    read_dataset_json,
)
from tcsa_uda.data.io import Volume, load_nifti
from tcsa_uda.errors import DatasetError, MissingPathError, TcsaUdaError

AFFINE_ATOL = 1e-3
"""Largest absolute difference (mm) allowed between an image's and its label's affine entries."""

_MAX_LISTED = 10  # values listed in one message before "..."


@dataclass(frozen=True)
class _Target:
    """One case to check on disk, with the domain it belongs to."""

    domain: str
    case: CaseSpec
    channel: int | None


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_dataset`.

    Attributes:
        folder: the dataset folder that was checked.
        problems: everything that must be fixed; empty when the dataset is usable.
        warnings: things that are ignored or suspicious but not fatal (e.g. unknown keys).
        spec: the parsed dataset, or None when ``dataset.json`` has structural problems (it is
            set when only file problems were found, so callers can still inspect the cases).
    """

    folder: Path
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    spec: DatasetSpec | None = None

    @property
    def ok(self) -> bool:
        """True when no problem was found (warnings allowed)."""
        return not self.problems and self.spec is not None

    def format(self) -> str:
        """Human-readable report: the problems, or a summary of the dataset, then the warnings."""
        lines: list[str] = []
        if self.ok and self.spec is not None:
            lines.extend(_summary_lines(self.spec))
        else:
            lines.append(f"{self.folder}: {len(self.problems)} problem(s) found:")
            lines.extend(f"  - {p}" for p in self.problems)
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines.extend(f"  - {w}" for w in self.warnings)
        return "\n".join(lines)

    def raise_for_problems(self) -> DatasetSpec:
        """Return the spec when the dataset is usable.

        Raises:
            DatasetError: listing every problem found.
        """
        if not self.ok or self.spec is None:
            raise DatasetError(self.format())
        return self.spec


def _summary_lines(spec: DatasetSpec) -> list[str]:
    lines = [f"{spec.root / DATASET_FILE}: OK, dataset {spec.name!r}"]
    classes = ", ".join(f"{i} {name}" for i, name in enumerate(spec.class_names))
    lines.append(f"classes ({spec.num_classes}): {classes}")
    for dname, dom in spec.domains.items():
        per_split = ", ".join(f"{s} {len(dom.select(s))}" for s in SPLITS)
        labelled = len(dom.select(labelled=True))
        channel = "" if dom.channel is None else f", channel {dom.channel}"
        lines.append(
            f"domain {dname} ({dom.modality}{channel}): {len(dom.cases)} cases ({per_split}); "
            f"labelled {labelled}/{len(dom.cases)}"
        )
    return lines


def _short(values: list[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:_MAX_LISTED])
    return f"[{shown}{', ...' if len(values) > _MAX_LISTED else ''}]"


def _strip_path(message: str, path: Path) -> str:
    """Drop the ``path: `` prefix of an error message (the Problem already names the file)."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _lenient_targets(data: Any) -> tuple[list[_Target], set[int] | None]:
    """Cases and label ids that are usable in a ``dataset.json`` that failed structural checks.

    The structural problems themselves are reported by ``parse_dataset``; this only decides
    which files can still be checked so that one run lists file problems too.
    """
    targets: list[_Target] = []
    if not isinstance(data, Mapping):
        return targets, None
    labels = data.get("labels")
    declared: set[int] | None = None
    if isinstance(labels, Mapping):
        declared = {v for v in labels.values() if isinstance(v, int) and not isinstance(v, bool)} or None
    domains = data.get("domains")
    if not isinstance(domains, Mapping):
        return targets, declared
    for dname, draw in domains.items():
        if not isinstance(draw, Mapping) or not isinstance(draw.get("cases"), list):
            continue
        channel = draw.get("channel")
        valid_channel = isinstance(channel, int) and not isinstance(channel, bool) and channel >= 0
        usable_channel = channel if valid_channel else None
        for i, raw in enumerate(draw["cases"]):
            if not isinstance(raw, Mapping):
                continue
            cid, image, label = raw.get("id"), raw.get("image"), raw.get("label")
            if not isinstance(image, str) or not image:
                continue
            case = CaseSpec(
                id=cid if isinstance(cid, str) and cid else f"cases[{i}]",
                image=image,
                split=str(raw.get("split")),
                label=label if isinstance(label, str) and label else None,
            )
            targets.append(_Target(str(dname), case, usable_channel))
    return targets, declared


def _spec_targets(spec: DatasetSpec) -> list[_Target]:
    return [_Target(dname, case, dom.channel) for dname, dom in spec.domains.items() for case in dom.cases]


def _load(path: Path, channel: int | None, what: str, where: str, problems: list[Problem]) -> Volume | None:
    """Load one volume, turning a user-facing error into a :class:`Problem`."""
    try:
        return load_nifti(path, channel=channel, what=what)
    except MissingPathError:
        message = f"expected the {what} file named in dataset.json, found no such file"
        problems.append(Problem(where, str(path), message))
        return None
    except TcsaUdaError as exc:
        problems.append(Problem(where, str(path), _strip_path(str(exc), path)))
        return None


def _header_shape(path: Path) -> tuple[int, ...] | None:
    """The array shape from the header alone (no voxel data read); None when unreadable.

    An unreadable file is reported by the full load that follows.
    """
    try:
        return tuple(int(n) for n in nib.load(str(path)).shape)
    except Exception:  # noqa: BLE001  (nibabel raises many types for missing or corrupt files)
        return None


def _check_image(vol: Volume, where: str, path: Path, problems: list[Problem]) -> None:
    """Images must be real-valued, non-empty and finite."""
    arr = vol.array
    if arr.dtype.kind not in "biuf":
        problems.append(Problem(where, str(path), f"expected real-valued intensities, found dtype {arr.dtype}"))
        return
    if arr.size == 0:
        problems.append(Problem(where, str(path), f"expected a non-empty image, found shape {arr.shape}"))
        return
    if arr.dtype.kind == "f":
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(np.isinf(arr).sum())
        if n_nan or n_inf:
            problems.append(
                Problem(where, str(path), f"expected finite intensities, found {n_nan} NaN and {n_inf} inf voxel(s)")
            )


def _check_label(
    lab: Volume,
    img: Volume | None,
    declared: set[int] | None,
    where: str,
    path: Path,
    problems: list[Problem],
    affine_atol: float,
) -> None:
    """A label map must match its image's grid and hold only declared integer ids."""
    arr = lab.array
    if img is not None:
        if arr.shape != img.array.shape:
            message = f"expected the label shape to equal the image shape {img.array.shape}, found {arr.shape}"
            problems.append(Problem(where, str(path), message))
        diff = float(np.abs(lab.affine - img.affine).max())
        if diff > affine_atol:
            problems.append(
                Problem(
                    where,
                    str(path),
                    f"expected the label affine to equal the image affine within {affine_atol} "
                    f"(largest difference found: {diff:.6g}); image affine {img.affine.round(4).tolist()}, "
                    f"label affine {lab.affine.round(4).tolist()}",
                )
            )
    if arr.dtype.kind not in "biuf":
        problems.append(Problem(where, str(path), f"expected an integer label map, found dtype {arr.dtype}"))
        return
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            examples = [float(v) for v in np.unique(arr[bad])[: _MAX_LISTED + 1]]
            problems.append(
                Problem(
                    where,
                    str(path),
                    f"expected integer label values, found {int(bad.sum())} non-integer voxel(s), "
                    f"e.g. {_short(examples)}",
                )
            )
            return
    if declared is None:
        return
    values = {int(v) for v in np.unique(arr)}
    undeclared = sorted(values - declared)
    if undeclared:
        problems.append(
            Problem(
                where,
                str(path),
                f"expected label values among the declared ids {sorted(declared)}, found undeclared value(s) "
                f"{_short(undeclared)} (map raw codes to consecutive ids when converting)",
            )
        )


def _check_target(
    target: _Target,
    root: Path,
    declared: set[int] | None,
    problems: list[Problem],
    affine_atol: float,
) -> None:
    case = target.case
    where = f"{target.domain}/{case.id}"
    image_path = case.image_path(root)
    img = _load(image_path, target.channel, "image", where, problems)
    if img is not None:
        _check_image(img, where, image_path, problems)
    label_path = case.label_path(root)
    if label_path is None:
        return
    # Label maps are single-volume: ``channel`` selects an image sequence, never a label.
    shape = _header_shape(label_path)
    if shape is not None and len(shape) == 4 and shape[3] > 1:
        message = f"expected a 3D label map ('channel' applies to images only), found a 4D file of shape {shape}"
        problems.append(Problem(where, str(label_path), message))
        return
    lab = _load(label_path, None, "label", where, problems)
    if lab is not None:
        _check_label(lab, img, declared, where, label_path, problems, affine_atol)


def _duplicate_image_warnings(targets: list[_Target], file: str) -> list[str]:
    """Warn when two cases of one domain point to the same image (e.g. train and test)."""
    warns: list[str] = []
    by_domain: dict[str, Counter[str]] = {}
    for t in targets:
        by_domain.setdefault(t.domain, Counter())[t.case.image] += 1
    for dname, counts in by_domain.items():
        for image, n in counts.items():
            if n > 1:
                warns.append(f"{file} [{dname}]: image {image!r} is used by {n} cases of the domain")
    return warns


def verify_dataset(
    folder: str | Path,
    progress: bool = False,
    *,
    affine_atol: float = AFFINE_ATOL,
) -> VerifyReport:
    """Check a dataset folder and report every problem found.

    Args:
        folder: the dataset folder (or the path of its ``dataset.json``).
        progress: show a progress bar over the cases (on stderr).
        affine_atol: largest absolute difference allowed between image and label affine entries.

    Returns:
        The report; ``report.ok`` is True when the dataset can be used.
    """
    folder = Path(folder)
    report = VerifyReport(folder=folder)
    try:
        path, data = read_dataset_json(folder)
    except TcsaUdaError as exc:
        json_path = folder / DATASET_FILE if folder.is_dir() else folder
        report.problems.append(Problem("dataset", str(json_path), _strip_path(str(exc), json_path)))
        return report
    root = path.parent
    report.folder = root
    spec, problems, warns = parse_dataset(data, root, str(path))
    report.problems.extend(problems)
    report.warnings.extend(warns)
    if spec is not None:
        targets, declared = _spec_targets(spec), set(spec.labels.values())
    else:
        targets, declared = _lenient_targets(data)
    report.warnings.extend(_duplicate_image_warnings(targets, str(path)))
    file_problems: list[Problem] = []
    for target in tqdm(targets, desc="verify", unit="case", disable=not progress):
        _check_target(target, root, declared, file_problems, affine_atol)
    report.problems.extend(file_problems)
    report.spec = spec
    return report
