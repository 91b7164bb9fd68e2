"""The dataset contract: a folder with a ``dataset.json`` (see docs/dataset_format.md).

``dataset.json`` names the classes (``labels``: class name -> consecutive id from 0 =
background), optional long ``class_descriptions`` used in text prompts, and the ``domains``
(modalities), each with a ``modality`` phrase and a list of cases. A case has an ``id``, an
``image`` path, an optional ``label`` path (target-domain images may be unlabelled) and a
``split`` in train / val / test. All paths are relative to the dataset folder and must stay
inside it, symlinks included (:func:`path_outside_problem`). Case ids and domain names name output
files and folders, so they must be unique ignoring letter case (two ids that differ only in case
collide on case-insensitive file systems).

:func:`parse_dataset` checks the structure only (keys, types, ids) and returns every problem it
finds; :func:`load_dataset` raises one :class:`DatasetError` listing them. File contents are
checked by :mod:`tcsa_uda.data.verify`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcsa_uda.atomic import atomic_write_json
from tcsa_uda.errors import DatasetError, MissingPathError
from tcsa_uda.paths import data_path_hint, resolve_data_path

DATASET_FILE = "dataset.json"
SPLITS: tuple[str, ...] = ("train", "val", "test")
TOP_KEYS = {"name", "labels", "class_descriptions", "domains", "description", "reference", "licence", "license"}
DOMAIN_KEYS = {"modality", "cases", "channel", "intensity_range", "description"}
CASE_KEYS = {"id", "image", "label", "split"}


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset: where it is, in which file, and what is wrong."""

    where: str
    file: str
    message: str

    def __str__(self) -> str:
        return f"[{self.where}] {self.file}: {self.message}"


@dataclass(frozen=True)
class CaseSpec:
    """One volume of one domain. Paths are relative to the dataset folder."""

    id: str
    image: str
    split: str
    label: str | None = None

    def image_path(self, root: Path) -> Path:
        return root / self.image

    def label_path(self, root: Path) -> Path | None:
        return None if self.label is None else root / self.label


