"""Check a dataset folder completely before any training (``tcsa-uda verify DATASET``).

The structure of ``dataset.json`` is checked by :func:`tcsa_uda.data.contract.parse_dataset`;
this module adds the checks that need the files: every image and label path stays inside the
dataset folder (``..`` and symlinks resolved), exists and loads as a 3D volume within the memory
budget (a 4D file needs the domain's ``channel``), image and label agree in shape and affine
(:func:`grid_problems`), images hold only finite values, and label maps hold only integer values
among the declared ids.

One code path: :func:`verify_case` checks one case and returns its loaded volumes, so a command
that reads the volumes anyway (``prepare``) runs exactly the checks of ``verify`` without
reading the files twice; :func:`verified_dataset` runs the whole verification and returns the
dataset or raises with every problem.

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
    path_outside_problem,
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
        img = nib.load(str(path))
        return tuple(int(n) for n in getattr(img, "shape", ()))  # every readable volume format has a shape
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


def grid_problems(
    reference: Volume,
    other: Volume,
    *,
    what: str = "label",
    reference_what: str = "image",
    atol: float = AFFINE_ATOL,
) -> list[str]:
    """Why ``other`` does not lie on the voxel grid of ``reference`` (empty when it does).

    The grid is the array shape and the (4, 4) voxel-to-world affine; an affine that is flipped,
    permuted or shifted by more than ``atol`` (mm) in any entry is a different grid, even when the
    arrays have the same shape. Used for an image and its label (``verify``, ``prepare``) and for
    a prediction and its ground truth.

    Args:
        reference: the volume whose grid is the reference (e.g. the image).
        other: the volume checked against it (e.g. the label).
        what: name of ``other`` in messages.
        reference_what: name of ``reference`` in messages.
        atol: largest absolute difference allowed between affine entries.

    Returns:
        One message per mismatch (shape, affine), each naming the expected and found values.
    """
    out: list[str] = []
    if other.array.shape != reference.array.shape:
        out.append(
            f"expected the {what} shape to equal the {reference_what} shape {reference.array.shape}, "
            f"found {other.array.shape}"
        )
    diff = float(np.abs(np.asarray(other.affine) - np.asarray(reference.affine)).max())
    if not np.isfinite(diff) or diff > atol:
        out.append(
            f"expected the {what} affine to equal the {reference_what} affine within {atol} "
            f"(largest difference found: {diff:.6g}); {reference_what} affine "
            f"{np.asarray(reference.affine).round(4).tolist()}, "
            f"{what} affine {np.asarray(other.affine).round(4).tolist()}"
        )
    return out


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
        problems.extend(Problem(where, str(path), m) for m in grid_problems(img, lab, atol=affine_atol))
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


@dataclass
class CaseCheck:
    """The outcome of :func:`verify_case` for one case.

    Attributes:
        where: ``domain/case id`` (as in problems).
        problems: everything wrong with the case's files; empty when usable.
        image: the loaded image (None when it could not be loaded).
        label: the loaded label map (None for an unlabelled case or when it could not be loaded).
    """

    where: str
    problems: list[Problem] = field(default_factory=list)
    image: Volume | None = None
    label: Volume | None = None

    @property
    def ok(self) -> bool:
        """True when no problem was found and the image is loaded."""
        return not self.problems and self.image is not None

    def raise_for_problems(self) -> tuple[Volume, Volume | None]:
        """``(image, label)`` when the case is usable.

        Raises:
            DatasetError: the problem of the case on one line, or every problem (one line each).
        """
        if not self.ok or self.image is None:
            if len(self.problems) == 1:
                raise DatasetError(f"{self.problems[0]}; run `tcsa-uda verify` on the dataset to list every problem.")
            lines = "\n".join(f"  - {p}" for p in self.problems)
            raise DatasetError(f"[{self.where}] {len(self.problems)} problem(s) found:\n{lines}")
        return self.image, self.label


def _inside(root: Path, relative: str, key: str, where: str, problems: list[Problem]) -> Path | None:
    """The path of ``relative`` when it stays inside ``root``; else None and a problem."""
    problem = path_outside_problem(root, relative, key)
    if problem is not None:
        problems.append(Problem(where, str(root / relative), problem))
        return None
    return root / relative


def _verify_case(
    root: Path,
    domain: str,
    case: CaseSpec,
    channel: int | None,
    declared: set[int] | None,
    affine_atol: float,
) -> CaseCheck:
    check = CaseCheck(where=f"{domain}/{case.id}")
    where, problems = check.where, check.problems
    image_path = _inside(root, case.image, "image", where, problems)
    if image_path is not None:
        check.image = _load(image_path, channel, "image", where, problems)
        if check.image is not None:
            _check_image(check.image, where, image_path, problems)
    if case.label is None:
        return check
    label_path = _inside(root, case.label, "label", where, problems)
    if label_path is None:
        return check
    # Label maps are single-volume: ``channel`` selects an image sequence, never a label.
    shape = _header_shape(label_path)
    if shape is not None and len(shape) == 4 and shape[3] > 1:
        message = f"expected a 3D label map ('channel' applies to images only), found a 4D file of shape {shape}"
        problems.append(Problem(where, str(label_path), message))
        return check
    check.label = _load(label_path, None, "label", where, problems)
    if check.label is not None:
        _check_label(check.label, check.image, declared, where, label_path, problems, affine_atol)
    return check


def verify_case(spec: DatasetSpec, domain: str, case: CaseSpec, *, affine_atol: float = AFFINE_ATOL) -> CaseCheck:
    """Run every file check of ``verify`` on one case and keep the volumes it loaded.

    The checks are those of :func:`verify_dataset` (one code path): paths inside the dataset
    folder, files readable within the memory budget, 3D, image finite, label on the image's grid
    (:func:`grid_problems`) with declared integer ids.

    Args:
        spec: the parsed dataset (gives the folder, the domain's channel and the label ids).
        domain: the case's domain name.
        case: one case of that domain.
        affine_atol: largest absolute difference allowed between image and label affine entries.

    Returns:
        The :class:`CaseCheck`; ``check.raise_for_problems()`` gives ``(image, label)``.

    Raises:
        DatasetError: ``domain`` is not a domain of ``spec``.
    """
    dom = spec.domain(domain)
    return _verify_case(spec.root, domain, case, dom.channel, set(spec.labels.values()), affine_atol)


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
    declared: set[int] | None
    if spec is not None:
        targets, declared = _spec_targets(spec), set(spec.labels.values())
    else:
        targets, declared = _lenient_targets(data)
    report.warnings.extend(_duplicate_image_warnings(targets, str(path)))
    for target in tqdm(targets, desc="verify", unit="case", disable=not progress):
        check = _verify_case(root, target.domain, target.case, target.channel, declared, affine_atol)
        report.problems.extend(check.problems)
    report.spec = spec
    return report


def verified_dataset(folder: str | Path, progress: bool = False, *, affine_atol: float = AFFINE_ATOL) -> DatasetSpec:
    """The dataset of ``folder`` after the full verification of ``tcsa-uda verify``.

    Raises:
        DatasetError: listing every problem found (structure and files), as ``verify`` prints them.
    """
    return verify_dataset(folder, progress, affine_atol=affine_atol).raise_for_problems()
