"""The benchmark suite: which trainings to run and compare, as a typed YAML file.

A suite names **entries** (a training config plus ``key.sub=value`` overrides), **datasets** (a
prepared folder, or the built-in phantom that the bench generates and prepares once),
**directions** (source -> target domain pairs) and **seeds**. The bench runs one cell per
entry x dataset x direction x seed (:meth:`Suite.cells`). The file is loaded with
:func:`tcsa_uda.config.load_config`, so an unknown key is an error that lists the valid keys.

Example (``configs/bench/phantom_cpu.yaml`` is a complete one)::

    name: phantom_cpu
    entries:
      source_only: {config: phantom_mr2ct_source_only.yaml, lower_bound: true}
      tcsa:        {config: phantom_mr2ct.yaml, reference: true}
      no_vl:       {config: phantom_mr2ct.yaml, seeds: [0, 1],
                    overrides: [stages.1.options.vl_source_weight=0, stages.1.options.vl_target_weight=0]}
      oracle:      {config: {MR2CT: oracle_mr2ct.yaml, CT2MR: oracle_ct2mr.yaml}, upper_bound: true}
    datasets:
      phantom: {phantom: {seed: 0, cases: 10, shape: [48, 96, 96], size: 96}}
    directions:
      MR2CT: {source: MR, target: CT}
      CT2MR: {source: CT, target: MR}
    seeds: [0, 1, 2]
    overrides: [device=cpu]

Rules checked when the suite is loaded (each error names the suite file and the key):

* entry, dataset and direction names are file-name safe (``[A-Za-z0-9_.-]``) and a dataset and a
  direction never share a name;
* exactly one entry is the ``reference`` (the paired differences are taken against it); at most
  one is the ``lower_bound`` (e.g. source-only); an ``upper_bound`` entry (e.g. an oracle trained
  with target labels) is never the reference or the lower bound, and tables flag it;
* ``config`` is a path, or a mapping from ``DATASET/DIRECTION``, ``DATASET``, ``DIRECTION`` or
  ``*`` to a path (the most specific key wins); every cell must find a config. A relative path is
  looked up next to the suite file, then among the packaged configs (``tcsa_uda/configs``);
* a dataset has either ``prepared`` or ``phantom``; its ``directions`` (default: all) name
  directions of the suite;
* overrides never set the keys the bench sets for every cell (:data:`BENCH_KEYS`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from tcsa_uda.config import load_config, parse_override
from tcsa_uda.data.phantom import DEFAULT_CASES, DEFAULT_SHAPE
from tcsa_uda.errors import ConfigError, MissingPathError
from tcsa_uda.paths import data_path_hint, resolve_data_path

BENCH_KEYS: tuple[str, ...] = ("data.prepared", "data.source", "data.target", "seed", "num_threads", "progress")
"""Training keys the bench sets for every cell; suites may not override them."""

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_DEFAULT_KEY = "*"


@dataclass
class PhantomData:
    """The built-in phantom, generated (``tcsa-uda phantom``) and prepared (``tcsa-uda prepare``) once.

    Attributes:
        seed: seed of the phantom generator (fixed data across training seeds).
        cases: cases per domain.
        shape: volume shape (D, H, W).
        size: side of the prepared slices in pixels.
        axis: slicing axis given to ``prepare``.
    """

    seed: int = 0
    cases: int = DEFAULT_CASES
    shape: tuple[int, int, int] = DEFAULT_SHAPE
    size: int = 96
    axis: str = "axial"


@dataclass
class SuiteDataset:
    """One dataset of the suite: a prepared folder or a phantom to build.

    Attributes:
        prepared: a folder written by ``tcsa-uda prepare``; relative paths are looked up in the
            current folder, then under ``$TCSA_UDA_DATA`` (as ``train`` does).
        phantom: options of a built-in phantom, built into ``OUT/data/<name>/``.
        directions: names of the suite's directions run on this dataset (default: all).
        overrides: training overrides for every cell on this dataset (e.g. ``model.weights=...``).
    """

    prepared: str | None = None
    phantom: PhantomData | None = None
    directions: list[str] | None = None
    overrides: list[str] = field(default_factory=list)


@dataclass
class SuiteDirection:
    """A source -> target domain pair (domain names of the prepared dataset).

    Attributes:
        source: the labelled source domain.
        target: the unlabelled target domain (evaluated).
    """

    source: str
    target: str


@dataclass
class SuiteEntry:
    """One compared configuration (a method, an ablation, a baseline, an oracle).

    Attributes:
        config: a training config path, or a mapping ``DATASET/DIRECTION`` | ``DATASET`` |
            ``DIRECTION`` | ``*`` -> path.
        overrides: ``key.sub=value`` overrides applied after the suite's and the dataset's.
        label: the row name in the tables (default: the entry name).
        seeds: this entry's training seeds (default: the suite's ``seeds``), e.g. fewer seeds
            for ablation rows than for the main rows.
        reference: the entry every other entry is compared with (exactly one).
        lower_bound: the no-adaptation lower end of "gap closed" (e.g. source-only; at most one).
        upper_bound: an upper bound that uses target labels (e.g. an oracle): flagged in every
            table and never counted as a UDA result.
        group: the entry's group in the results document (``--results``), e.g. ``main``,
            ``ablation``, ``text``; a key of the suite's ``groups`` when the suite has any.
    """

    config: str | dict[str, str]
    overrides: list[str] = field(default_factory=list)
    label: str | None = None
    seeds: list[int] | None = None
    reference: bool = False
    lower_bound: bool = False
    upper_bound: bool = False
    group: str = "main"


@dataclass
class SuiteGroup:
    """A group of entries: one table and one conclusion of the results document.

    Attributes:
        title: the section title (default: the group's name).
        question: the question the group answers, e.g. "Does the text's content matter?"; the
            results document answers it from the confidence intervals of its entries.
    """

    title: str | None = None
    question: str = ""


@dataclass
class EvaluationOptions:
    """How each cell is evaluated (options of ``tcsa-uda evaluate``; None keeps its default).

    Attributes:
        split: the evaluated split of the target domain.
        units: ASSD units, ``mm`` or ``vox``.
        assd_variant: ``pooled`` or ``mean_of_means``.
        empty_policy: ``nan``, ``sifa_mpscl`` or ``adr``.
        parity: ``sifa`` for the literature's conventions.
        flip: horizontal-flip test-time augmentation.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: slices per forward pass.
    """

    split: str = "test"
    units: Literal["mm", "vox"] | None = None
    assd_variant: Literal["pooled", "mean_of_means"] | None = None
    empty_policy: Literal["nan", "sifa_mpscl", "adr"] | None = None
    parity: Literal["sifa"] | None = None
    flip: bool = False
    device: str = "auto"
    batch_size: int = 16

    def cli_args(self) -> list[str]:
        """The corresponding ``tcsa-uda evaluate`` options (without run, dataset, domain and out)."""
        return [*self.result_args(), "--device", self.device, "--batch-size", str(self.batch_size)]

    def result_args(self) -> list[str]:
        """The options that change the numbers (device and batch size do not: no slice is dropped)."""
        args = ["--split", self.split, "--metrics", "all"]
        for flag, value in (
            ("--units", self.units),
            ("--assd-variant", self.assd_variant),
            ("--empty-policy", self.empty_policy),
            ("--parity", self.parity),
        ):
            if value is not None:
                args += [flag, value]
        if self.flip:
            args.append("--flip")
        return args


@dataclass
class StatisticsOptions:
    """The paired difference against the reference entry (:mod:`tcsa_uda.evaluation.stats`).

    Attributes:
        ci: ``bootstrap`` (percentile, the default) or ``t``.
        level: confidence level.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
    """

    ci: Literal["bootstrap", "t"] = "bootstrap"
    level: float = 0.95
    n_boot: int = 10000
    seed: int = 0


@dataclass
class SuiteSpec:
    """The YAML file of a suite (see the module docstring).

    Attributes:
        entries: entry name -> :class:`SuiteEntry`, in table order.
        datasets: dataset name -> :class:`SuiteDataset`.
        directions: direction name -> :class:`SuiteDirection`.
        seeds: training seeds of every entry that does not list its own.
        name: the suite's name (default: the file name).
        description: free text printed at the top of ``bench.md``.
        overrides: training overrides applied to every cell, first.
        evaluation: options of the evaluation of every cell.
        statistics: options of the paired differences.
        groups: group name -> :class:`SuiteGroup`, in document order (default: the entries'
            groups in order of first appearance, titled by their names).
    """

    entries: dict[str, SuiteEntry]
    datasets: dict[str, SuiteDataset]
    directions: dict[str, SuiteDirection]
    seeds: list[int]
    name: str | None = None
    description: str = ""
    overrides: list[str] = field(default_factory=list)
    evaluation: EvaluationOptions = field(default_factory=EvaluationOptions)
    statistics: StatisticsOptions = field(default_factory=StatisticsOptions)
    groups: dict[str, SuiteGroup] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """One training + evaluation of the bench: entry x dataset x direction x seed.

    Attributes:
        entry: entry name.
        dataset: dataset name.
        direction: direction name.
        seed: training seed.
        config: the resolved training config file.
        source: source domain.
        target: target domain (evaluated).
        overrides: the suite's, the dataset's and the entry's overrides, in that order.
    """

    entry: str
    dataset: str
    direction: str
    seed: int
    config: Path
    source: str
    target: str
    overrides: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str, str, int]:
        """``(entry, dataset, direction, seed)``."""
        return (self.entry, self.dataset, self.direction, self.seed)

    @property
    def rel_dir(self) -> Path:
        """The cell's folder relative to the bench output: ``cells/ENTRY/DATASET/DIRECTION/seedS``."""
        return Path("cells", self.entry, self.dataset, self.direction, f"seed{self.seed}")

    @property
    def name(self) -> str:
        """``ENTRY/DATASET/DIRECTION/seedS`` (log lines, failure lists)."""
        return f"{self.entry}/{self.dataset}/{self.direction}/seed{self.seed}"


@dataclass(frozen=True)
class Suite:
    """A loaded and checked suite.

    Attributes:
        spec: the parsed file.
        path: the suite file.
        name: ``spec.name`` or the file stem.
    """

    spec: SuiteSpec
    path: Path
    name: str

    @property
    def reference(self) -> str:
        """The reference entry's name."""
        return next(n for n, e in self.spec.entries.items() if e.reference)

    @property
    def lower_bound(self) -> str | None:
        """The lower-bound entry's name, if any."""
        return next((n for n, e in self.spec.entries.items() if e.lower_bound), None)

    @property
    def upper_bounds(self) -> list[str]:
        """The upper-bound entries, in suite order."""
        return [n for n, e in self.spec.entries.items() if e.upper_bound]

    def label(self, entry: str) -> str:
        """The table row name of ``entry``."""
        return self.spec.entries[entry].label or entry

    def groups(self) -> dict[str, SuiteGroup]:
        """Group name -> :class:`SuiteGroup` in document order (see :attr:`SuiteSpec.groups`)."""
        if self.spec.groups:
            return dict(self.spec.groups)
        return {e.group: SuiteGroup() for e in self.spec.entries.values()}

    def group_entries(self, group: str) -> list[str]:
        """The entries of ``group``, in suite order."""
        return [n for n, e in self.spec.entries.items() if e.group == group]

    def seeds_of(self, entry: str) -> list[int]:
        """The training seeds of ``entry``."""
        own = self.spec.entries[entry].seeds
        return list(self.spec.seeds if own is None else own)

    def all_seeds(self) -> list[int]:
        """Every seed of some entry: the suite's seeds first, then the others in suite order."""
        seeds = list(self.spec.seeds)
        for entry in self.spec.entries:
            seeds += [s for s in self.seeds_of(entry) if s not in seeds]
        return seeds

    def directions_of(self, dataset: str) -> list[str]:
        """The direction names run on ``dataset``, in suite order."""
        chosen = self.spec.datasets[dataset].directions
        return [d for d in self.spec.directions if chosen is None or d in chosen]

    def blocks(self) -> list[tuple[str, str]]:
        """Every ``(dataset, direction)`` pair, in suite order (one table each)."""
        return [(ds, d) for ds in self.spec.datasets for d in self.directions_of(ds)]

    def config_for(self, entry: str, dataset: str, direction: str) -> Path:
        """The training config of ``entry`` on ``dataset`` / ``direction`` (resolved path).

        Raises:
            ConfigError: no key of a config mapping applies.
            MissingPathError: the file is neither next to the suite nor a packaged config.
        """
        key, value = self._config_entry(entry, dataset, direction)
        where = f"{self.path}: entries.{entry}.config" + (f".{key}" if key else "")
        return resolve_config_path(value, self.path.parent, where)

    def config_given(self, entry: str, dataset: str, direction: str) -> str:
        """The config path of ``entry`` on ``dataset`` / ``direction`` as the suite writes it."""
        return self._config_entry(entry, dataset, direction)[1]

    def _config_entry(self, entry: str, dataset: str, direction: str) -> tuple[str | None, str]:
        value = self.spec.entries[entry].config
        if isinstance(value, str):
            return None, value
        for key in (f"{dataset}/{direction}", dataset, direction, _DEFAULT_KEY):
            if key in value:
                return key, value[key]
        raise ConfigError(
            f"{self.path}: entries.{entry}.config: no config for dataset {dataset!r}, direction {direction!r}; "
            f"expected one of the keys '{dataset}/{direction}', '{dataset}', '{direction}' or '*', found "
            f"{', '.join(map(repr, value))}."
        )

    def cells(self) -> list[Cell]:
        """Every cell, ordered seed-major (all entries of seed 0 first) so early results cover every entry."""
        out = []
        for seed in self.all_seeds():
            for dataset, direction in self.blocks():
                dspec = self.spec.datasets[dataset]
                pair = self.spec.directions[direction]
                for entry, espec in self.spec.entries.items():
                    if seed not in self.seeds_of(entry):
                        continue
                    out.append(
                        Cell(
                            entry=entry,
                            dataset=dataset,
                            direction=direction,
                            seed=seed,
                            config=self.config_for(entry, dataset, direction),
                            source=pair.source,
                            target=pair.target,
                            overrides=(*self.spec.overrides, *dspec.overrides, *espec.overrides),
                        )
                    )
        return out


def packaged_configs_dir() -> Path:
    """The configs shipped with the package (``tcsa_uda/configs``, ``configs/`` in the repository)."""
    return Path(str(resources.files("tcsa_uda") / "configs"))


def resolve_config_path(value: str, suite_dir: Path, where: str) -> Path:
    """A training config path: absolute, or next to the suite file, or among the packaged configs.

    Raises:
        MissingPathError: no such file; the message lists the places looked at.
    """
    p = Path(value)
    candidates = [p] if p.is_absolute() else [suite_dir / p, packaged_configs_dir() / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise MissingPathError(f"{where}: config {value!r} not found (looked at {', '.join(map(str, candidates))}).")


def resolve_prepared(value: str, where: str) -> Path:
    """A prepared dataset folder: as given if it exists, else under ``$TCSA_UDA_DATA``.

    Raises:
        MissingPathError: the folder does not exist; the message says how to prepare it.
    """
    p = resolve_data_path(value)
    if not p.is_dir():
        raise MissingPathError(
            f"{where}: prepared folder {value!r} not found ({data_path_hint()}). "
            f"Run `tcsa-uda prepare DATASET --out {value}` first."
        )
    return p.resolve()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (records which config content a cell was trained with)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_suite(path: str | Path) -> Suite:
    """Load and check a suite file (see the module docstring for the rules).

    Raises:
        ConfigError: an unknown key, a wrong type or a broken rule, naming the file and the key.
        MissingPathError: the suite or a training config does not exist.
    """
    path = Path(path)
    spec = load_config(SuiteSpec, path)
    _check(spec, path)
    suite = Suite(spec=spec, path=path.resolve(), name=spec.name or path.stem)
    suite.cells()  # every cell must resolve its config
    return suite


def _check(spec: SuiteSpec, path: Path) -> None:
    def fail(msg: str) -> None:
        raise ConfigError(f"{path}: {msg}")

    for section, names in (("entries", spec.entries), ("datasets", spec.datasets), ("directions", spec.directions)):
        if not names:
            fail(f"{section}: expected at least one, found none.")
        for n in names:
            if not _NAME.match(n):
                fail(f"{section}.{n}: expected a name of letters, digits, '_', '.' or '-', found {n!r}.")
    shared = sorted(set(spec.datasets) & set(spec.directions))
    if shared:
        fail(f"datasets and directions: expected distinct names, found {', '.join(shared)} in both.")
    seed_lists = [("seeds", spec.seeds)]
    seed_lists += [(f"entries.{n}.seeds", e.seeds) for n, e in spec.entries.items() if e.seeds is not None]
    for where, seeds in seed_lists:
        if not seeds or len(set(seeds)) != len(seeds):
            fail(f"{where}: expected a non-empty list of distinct integers, found {seeds}.")
    refs = [n for n, e in spec.entries.items() if e.reference]
    if len(refs) != 1:
        fail(f"entries: expected exactly one entry with reference: true, found {len(refs)} ({', '.join(refs)}).")
    lows = [n for n, e in spec.entries.items() if e.lower_bound]
    if len(lows) > 1:
        fail(f"entries: expected at most one entry with lower_bound: true, found {', '.join(lows)}.")
    for n, e in spec.entries.items():
        if e.upper_bound and (e.reference or e.lower_bound):
            fail(f"entries.{n}: an upper_bound entry cannot also be the reference or the lower_bound.")
        if isinstance(e.config, dict):
            valid = {_DEFAULT_KEY, *spec.datasets, *spec.directions}
            valid |= {f"{ds}/{d}" for ds in spec.datasets for d in spec.directions}
            bad = [k for k in e.config if k not in valid]
            if bad:
                fail(
                    f"entries.{n}.config: expected keys DATASET/DIRECTION, DATASET, DIRECTION or '*', found "
                    f"{', '.join(map(repr, bad))}."
                )
    if spec.groups:
        for n, e in spec.entries.items():
            if e.group not in spec.groups:
                group_names = ", ".join(spec.groups)
                fail(f"entries.{n}.group: expected one of {group_names} (the suite's groups), found {e.group!r}.")
    for n, d in spec.datasets.items():
        if (d.prepared is None) == (d.phantom is None):
            fail(f"datasets.{n}: expected exactly one of 'prepared' or 'phantom'.")
        if d.directions is not None:
            unknown = [x for x in d.directions if x not in spec.directions]
            if unknown or not d.directions:
                fail(
                    f"datasets.{n}.directions: expected names among {', '.join(spec.directions)}, found {d.directions}."
                )
    for n, pair in spec.directions.items():
        if pair.source == pair.target:
            fail(f"directions.{n}: expected different source and target domains, found {pair.source!r} twice.")
    lists = [("overrides", spec.overrides)]
    lists += [(f"datasets.{n}.overrides", d.overrides) for n, d in spec.datasets.items()]
    lists += [(f"entries.{n}.overrides", e.overrides) for n, e in spec.entries.items()]
    for where, overrides in lists:
        for text in overrides:
            try:
                parts, _ = parse_override(text)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {where}: {exc}") from exc
            if ".".join(parts) in BENCH_KEYS:
                fail(f"{where}: {text!r} sets a key the bench sets for every cell ({', '.join(BENCH_KEYS)}).")
    if not 0.0 < spec.statistics.level < 1.0 or spec.statistics.n_boot < 1:
        fail(
            "statistics: expected 0 < level < 1 and n_boot >= 1, found "
            f"level={spec.statistics.level}, n_boot={spec.statistics.n_boot}."
        )


__all__ = [
    "BENCH_KEYS",
    "Cell",
    "EvaluationOptions",
    "PhantomData",
    "StatisticsOptions",
    "Suite",
    "SuiteDataset",
    "SuiteDirection",
    "SuiteEntry",
    "SuiteGroup",
    "SuiteSpec",
    "file_digest",
    "load_suite",
    "packaged_configs_dir",
    "resolve_config_path",
    "resolve_prepared",
]
