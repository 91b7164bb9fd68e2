"""``tcsa-uda prepare``: turn the volumes of every domain into 2D training slices.

Each volume is normalised on its own (:mod:`tcsa_uda.data.normalize`; ``--normalization``
``percentile_zscore`` by default, ``fixed`` per-domain ranges, or ``none``), cut into slices along an
anatomical axis found from its affine (axial = the S/I array axis, coronal = A/P, sagittal = L/R;
an integer picks the array axis directly), padded to a centred square with its darkest value
(-1 after normalisation; background 0 for labels) and resized to ``size x size`` (images
bilinear, labels nearest). The result of one case is one memory-mappable ``.npy`` per volume::

    OUT/index.json                  every trusted case: files, geometry, affine, normalisation
    OUT/prepare.yaml                the resolved settings (PrepareConfig)
    OUT/<domain>/<case>_img.npy     float32 (S, size, size), values in [-1, 1] (``fixed``: lo..hi -> -1..1)
    OUT/<domain>/<case>_seg.npy     uint8   (S, size, size), only for labelled cases

Every case is checked by :func:`tcsa_uda.data.verify.verify_case`, the code path of ``tcsa-uda
verify`` (paths inside the dataset folder, readable within the memory budget, label on the
image's grid with declared integer ids), before it is prepared; its volumes are read once.

The output folder must be empty, absent, or a previous ``prepare`` of the same dataset (its
``index.json`` names the same dataset folder); anything else is refused unless ``overwrite``
(then no entry of the old index is reused).

The recorded :class:`~tcsa_uda.data.geometry.SliceGeometry` maps a predicted slice stack back onto
the original voxel grid, so evaluation runs on the original volumes. The geometry lives in
:mod:`tcsa_uda.data.geometry`, the reader of the index in :mod:`tcsa_uda.data.prepared`; this module
is the writer.

Idempotency: each index entry records the settings it was made with and the size and
modification time of its source files. A second run reuses every case whose entry matches and
whose files are present; a case whose source or settings changed is prepared again (its files
are replaced atomically); cases no longer in the dataset are dropped from the index (their old
files are left on disk but no longer trusted). Only files listed in ``index.json`` are trusted:
it is written after the files it lists (and after each newly prepared case, marked incomplete
until the run ends), so an interrupted run leaves at most stray ``.*.tmp-*`` files that nothing
reads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from tcsa_uda.atomic import atomic_write_json, atomic_write_with, make_dir
from tcsa_uda.config import save_config, to_dict
from tcsa_uda.data.contract import CaseSpec, DatasetSpec, DomainSpec, load_dataset
from tcsa_uda.data.geometry import (
    image_to_slices,
    label_to_slices,
    make_geometry,
    parse_axis,
    resolve_axis,
)
from tcsa_uda.data.io import Volume
from tcsa_uda.data.normalize import (
    FIXED,
    FIXED_PRESETS,
    NORMALIZATIONS,
    NormalizationSpec,
    check_percentiles,
    check_range,
    normalize_with,
)
from tcsa_uda.data.prepared import (
    CONFIG_FILE,
    FORMAT_VERSION,
    IMAGE_SUFFIX,
    INDEX_FILE,
    LABEL_SUFFIX,
    PreparedIndex,
    _read_index,
    load_prepared,
)
from tcsa_uda.data.verify import verify_case
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError, OutputExistsError

# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class PrepareConfig:
    """The settings of one ``prepare`` run, saved as ``OUT/prepare.yaml``.

    Attributes:
        dataset: the dataset folder (holding ``dataset.json``).
        out: the output folder.
        axis: ``axial``, ``coronal``, ``sagittal`` or an array axis ``0``, ``1``, ``2``.
        size: side of the square output slices in pixels.
        clip_percentiles: (low, high) intensity percentiles each volume is clipped to
            (``percentile_zscore`` only).
        normalization: the intensity map (:class:`~tcsa_uda.data.normalize.NormalizationSpec`).
    """

    dataset: Path
    out: Path
    axis: str = "axial"
    size: int = 256
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    normalization: NormalizationSpec = field(default_factory=NormalizationSpec)

    def __post_init__(self) -> None:
        parse_axis(self.axis)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"size: expected a positive integer (pixels), found {self.size!r}.")
        check_percentiles(self.clip_percentiles)

    def settings(self) -> dict[str, Any]:
        """The settings that determine the content of the prepared files."""
        return {
            "axis": self.axis,
            "size": self.size,
            "clip_percentiles": list(map(float, self.clip_percentiles)),
            "normalization": self.normalization.to_dict(),
        }


def resolve_normalization(
    spec: DatasetSpec,
    method: str | NormalizationSpec = "percentile_zscore",
    fixed_ranges: Mapping[str, tuple[float, float]] | None = None,
    fixed_preset: str | None = None,
) -> NormalizationSpec:
    """The normalisation of a ``prepare`` run on ``spec``.

    Under ``fixed``, each domain's ``(lo, hi)`` comes from ``fixed_ranges``, else from the preset
    ``fixed_preset`` (:data:`~tcsa_uda.data.normalize.FIXED_PRESETS`), else from the domain's
    ``intensity_range`` in ``dataset.json``.

    Raises:
        ConfigError: an unknown method or preset, ranges or a preset given without ``fixed``, a
            range for a domain the dataset lacks, or a domain left without a range.
    """
    if isinstance(method, NormalizationSpec):
        if fixed_ranges or fixed_preset:
            raise ConfigError("normalization: give fixed ranges or a preset, or a NormalizationSpec, not both.")
        return method
    if method not in NORMALIZATIONS:
        raise ConfigError(f"normalization: expected one of {', '.join(map(repr, NORMALIZATIONS))}, found {method!r}.")
    if method != FIXED:
        if fixed_ranges or fixed_preset:
            raise ConfigError(
                f"--fixed-range / --fixed-preset apply to --normalization fixed, not to {method!r}; drop them or use "
                "fixed."
            )
        return NormalizationSpec(method)
    unknown = sorted(set(fixed_ranges or {}) - set(spec.domains))
    if unknown:
        raise ConfigError(
            f"--fixed-range: the dataset {spec.root} has no domain(s) {unknown}; its domains are {list(spec.domains)}."
        )
    preset: Mapping[str, tuple[float, float]] = {}
    if fixed_preset is not None:
        if fixed_preset not in FIXED_PRESETS:
            raise ConfigError(
                f"--fixed-preset: expected one of {', '.join(map(repr, FIXED_PRESETS))}, found {fixed_preset!r}."
            )
        preset = FIXED_PRESETS[fixed_preset]
    ranges: dict[str, tuple[float, float]] = {}
    missing = []
    for dname, dom in spec.domains.items():
        pair = (fixed_ranges or {}).get(dname) or preset.get(dname) or dom.intensity_range
        if pair is None:
            missing.append(dname)
        else:
            ranges[dname] = check_range(pair, f"intensity range of domain {dname!r}")
    if missing:
        raise ConfigError(
            f"--normalization fixed: no intensity range for domain(s) {missing} of {spec.root}; pass --fixed-range "
            f"DOMAIN=LO,HI, a --fixed-preset ({', '.join(FIXED_PRESETS)}) or set 'intensity_range' in dataset.json."
        )
    return NormalizationSpec.fixed(ranges)


# --------------------------------------------------------------------------------------------
# Preparing


def prepare_dataset(
    dataset: str | Path,
    out: str | Path,
    axis: str = "axial",
    size: int = 256,
    clip_percentiles: tuple[float, float] = (0.5, 99.5),
    progress: bool = True,
    normalization: str | NormalizationSpec = "percentile_zscore",
    fixed_ranges: Mapping[str, tuple[float, float]] | None = None,
    fixed_preset: str | None = None,
    overwrite: bool = False,
) -> PreparedIndex:
    """Prepare the 2D training slices of every case of every domain of ``dataset``.

    Args:
        dataset: dataset folder holding ``dataset.json``.
        out: output folder (created if needed).
        axis: ``axial``, ``coronal``, ``sagittal`` (found from each affine) or ``0``/``1``/``2``.
        size: side of the square slices.
        clip_percentiles: (low, high) percentiles each volume is clipped to before z-scoring.
        progress: show a tqdm progress bar over the cases.
        normalization: ``percentile_zscore``, ``fixed``, ``none`` or a complete spec.
        fixed_ranges: ``fixed``: domain -> (lo, hi), overriding the preset and dataset.json.
        fixed_preset: ``fixed``: a named set of ranges (``sifa``).
        overwrite: write into a non-empty folder that is not a previous prepare of this dataset.

    Returns:
        The index of the prepared folder (as :func:`load_prepared` would read it).

    Raises:
        ConfigError: invalid settings.
        DatasetError, MissingPathError: the dataset or one of its files is invalid (the checks of
            ``tcsa-uda verify``, case by case).
        OutputExistsError: ``out`` is not empty and not a previous prepare of this dataset.
    """
    low, high = check_percentiles(clip_percentiles)
    # The canonical spelling ("axial", "0") so that equal settings compare equal between runs.
    cfg = PrepareConfig(
        dataset=Path(dataset), out=Path(out), axis=str(parse_axis(axis)), size=size, clip_percentiles=(low, high)
    )
    spec = load_dataset(cfg.dataset)
    cfg = replace(cfg, normalization=resolve_normalization(spec, normalization, fixed_ranges, fixed_preset))
    root = cfg.out
    names = _file_names(spec)
    old_path = root / INDEX_FILE
    same = _check_out_folder(root, spec, overwrite)
    make_dir(root)
    old = _read_index(old_path) if same else None
    header = _index_header(spec, cfg)
    # Label stacks are only valid for the class set they were checked against.
    reuse = old is not None and old.get("labels") == header["labels"]
    old_entries = {(e["domain"], e["id"]): e for e in old["cases"]} if old is not None and reuse else {}
    entries: list[dict[str, Any]] = []
    wrote_partial = False
    todo = [(dname, dom, case) for dname, dom in spec.domains.items() for case in dom.cases]
    bar = tqdm(todo, desc="prepare", unit="case", disable=not progress)
    for dname, dom, case in bar:
        bar.set_postfix_str(f"{dname}/{case.id}", refresh=False)
        settings = {**cfg.settings(), "channel": dom.channel}
        source = _source_record(spec.root, case)
        previous = old_entries.get((dname, case.id))
        if previous is not None and _reusable(root, previous, settings, source):
            entries.append({**previous, "split": case.split})
            continue
        image, label = verify_case(spec, dname, case).raise_for_problems()
        entries.append(
            _prepare_case(
                dom, case, image, label, case.image_path(spec.root), root, names[(dname, case.id)], settings, source
            )
        )
        atomic_write_json(old_path, {**header, "complete": False, "cases": entries})
        wrote_partial = True
    bar.close()

    final = {**header, "complete": True, "cases": entries}
    if _config_text(cfg) != _read_text(root / CONFIG_FILE):
        save_config(cfg, root / CONFIG_FILE)
    if wrote_partial or final != old:
        atomic_write_json(old_path, final)
    return load_prepared(root)


def _check_out_folder(root: Path, spec: DatasetSpec, overwrite: bool) -> bool:
    """Whether ``root`` holds a previous prepare of ``spec`` (whose entries may be reused).

    Raises:
        OutputExistsError: ``root`` is a file, or a non-empty folder that is not a previous
            prepare of this dataset, without ``overwrite``.
    """
    if root.exists() and not root.is_dir():
        raise OutputExistsError(f"prepare --out {root}: expected a folder, found a file.")
    if not root.is_dir() or not any(root.iterdir()):
        return False
    found: str | None = None
    index = _read_index(root / INDEX_FILE) if (root / INDEX_FILE).is_file() else None
    if index is not None and isinstance(index.get("dataset"), dict) and index["dataset"].get("path"):
        found = str(index["dataset"]["path"])
    if found is not None and Path(found) == spec.root.resolve():
        return True
    if overwrite:
        return False
    what = f"a prepare of another dataset ({found})" if found is not None else "not a previous prepare"
    raise OutputExistsError(
        f"prepare --out {root}: the folder is not empty and is {what}, not of {spec.root.resolve()}; choose an "
        "empty folder, or pass --overwrite to write into it anyway."
    )


def _config_text(cfg: PrepareConfig) -> str:
    """The YAML text :func:`save_config` writes for ``cfg``."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _index_header(spec: DatasetSpec, cfg: PrepareConfig) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "dataset": {"name": spec.name, "path": str(spec.root.resolve())},
        "labels": dict(spec.labels),
        "class_names": spec.class_names,
        "class_descriptions": dict(spec.class_descriptions),
        "domains": {d: {"modality": dom.modality, "channel": dom.channel} for d, dom in spec.domains.items()},
        "settings": cfg.settings(),
    }


