"""BraTS (FLAIR and T2 as two domains over disjoint patients) -> the dataset contract.

Input: case folders of any BraTS release, e.g. ``HGG/Brats18_2013_10_1/Brats18_2013_10_1_flair.nii.gz``
with ``_t2`` and ``_seg`` files (any nesting, ``.nii``/``.nii.gz``, any letter case; the BraTS
2023 names ``-t2f`` / ``-t2w`` / ``-seg`` are accepted as FLAIR / T2 / segmentation). The case id
is the file-name prefix before the sequence suffix.

Releases: one root may hold several releases (e.g. ``Brats18_2013_10_1`` of BraTS 2018 and
``BraTS19_2013_10_1`` of BraTS 2019, the same patient). The patient is the case id without its
release prefix (:func:`patient_key`); of the copies of one patient only one is converted (the one
a ``split`` file names, else the newest release), and a note names every copy and the one used,
so no patient can reach both domains.

Label: whole tumour = every tumour sub-region -> class 1: codes {1, 2, 4} of BraTS 2018-2021,
and 3 (the enhancing tumour code of BraTS 2023); 0 stays background.

Split (docs/protocols.md: patient-level, source and target patients disjoint): the complete cases
are shuffled with ``seed`` and halved; the first half gives the ``FLAIR`` domain its images, the
second half the ``T2`` domain, so no patient appears in both domains. Within each domain a share
``test_fraction`` (rounded, at least 1) is drawn for ``test``, then a small ``val`` share
(:func:`~.common.carve_val`), the rest is ``train``. The split is written to ``OUT/split.json``;
``split=FILE`` reuses such a file exactly (cases it lists but the download lacks are noted,
missing test cases are an error, cases it does not list are left out and noted).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from tqdm import tqdm

from tcsa_uda.data.convert.common import (
    NIFTI_RE,
    check_test_cases,
    describe_codes,
    find_files,
    load_nifti_raw,
    map_codes,
    natural_key,
    require_dir,
    to_ras,
)
from tcsa_uda.data.convert.splits import DEFAULT_VAL_FRACTION, carve_val, check_fraction, domain_rng, read_split_file
from tcsa_uda.data.convert.writer import ConversionResult, DatasetWriter, check_same_grid
from tcsa_uda.errors import DatasetError

DATASET_NAME = "brats"
CLASS_NAMES: tuple[str, ...] = ("background", "whole tumour")
MODALITIES: dict[str, str] = {
    "FLAIR": "fluid-attenuated inversion recovery magnetic resonance imaging",
    "T2": "T2-weighted magnetic resonance imaging",
}
DOMAIN_FILES: dict[str, str] = {"FLAIR": "flair", "T2": "t2"}
"""Domain -> the sequence key of :data:`SEQUENCE_ALIASES` whose file gives its images."""
TUMOUR_CODES: dict[int, int] = {1: 1, 2: 1, 3: 1, 4: 1}
SEQUENCE_ALIASES: dict[str, str] = {"flair": "flair", "t2f": "flair", "t2": "t2", "t2w": "t2", "seg": "seg"}
FILE_PATTERN = rf"(?P<case>.+?)[_-](?P<seq>flair|t2f|t2w|t2|seg){NIFTI_RE}"
DEFAULT_TEST_FRACTION = 0.2
RELEASE_RE = re.compile(r"brats[-_]?(?P<year>20\d\d|\d\d)[-_](?P<patient>.+)", re.IGNORECASE)
"""Case ids with a release prefix: ``Brats18_<patient>``, ``BraTS19_<patient>``, ``BraTS2021_<patient>``."""


def patient_key(case: str) -> tuple[str, int | None]:
    """The patient of a BraTS case id and its release year.

    ``Brats18_2013_10_1`` and ``BraTS19_2013_10_1`` are the same patient (``2013_10_1``) in the
    2018 and 2019 releases. Ids without a release prefix (BraTS 2023 ``BraTS-GLI-00000-000``)
    are their own patient, with no year.

    Returns:
        ``(patient key in lower case, release year or None)``.
    """
    match = RELEASE_RE.fullmatch(case)
    if match is None:
        return case.lower(), None
    year = int(match.group("year"))
    return match.group("patient").lower(), year + 2000 if year < 100 else year


def deduplicate_patients(
    cases: dict[str, dict[str, Path]], preferred: set[str] | frozenset[str] = frozenset()
) -> tuple[dict[str, dict[str, Path]], list[str]]:
    """Keep one copy of every patient found under several release names.

    Args:
        cases: case id -> sequence -> file (complete cases).
        preferred: case ids to keep when they are one of the copies (those of a split file).

    Returns:
        ``(kept cases, notes)``: one note per patient with several copies, naming each copy
        (with its folder) and the one used.
    """
    groups: dict[str, list[str]] = {}
    for name in cases:
        groups.setdefault(patient_key(name)[0], []).append(name)
    kept: dict[str, dict[str, Path]] = {}
    notes: list[str] = []
    for key, names in groups.items():
        if len(names) == 1:
            kept[names[0]] = cases[names[0]]
            continue
        listed = [n for n in names if n in preferred]
        if len(listed) == 1:
            chosen, why = listed[0], "the one the split file lists"
        else:
            chosen = max(names, key=lambda n: (patient_key(n)[1] or 0, natural_key(n)))
            why = "the newest release"
        kept[chosen] = cases[chosen]
        copies = ", ".join(f"{n} ({cases[n]['seg'].parent})" for n in sorted(names, key=natural_key))
        notes.append(
            f"patient {key}: {len(names)} copies found under different release names: {copies}; using {chosen} "
            f"({why}) so the patient is in one domain only"
        )
    return kept, notes


def check_split_patients(assignment: dict[str, dict[str, list[str]]], split_file: str | os.PathLike[str]) -> None:
    """Refuse a split file that lists one patient under two release names.

    Raises:
        DatasetError: naming the patient, both ids and where each is listed.
    """
    seen: dict[str, tuple[str, str]] = {}
    for domain, per in assignment.items():
        for split_name, ids in per.items():
            for cid in ids:
                key = patient_key(cid)[0]
                if key in seen and seen[key][0] != cid:
                    other, where = seen[key]
                    raise DatasetError(
                        f"{split_file}: expected each patient once, found patient {key} as {other} ({where}) and as "
                        f"{cid} ({domain}/{split_name}); keep one of them."
                    )
                seen.setdefault(key, (cid, f"{domain}/{split_name}"))


def discover_brats(root: Path) -> tuple[dict[str, dict[str, Path]], dict[str, str]]:
    """Case key (lower case) -> sequence -> file, and case key -> the id as spelled in the files.

    Raises:
        DatasetError: two files for one case and sequence.
    """
    cases: dict[str, dict[str, Path]] = {}
    names: dict[str, str] = {}
    for path, match in find_files(root, FILE_PATTERN):
        case, seq = match.group("case"), SEQUENCE_ALIASES[match.group("seq").lower()]
        key = case.lower()
        names.setdefault(key, case)
        entry = cases.setdefault(key, {})
        if seq in entry:
            raise DatasetError(
                f"{root}: expected one {seq} file for case {case!r}, found two: {entry[seq]} and {path}; remove one."
            )
        entry[seq] = path
    return cases, names


def make_brats_split(
    ids: list[str], seed: int, test_fraction: float, val_fraction: float
) -> dict[str, dict[str, list[str]]]:
    """Seeded, patient-disjoint split: halves for FLAIR and T2, then test / val / train per domain.

    Args:
        ids: the complete case ids.

    Returns:
        domain -> split -> ids.

    Raises:
        DatasetError: fewer than 4 cases (each domain needs a training and a test case).
    """
    test_fraction = check_fraction(test_fraction, "test fraction")
    if len(ids) < 4:
        raise DatasetError(
            f"expected at least 4 complete BraTS cases (flair, t2 and seg) to split into two domains, found {len(ids)}."
        )
    pool = sorted(ids, key=natural_key)
    order = domain_rng(seed, "patients").permutation(len(pool))
    shuffled = [pool[int(i)] for i in order]
    half = (len(shuffled) + 1) // 2
    out: dict[str, dict[str, list[str]]] = {}
    for domain, members in (("FLAIR", shuffled[:half]), ("T2", shuffled[half:])):
        n_test = min(len(members) - 1, max(1, math.floor(test_fraction * len(members) + 0.5)))
        test = members[:n_test]
        rest = members[n_test:]
        val = carve_val(rest, val_fraction, seed, domain)
        train = [c for c in rest if c not in set(val)]
        out[domain] = {
            "train": sorted(train, key=natural_key),
            "val": val,
            "test": sorted(test, key=natural_key),
        }
    return out


def convert_brats(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: str | os.PathLike[str] | None = None,
    seed: int = 0,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    progress: bool = True,
) -> ConversionResult:
    """Convert BraTS case folders into FLAIR and T2 domains over disjoint patients.

    Args:
        root: folder of the BraTS download (searched recursively).
        out: output dataset folder.
        split: a ``split.json`` of an earlier conversion to reuse; None draws a new one.
        seed: seed of the patient split (ignored with ``split``).
        test_fraction: share of each domain's patients used for ``test``.
        val_fraction: share of the remaining patients moved to ``val`` (0 disables).
        progress: show a progress bar.

    Raises:
        MissingPathError: the folder or split file does not exist, or a test case of the split
            file is missing.
        DatasetError: inconsistent files, a split file listing a patient in both domains (also
            under two release names), an unreadable test case, or the output fails verification.
            An unreadable training case is skipped with a note (``skipped_cases``).
    """
    root_dir = require_dir(root, "--root folder")
    found, names = discover_brats(root_dir)
    writer = DatasetWriter(
        out=Path(out),
        name=DATASET_NAME,
        class_names=CLASS_NAMES,
        modalities=MODALITIES,
        description="BraTS whole tumour; FLAIR and T2 domains over disjoint patients (tcsa-uda convert brats).",
        reference="B. Menze et al., The Multimodal Brain Tumor Image Segmentation Benchmark (BRATS), IEEE TMI 2015",
        seed=seed,
    )
    complete: dict[str, dict[str, Path]] = {}
    for key, files in sorted(found.items()):
        lacking = [s for s in ("flair", "t2", "seg") if s not in files]
        if lacking:
            writer.note(f"case {names[key]}: no {'/'.join(lacking)} file found; skipped")
        else:
            complete[names[key]] = files
    if split is None:
        complete, dup_notes = deduplicate_patients(complete)
        for n in dup_notes:
            writer.note(n)
        assignment = make_brats_split(list(complete), seed, test_fraction, val_fraction)
    else:
        assignment = read_split_file(split, MODALITIES)
        check_split_patients(assignment, split)
        listed = {cid for per in assignment.values() for ids in per.values() for cid in ids}
        complete, dup_notes = deduplicate_patients(complete, listed)
        for n in dup_notes:
            writer.note(n)
        for domain, per in assignment.items():
            check_test_cases(
                per["test"], complete, domain, root_dir, f"the flair, t2 and seg files of every test case of {split}"
            )
            for s in ("train", "val"):
                gone = [c for c in per[s] if c not in complete]
                if gone:
                    writer.note(f"{domain} {s}: {len(gone)} case(s) of {split} not found in the download: {gone[:5]}")
                per[s] = [c for c in per[s] if c in complete]
        unlisted = sorted(set(complete) - listed, key=natural_key)
        if unlisted:
            writer.note(f"{len(unlisted)} case(s) not listed in {split} left out: {unlisted[:5]}")
    jobs = [(d, s, cid) for d, per in assignment.items() for s, ids in per.items() for cid in ids]
    jobs.sort(key=lambda j: (j[0], natural_key(j[2])))
    for domain, split_name, cid in tqdm(jobs, desc="convert brats", unit="case", disable=not progress):
        with writer.case_faults(domain, cid, split_name):
            files = complete[cid]
            image_path = files[DOMAIN_FILES[domain]]
            image = load_nifti_raw(image_path, "image")
            seg = load_nifti_raw(files["seg"], "label")
            check_same_grid(image, seg, image_path, files["seg"], writer)
            ids, unexpected = map_codes(seg[0], TUMOUR_CODES)
            if unexpected:
                writer.note(
                    f"{files['seg']}: unexpected label code(s) {describe_codes(unexpected)} mapped to background"
                )
            img, affine = to_ras(image[0], image[1])
            lab, _ = to_ras(ids, image[1])
            writer.add(domain, cid, split_name, img, affine, lab, source=str(image_path))
    return writer.finish()