@dataclass(frozen=True)
class DomainSpec:
    """One imaging modality (domain): a modality phrase for prompts and its cases.

    ``channel`` selects one volume of a 4D image (e.g. one sequence of a multi-sequence file).
    ``intensity_range`` is the ``(lo, hi)`` that ``prepare --normalization fixed`` maps to
    [-1, 1] for this domain (e.g. the statistics of the SIFA release), or None.
    """

    name: str
    modality: str
    cases: tuple[CaseSpec, ...]
    channel: int | None = None
    intensity_range: tuple[float, float] | None = None

    def select(self, split: str | None = None, labelled: bool | None = None) -> list[CaseSpec]:
        """Cases of ``split`` (all when None), optionally only (un)labelled ones."""
        out = [c for c in self.cases if split is None or c.split == split]
        if labelled is not None:
            out = [c for c in out if (c.label is not None) == labelled]
        return out


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``dataset.json``; ``root`` is the folder that holds it."""

    name: str
    labels: dict[str, int]
    domains: dict[str, DomainSpec]
    root: Path
    class_descriptions: dict[str, str] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        """Class names ordered by id (index 0 is background)."""
        return [name for name, _ in sorted(self.labels.items(), key=lambda kv: kv[1])]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def domain(self, name: str) -> DomainSpec:
        if name not in self.domains:
            raise DatasetError(
                f"{self.root / DATASET_FILE}: no domain {name!r}; the dataset has {', '.join(self.domains)}."
            )
        return self.domains[name]

    def description(self, class_name: str) -> str:
        """The long description of a class, or its name when none is given."""
        return self.class_descriptions.get(class_name, class_name)


def _check_labels(labels: Any, file: str, problems: list[Problem]) -> dict[str, int]:
    if not isinstance(labels, Mapping) or not labels:
        problems.append(Problem("labels", file, f"expected a non-empty mapping of class name -> id, found {labels!r}"))
        return {}
    out: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(Problem(f"labels.{name}", file, f"expected an integer id, found {value!r}"))
            continue
        out[str(name)] = value
    ids = sorted(out.values())
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        problems.append(Problem("labels", file, f"expected distinct ids, found ids used twice: {dup}"))
    elif ids and ids != list(range(len(ids))):
        problems.append(
            Problem("labels", file, f"expected consecutive ids 0..{len(ids) - 1} (0 = background), found {ids}")
        )
    if out and 0 not in out.values():
        problems.append(Problem("labels", file, "expected id 0 for the background class, found none"))
    return out


def _check_case(
    raw: Any, domain: str, index: int, file: str, problems: list[Problem], warns: list[str]
) -> CaseSpec | None:
    where = f"{domain}/cases[{index}]"
    if not isinstance(raw, Mapping):
        problems.append(Problem(where, file, f"expected a mapping with id, image, split, found {raw!r}"))
        return None
    cid = raw.get("id")
    if isinstance(cid, str) and cid:
        where = f"{domain}/{cid}"
    else:
        problems.append(Problem(where, file, f"expected a non-empty string 'id', found {cid!r}"))
    image = raw.get("image")
    if not isinstance(image, str) or not image:
        problems.append(Problem(where, file, f"expected a relative path string 'image', found {image!r}"))
    label = raw.get("label")
    if label is not None and (not isinstance(label, str) or not label):
        problems.append(
            Problem(where, file, f"expected 'label' to be a relative path string or absent, found {label!r}")
        )
    split = raw.get("split")
    if split not in SPLITS:
        problems.append(Problem(where, file, f"expected 'split' in {list(SPLITS)}, found {split!r}"))
    for key in ("image", "label"):
        value = raw.get(key)
        if isinstance(value, str) and Path(value).is_absolute():
            problems.append(
                Problem(where, file, f"expected '{key}' relative to the dataset folder, found absolute path {value!r}")
            )
    unknown = sorted(set(raw) - CASE_KEYS)
    if unknown:
        warns.append(f"{file} [{where}]: unknown key(s) {unknown} ignored (known: {sorted(CASE_KEYS)})")
    if not (isinstance(cid, str) and cid and isinstance(image, str) and image and split in SPLITS):
        return None
    if label is not None and not isinstance(label, str):
        return None
    return CaseSpec(id=cid, image=image, split=split, label=label or None)


def parse_dataset(
    data: Any, root: Path, file: str | None = None
) -> tuple[DatasetSpec | None, list[Problem], list[str]]:
    """Check the structure of a ``dataset.json`` mapping.

    Args:
        data: the decoded JSON.
        root: the dataset folder (paths in ``data`` are relative to it).
        file: name used in messages (default ``root/dataset.json``).

    Returns:
        ``(spec, problems, warnings)``; ``spec`` is None when the structure is unusable.
    """
    file = file or str(root / DATASET_FILE)
    problems: list[Problem] = []
    warns: list[str] = []
    if not isinstance(data, Mapping):
        return (
            None,
            [Problem("dataset", file, f"expected a JSON object at the top level, found {type(data).__name__}")],
            warns,
        )
    for key in ("name", "labels", "domains"):
        if key not in data:
            problems.append(Problem(key, file, f"required key '{key}' is missing"))
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        warns.append(f"{file}: unknown top-level key(s) {unknown} ignored (known: {sorted(TOP_KEYS)})")
    name = data.get("name", "")
    if "name" in data and (not isinstance(name, str) or not name):
        problems.append(Problem("name", file, f"expected a non-empty string, found {name!r}"))
    labels = _check_labels(data.get("labels"), file, problems) if "labels" in data else {}
    descriptions_raw = data.get("class_descriptions")
    if descriptions_raw is None:  # absent or null; an empty list or string is a mistake
        descriptions_raw = {}
    descriptions: dict[str, str] = {}
    if not isinstance(descriptions_raw, Mapping):
        problems.append(
            Problem("class_descriptions", file, f"expected a mapping class name -> text, found {descriptions_raw!r}")
        )
    else:
        for cname, text in descriptions_raw.items():
            if labels and cname not in labels:
                problems.append(
                    Problem(
                        f"class_descriptions.{cname}",
                        file,
                        f"expected a class declared in 'labels' ({', '.join(labels)}), found {cname!r}",
                    )
                )
            elif not isinstance(text, str) or not text.strip():
                problems.append(
                    Problem(f"class_descriptions.{cname}", file, f"expected a non-empty string, found {text!r}")
                )
            else:
                descriptions[cname] = text
    domains: dict[str, DomainSpec] = {}
    raw_domains = data.get("domains")
    if "domains" in data:
        if not isinstance(raw_domains, Mapping) or not raw_domains:
            problems.append(
                Problem(
                    "domains", file, f"expected a non-empty mapping of domain name -> domain, found {raw_domains!r}"
                )
            )
        else:
            folded: dict[str, str] = {}
            for dname, draw in raw_domains.items():
                first = folded.setdefault(str(dname).casefold(), str(dname))
                if first != str(dname):
                    problems.append(
                        Problem(
                            str(dname),
                            file,
                            "expected domain names that differ in more than letter case (they name folders, which "
                            f"collide on case-insensitive file systems), found {first!r} and {str(dname)!r}",
                        )
                    )
                spec = _check_domain(str(dname), draw, file, problems, warns)
                if spec is not None:
                    domains[str(dname)] = spec
    if problems:
        return None, problems, warns
    return (
        DatasetSpec(name=name, labels=labels, domains=domains, root=root, class_descriptions=descriptions),
        problems,
        warns,
    )


def _check_domain(dname: str, draw: Any, file: str, problems: list[Problem], warns: list[str]) -> DomainSpec | None:
    if not isinstance(draw, Mapping):
        problems.append(Problem(dname, file, f"expected a mapping with 'modality' and 'cases', found {draw!r}"))
        return None
    modality = draw.get("modality")
    if not isinstance(modality, str) or not modality.strip():
        problems.append(
            Problem(
                dname, file, f"expected a non-empty string 'modality' (e.g. 'computed tomography'), found {modality!r}"
            )
        )
    channel = draw.get("channel")
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int) or channel < 0):
        problems.append(
            Problem(dname, file, f"expected 'channel' to be a non-negative integer or absent, found {channel!r}")
        )
    intensity_range = _check_intensity_range(draw.get("intensity_range"), dname, file, problems)
    unknown = sorted(set(draw) - DOMAIN_KEYS)
    if unknown:
        warns.append(f"{file} [{dname}]: unknown key(s) {unknown} ignored (known: {sorted(DOMAIN_KEYS)})")
    raw_cases = draw.get("cases")
    if not isinstance(raw_cases, list):
        problems.append(Problem(dname, file, f"expected a list 'cases', found {raw_cases!r}"))
        return None
    if not raw_cases:
        problems.append(Problem(dname, file, "expected at least one case, found an empty 'cases' list"))
    cases: list[CaseSpec] = []
    seen: dict[str, str] = {}  # case-folded id -> id as first spelled
    for i, raw in enumerate(raw_cases):
        case = _check_case(raw, dname, i, file, problems, warns)
        if case is None:
            continue
        first = seen.get(case.id.casefold())
        if first == case.id:
            problems.append(
                Problem(
                    f"{dname}/{case.id}",
                    file,
                    f"expected unique case ids within domain {dname!r}, found {case.id!r} twice",
                )
            )
        elif first is not None:
            problems.append(
                Problem(
                    f"{dname}/{case.id}",
                    file,
                    f"expected case ids that differ in more than letter case within domain {dname!r} (ids name "
                    f"files, which collide on case-insensitive file systems), found {first!r} and {case.id!r}",
                )
            )
        seen.setdefault(case.id.casefold(), case.id)
        cases.append(case)
    if not isinstance(modality, str) or not modality.strip():
        return None
    return DomainSpec(
        name=dname,
        modality=modality,
        cases=tuple(cases),
        channel=channel if isinstance(channel, int) else None,
        intensity_range=intensity_range,
    )


def _check_intensity_range(raw: Any, dname: str, file: str, problems: list[Problem]) -> tuple[float, float] | None:
    """``intensity_range`` as ``(lo, hi)``: two finite numbers with lo < hi, or None when absent."""
    if raw is None:
        return None
    numbers = (
        isinstance(raw, list)
        and len(raw) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)
    )
    if not numbers or not all(math.isfinite(float(v)) for v in raw) or not float(raw[0]) < float(raw[1]):
        problems.append(
            Problem(
                dname, file, f"expected 'intensity_range' to be [lo, hi] with finite lo < hi or absent, found {raw!r}"
            )
        )
        return None
    return float(raw[0]), float(raw[1])


def path_outside_problem(root: Path, relative: str, key: str = "image") -> str | None:
    """Why ``root/relative`` leads out of the dataset folder after ``..`` and symlinks, or None.

    Args:
        root: the dataset folder (it may itself be a symlink).
        relative: a path of ``dataset.json`` (relative to ``root``).
        key: its key in messages (``image`` or ``label``).

    Returns:
        None when the resolved path stays inside the resolved dataset folder; else a message
        naming the path, where it leads and what to do.
    """
    base = Path(root).resolve()
    target = (Path(root) / relative).resolve()
    if target == base or target.is_relative_to(base):
        return None
    if Path(relative).is_absolute():
        how = "as an absolute path"
    elif ".." in Path(relative).parts:
        how = "through '..'"
    else:
        how = "through a symlink"
    return (
        f"expected '{key}' to stay inside the dataset folder {base}, found {relative!r}, which leads {how} to "
        f"{target}; copy or move the file into the dataset folder"
    )


def read_dataset_json(folder: str | Path) -> tuple[Path, Any]:
    """Read ``folder/dataset.json`` (or a path to the file itself) and decode it.

    Raises:
        MissingPathError: the folder or file does not exist.
        DatasetError: the file is not UTF-8, not valid JSON (the message gives line and column),
            or repeats a key within one object.
    """
    path = resolve_data_path(folder)
    if path.is_dir():
        path = path / DATASET_FILE
    if not path.is_file():
        raise MissingPathError(
            f"{path}: no {DATASET_FILE} found (expected a dataset folder, see docs/dataset_format.md; "
            f"{data_path_hint()})."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: expected UTF-8 text, found an undecodable byte at offset {exc.start}.") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the file ({exc.strerror or exc}).") from exc
    try:
        return path, json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except _DuplicateKeyError as exc:
        raise DatasetError(
            f"{path}: expected unique keys in each JSON object, found duplicate key {exc.key!r} "
            "(JSON readers silently keep only the last value)."
        ) from exc


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that rejects a key given twice in one object."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


def load_dataset(folder: str | Path) -> DatasetSpec:
    """Load and structurally validate a dataset; warnings for unknown keys are emitted.

    Raises:
        DatasetError: listing every structural problem found.
    """
    path, data = read_dataset_json(folder)
    spec, problems, warns = parse_dataset(data, path.parent, str(path))
    for w in warns:
        warnings.warn(w, UserWarning, stacklevel=2)
    if problems or spec is None:
        raise DatasetError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    return spec


def dataset_to_dict(spec: DatasetSpec) -> dict[str, Any]:
    """The ``dataset.json`` mapping of ``spec`` (inverse of :func:`parse_dataset`)."""
    out: dict[str, Any] = {"name": spec.name, "labels": dict(spec.labels)}
    if spec.class_descriptions:
        out["class_descriptions"] = dict(spec.class_descriptions)
    out["domains"] = {}
    for dname, dom in spec.domains.items():
        d: dict[str, Any] = {"modality": dom.modality}
        if dom.channel is not None:
            d["channel"] = dom.channel
        if dom.intensity_range is not None:
            d["intensity_range"] = list(dom.intensity_range)
        d["cases"] = [
            {"id": c.id, "image": c.image, **({"label": c.label} if c.label else {}), "split": c.split}
            for c in dom.cases
        ]
        out["domains"][dname] = d
    return out


def write_dataset_json(spec: DatasetSpec) -> Path:
    """Write ``spec`` to ``spec.root/dataset.json`` atomically and return the path."""
    path = spec.root / DATASET_FILE
    atomic_write_json(path, dataset_to_dict(spec))
    return path