def _file_names(spec: DatasetSpec) -> dict[tuple[str, str], str]:
    """``(domain, case id) -> "<domain>/<case>"`` file stem, safe on every file system.

    Raises:
        DatasetError: two ids (or domains) of one dataset map to the same file name.
    """
    out: dict[tuple[str, str], str] = {}
    seen: dict[str, tuple[str, str]] = {}
    for dname, dom in spec.domains.items():
        for case in dom.cases:
            stem = f"{_safe(dname)}/{_safe(case.id)}"
            if stem.lower() in seen:
                other = seen[stem.lower()]
                raise DatasetError(
                    f"{spec.root}: cases {other[0]}/{other[1]} and {dname}/{case.id} map to the same prepared file "
                    f"name {stem!r}; make the ids differ in more than letter case and punctuation."
                )
            seen[stem.lower()] = (dname, case.id)
            out[(dname, case.id)] = stem
    return out


def _safe(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return "_" + safe if safe.startswith(".") else safe


def _source_record(root: Path, case: CaseSpec) -> dict[str, Any]:
    """Relative path, size and modification time of a case's files (the reuse fingerprint)."""

    def one(rel: str, what: str) -> dict[str, Any]:
        path = root / rel
        if not path.is_file():
            raise MissingPathError(f"{path}: {what} file of case {case.id!r} named in dataset.json does not exist.")
        st = path.stat()
        return {"path": rel, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}

    return {"image": one(case.image, "image"), "label": None if case.label is None else one(case.label, "label")}


def _reusable(root: Path, entry: dict[str, Any], settings: dict[str, Any], source: dict[str, Any]) -> bool:
    """True when ``entry`` was made from the same files with the same settings and its files are intact."""
    old = entry.get("settings")
    if isinstance(old, dict) and "normalization" not in old:  # prepared before the option: the default
        old = {**old, "normalization": NormalizationSpec().to_dict()}
    if old != settings or entry.get("source") != source:
        return False
    try:
        n, size = int(entry["n_slices"]), int(entry["geometry"]["size"])
        for key in ("image", "label"):
            rel = entry["files"][key]
            if rel is None:
                continue
            arr = np.load(root / rel, mmap_mode="r")
            if arr.shape != (n, size, size):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _prepare_case(
    dom: DomainSpec,
    case: CaseSpec,
    image: Volume,
    label: Volume | None,
    image_path: Path,
    root: Path,
    stem: str,
    settings: dict[str, Any],
    source: dict[str, Any],
) -> dict[str, Any]:
    """Normalise, slice and save one case whose volumes passed :func:`verify_case`; returns its index entry.

    Args:
        dom: the case's domain.
        case: the case.
        image: its (X, Y, Z) image, as loaded by :func:`verify_case`.
        label: its (X, Y, Z) label map on the image's grid with declared ids, or None.
        image_path: the image file (named in messages).
        root: the output folder.
        stem: ``<domain>/<case>`` file stem inside ``root``.
        settings: the case's prepare settings.
        source: the reuse fingerprint of the case's files.
    """
    normalised, record = normalize_with(
        image.array,
        NormalizationSpec.from_dict(settings["normalization"]),
        domain=dom.name,
        percentiles=tuple(settings["clip_percentiles"]),
        what=str(image_path),
    )
    axis = resolve_axis(image.affine, settings["axis"], what=str(image_path))
    geometry = make_geometry(normalised.shape, axis, int(settings["size"]))

    image_rel = stem + IMAGE_SUFFIX
    _save_npy(root / image_rel, image_to_slices(normalised, geometry))
    label_rel: str | None = None
    foreground: list[int] | None = None
    if label is not None:
        stack = label_to_slices(np.asarray(label.array).astype(np.uint8), geometry)
        foreground = [int(i) for i in np.flatnonzero(stack.reshape(stack.shape[0], -1).any(axis=1))]
        label_rel = stem + LABEL_SUFFIX
        _save_npy(root / label_rel, stack)
    return {
        "domain": dom.name,
        "id": case.id,
        "split": case.split,
        "files": {"image": image_rel, "label": label_rel},
        "n_slices": geometry.n_slices,
        "labelled": label_rel is not None,
        "original_shape": list(geometry.original_shape),
        "geometry": geometry.to_dict(),
        "affine": np.asarray(image.affine, dtype=np.float64).tolist(),
        "normalization": record.to_dict(),
        "foreground_slices": foreground,
        "settings": settings,
        "source": source,
    }


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write_with(path, lambda fh: np.save(fh, np.ascontiguousarray(array), allow_pickle=False))
