"""Tests of the dataset.json contract (tcsa_uda.data.contract)."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tcsa_uda.data.contract import (
    DATASET_FILE,
    CaseSpec,
    DatasetSpec,
    DomainSpec,
    Problem,
    dataset_to_dict,
    load_dataset,
    parse_dataset,
    path_outside_problem,
    read_dataset_json,
    write_dataset_json,
)
from tcsa_uda.errors import DatasetError, MissingPathError

VALID: dict[str, Any] = {
    "name": "phantom-heart",
    "labels": {
        "background": 0,
        "myocardium": 1,
        "left atrium blood cavity": 2,
        "left ventricle blood cavity": 3,
        "ascending aorta": 4,
    },
    "class_descriptions": {"myocardium": "the muscular wall of the left ventricle"},
    "domains": {
        "CT": {
            "modality": "computed tomography",
            "cases": [
                {"id": "ct_001", "image": "CT/ct_001.nii.gz", "label": "CT/ct_001_seg.nii.gz", "split": "train"},
                {"id": "ct_002", "image": "CT/ct_002.nii.gz", "label": "CT/ct_002_seg.nii.gz", "split": "test"},
            ],
        },
        "MR": {
            "modality": "magnetic resonance imaging",
            "channel": 0,
            "cases": [
                {"id": "mr_001", "image": "MR/mr_001.nii.gz", "split": "train"},
                {"id": "mr_002", "image": "MR/mr_002.nii.gz", "label": "MR/mr_002_seg.nii.gz", "split": "val"},
            ],
        },
    },
}

ROOT = Path("dataset")
FILE = "dataset.json"


def valid() -> dict[str, Any]:
    return copy.deepcopy(VALID)


def parse(data: Any) -> tuple[DatasetSpec | None, list[Problem], list[str]]:
    return parse_dataset(data, ROOT, FILE)


def problems_of(data: Any) -> list[str]:
    spec, problems, _ = parse(data)
    assert spec is None and problems
    return [str(p) for p in problems]


def test_valid_dataset_parses():
    spec, problems, warns = parse(valid())
    assert problems == [] and warns == []
    assert spec is not None
    assert spec.name == "phantom-heart" and spec.root == ROOT
    assert spec.num_classes == 5
    assert spec.class_names == [
        "background",
        "myocardium",
        "left atrium blood cavity",
        "left ventricle blood cavity",
        "ascending aorta",
    ]
    assert spec.description("myocardium") == "the muscular wall of the left ventricle"
    assert spec.description("ascending aorta") == "ascending aorta"
    mr = spec.domain("MR")
    assert mr.modality == "magnetic resonance imaging" and mr.channel == 0
    assert spec.domain("CT").channel is None
    assert mr.cases[0] == CaseSpec(id="mr_001", image="MR/mr_001.nii.gz", split="train", label=None)
    assert mr.cases[1].label_path(ROOT) == ROOT / "MR/mr_002_seg.nii.gz"
    assert mr.cases[0].label_path(ROOT) is None
    assert mr.cases[0].image_path(ROOT) == ROOT / "MR/mr_001.nii.gz"


def test_domain_select_by_split_and_labelled():
    spec, _, _ = parse(valid())
    assert spec is not None
    mr = spec.domain("MR")
    assert [c.id for c in mr.select()] == ["mr_001", "mr_002"]
    assert [c.id for c in mr.select("train")] == ["mr_001"]
    assert [c.id for c in mr.select(labelled=True)] == ["mr_002"]
    assert [c.id for c in mr.select(labelled=False)] == ["mr_001"]
    assert mr.select("test") == []


def test_unknown_domain_lists_known_ones():
    spec, _, _ = parse(valid())
    assert spec is not None
    with pytest.raises(DatasetError, match=r"no domain 'PET'; the dataset has CT, MR"):
        spec.domain("PET")


def test_top_level_must_be_an_object():
    assert problems_of([1, 2]) == ["[dataset] dataset.json: expected a JSON object at the top level, found list"]


@pytest.mark.parametrize("key", ["name", "labels", "domains"])
def test_required_keys(key):
    data = valid()
    del data[key]
    got = problems_of(data)
    assert f"[{key}] dataset.json: required key '{key}' is missing" in got


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"background": 0, "a": 2}, "expected consecutive ids 0..1 (0 = background), found [0, 2]"),
        ({"background": 0, "a": 1, "b": 1}, "expected distinct ids, found ids used twice: [1]"),
        ({"background": 1, "a": 2}, "expected id 0 for the background class, found none"),
        ({"background": 0, "a": "1"}, "[labels.a] dataset.json: expected an integer id, found '1'"),
        ({"background": 0, "a": 1.0}, "[labels.a] dataset.json: expected an integer id, found 1.0"),
        ({"background": 0, "a": True}, "[labels.a] dataset.json: expected an integer id, found True"),
        ({}, "expected a non-empty mapping of class name -> id, found {}"),
        (["background"], "expected a non-empty mapping of class name -> id, found ['background']"),
    ],
)
def test_label_problems(labels, expected):
    data = valid()
    data["labels"] = labels
    data.pop("class_descriptions")
    got = problems_of(data)
    assert any(expected in m for m in got), got


def test_name_must_be_non_empty_string():
    data = valid()
    data["name"] = ""
    assert problems_of(data) == ["[name] dataset.json: expected a non-empty string, found ''"]


def test_class_description_of_unknown_class():
    data = valid()
    data["class_descriptions"] = {"liver": "the largest organ"}
    got = problems_of(data)
    assert len(got) == 1
    assert got[0].startswith("[class_descriptions.liver]") and "found 'liver'" in got[0]
    assert "myocardium" in got[0]


def test_class_description_must_be_text():
    data = valid()
    data["class_descriptions"] = {"myocardium": "  "}
    assert problems_of(data) == [
        "[class_descriptions.myocardium] dataset.json: expected a non-empty string, found '  '"
    ]


@pytest.mark.parametrize("value", [[], "", 0, ["myocardium"]])
def test_class_descriptions_must_be_a_mapping(value):
    data = valid()
    data["class_descriptions"] = value
    got = problems_of(data)
    assert len(got) == 1 and got[0].startswith("[class_descriptions]") and "expected a mapping" in got[0]


def test_class_descriptions_null_is_absent():
    data = valid()
    data["class_descriptions"] = None
    spec, problems, _ = parse(data)
    assert problems == [] and spec is not None and spec.class_descriptions == {}


@pytest.mark.parametrize("domains", [{}, [], "CT"])
def test_domains_must_be_non_empty_mapping(domains):
    data = valid()
    data["domains"] = domains
    got = problems_of(data)
    assert len(got) == 1 and got[0].startswith("[domains]")


def test_domain_problems():
    data = valid()
    data["domains"]["CT"]["modality"] = ""
    data["domains"]["MR"]["channel"] = -1
    data["domains"]["XR"] = {"modality": "x-ray", "cases": []}
    data["domains"]["US"] = {"modality": "ultrasound"}
    data["domains"]["PET"] = "pet"
    got = problems_of(data)
    assert len(got) == 5, got
    assert got[0].startswith("[CT]") and "'modality'" in got[0]
    assert got[1].startswith("[MR]") and "non-negative integer" in got[1] and "-1" in got[1]
    assert got[2].startswith("[XR]") and "at least one case" in got[2]
    assert got[3].startswith("[US]") and "expected a list 'cases', found None" in got[3]
    assert got[4].startswith("[PET]") and "expected a mapping" in got[4]


def test_channel_true_is_rejected():
    data = valid()
    data["domains"]["MR"]["channel"] = True
    got = problems_of(data)
    assert len(got) == 1 and "found True" in got[0]


def test_case_problems():
    data = valid()
    cases = data["domains"]["CT"]["cases"]
    cases.append({"image": "CT/x.nii.gz", "split": "train"})
    cases.append({"id": "ct_003", "split": "train"})
    cases.append({"id": "ct_004", "image": "CT/4.nii.gz", "label": 3, "split": "train"})
    cases.append({"id": "ct_005", "image": "CT/5.nii.gz", "split": "training"})
    cases.append({"id": "ct_006", "image": "/abs/6.nii.gz", "split": "train"})
    cases.append("ct_007")
    got = problems_of(data)
    assert got == [
        "[CT/cases[2]] dataset.json: expected a non-empty string 'id', found None",
        "[CT/ct_003] dataset.json: expected a relative path string 'image', found None",
        "[CT/ct_004] dataset.json: expected 'label' to be a relative path string or absent, found 3",
        "[CT/ct_005] dataset.json: expected 'split' in ['train', 'val', 'test'], found 'training'",
        "[CT/ct_006] dataset.json: expected 'image' relative to the dataset folder, found absolute path "
        "'/abs/6.nii.gz'",
        "[CT/cases[7]] dataset.json: expected a mapping with id, image, split, found 'ct_007'",
    ]


def test_duplicate_case_ids_within_a_domain():
    data = valid()
    data["domains"]["CT"]["cases"][1]["id"] = "ct_001"
    assert problems_of(data) == [
        "[CT/ct_001] dataset.json: expected unique case ids within domain 'CT', found 'ct_001' twice"
    ]


def test_case_ids_differing_only_in_letter_case_collide():
    data = valid()
    data["domains"]["CT"]["cases"][1]["id"] = "CT_001"
    assert problems_of(data) == [
        "[CT/CT_001] dataset.json: expected case ids that differ in more than letter case within domain 'CT' (ids "
        "name files, which collide on case-insensitive file systems), found 'ct_001' and 'CT_001'"
    ]


def test_domain_names_differing_only_in_letter_case_collide():
    data = valid()
    data["domains"]["ct"] = data["domains"].pop("MR")
    problems = problems_of(data)
    assert problems == [
        "[ct] dataset.json: expected domain names that differ in more than letter case (they name folders, which "
        "collide on case-insensitive file systems), found 'CT' and 'ct'"
    ]


def test_path_outside_problem_resolves_dots_and_symlinks(tmp_path):
    root = tmp_path / "ds"
    (root / "CT").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a.nii.gz").write_bytes(b"x")
    (root / "CT" / "inside.nii.gz").write_bytes(b"x")
    (root / "CT" / "link_in.nii.gz").symlink_to(root / "CT" / "inside.nii.gz")
    (root / "CT" / "link_out.nii.gz").symlink_to(tmp_path / "elsewhere" / "a.nii.gz")
    (root / "shared").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert path_outside_problem(root, "CT/inside.nii.gz") is None
    assert path_outside_problem(root, "CT/link_in.nii.gz") is None
    assert path_outside_problem(root, "CT/../CT/inside.nii.gz") is None
    dots = path_outside_problem(root, "../elsewhere/a.nii.gz", "label")
    assert dots is not None
    assert dots.startswith(f"expected 'label' to stay inside the dataset folder {root.resolve()}, found")
    assert "'../elsewhere/a.nii.gz', which leads through '..' to" in dots
    for rel in ("CT/link_out.nii.gz", "shared/a.nii.gz"):
        problem = path_outside_problem(root, rel)
        assert problem is not None
        assert f"found {rel!r}, which leads through a symlink to {tmp_path.resolve() / 'elsewhere'}" in problem
    absolute = path_outside_problem(root, str(tmp_path / "elsewhere" / "a.nii.gz"))
    assert absolute is not None and "which leads as an absolute path to" in absolute
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)  # the dataset folder itself may be a symlink
    assert path_outside_problem(alias, "CT/inside.nii.gz") is None


def test_same_case_id_in_two_domains_is_allowed():
    data = valid()
    data["domains"]["MR"]["cases"][0]["id"] = "ct_001"
    spec, problems, _ = parse(data)
    assert problems == [] and spec is not None


def test_unknown_keys_warn_only():
    data = valid()
    data["version"] = 1
    data["domains"]["CT"]["scanner"] = "x"
    data["domains"]["CT"]["cases"][0]["spacing"] = [1, 1, 1]
    spec, problems, warns = parse(data)
    assert problems == [] and spec is not None
    assert len(warns) == 3
    assert "unknown top-level key(s) ['version']" in warns[0]
    assert warns[1].startswith("dataset.json [CT]") and "['scanner']" in warns[1]
    assert warns[2].startswith("dataset.json [CT/ct_001]") and "['spacing']" in warns[2]


def test_all_structural_problems_reported():
    data = valid()
    data["name"] = 3
    data["labels"]["aorta"] = 9
    data["domains"]["MR"]["cases"][0]["split"] = "dev"
    got = problems_of(data)
    assert len(got) == 3
    assert got[0].startswith("[name]") and got[1].startswith("[labels]") and got[2].startswith("[MR/mr_001]")


def test_read_missing_folder(tmp_path):
    with pytest.raises(MissingPathError, match=r"no dataset.json found"):
        read_dataset_json(tmp_path / "nope")
    with pytest.raises(MissingPathError, match=str(tmp_path / DATASET_FILE)):
        read_dataset_json(tmp_path)


def test_read_invalid_json_names_line_and_column(tmp_path):
    (tmp_path / DATASET_FILE).write_text('{\n  "name": "x",\n  "labels": {,\n}', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"dataset.json: invalid JSON at line 3, column 14"):
        read_dataset_json(tmp_path)


def test_read_non_utf8_file(tmp_path):
    (tmp_path / DATASET_FILE).write_bytes('{"name": "Br\u00fcssel"}'.encode("latin-1"))
    with pytest.raises(DatasetError, match=r"dataset.json: expected UTF-8 text"):
        read_dataset_json(tmp_path)


def test_read_duplicate_json_keys(tmp_path):
    (tmp_path / DATASET_FILE).write_text(
        '{"name": "x", "labels": {"background": 0, "aorta": 1, "aorta": 2}}', encoding="utf-8"
    )
    with pytest.raises(DatasetError, match=r"duplicate key 'aorta'"):
        read_dataset_json(tmp_path)


def test_read_file_path_directly(tmp_path):
    (tmp_path / DATASET_FILE).write_text(json.dumps(VALID), encoding="utf-8")
    path, data = read_dataset_json(tmp_path / DATASET_FILE)
    assert path == tmp_path / DATASET_FILE and data == VALID


def test_load_dataset_raises_with_every_problem(tmp_path):
    data = valid()
    data["labels"]["aorta"] = 9
    data["domains"]["CT"]["cases"] = []
    (tmp_path / DATASET_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path)
    msg = str(exc.value)
    assert "2 problem(s)" in msg and "[labels]" in msg and "[CT]" in msg


def test_load_dataset_warns_on_unknown_keys(tmp_path):
    data = valid()
    data["version"] = 1
    (tmp_path / DATASET_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"\['version'\]"):
        spec = load_dataset(tmp_path)
    assert spec.root == tmp_path


def test_write_and_reload_roundtrip(tmp_path):
    spec, _, _ = parse_dataset(valid(), tmp_path)
    assert spec is not None
    path = write_dataset_json(spec)
    assert path == tmp_path / DATASET_FILE
    assert json.loads(path.read_text(encoding="utf-8")) == VALID
    assert load_dataset(tmp_path) == spec
    assert dataset_to_dict(spec) == VALID


def test_dataset_to_dict_omits_empty_optionals():
    spec = DatasetSpec(
        name="x",
        labels={"background": 0, "a": 1},
        domains={"CT": DomainSpec("CT", "computed tomography", (CaseSpec("c1", "i.nii", "train"),))},
        root=ROOT,
    )
    assert dataset_to_dict(spec) == {
        "name": "x",
        "labels": {"background": 0, "a": 1},
        "domains": {
            "CT": {"modality": "computed tomography", "cases": [{"id": "c1", "image": "i.nii", "split": "train"}]}
        },
    }


def test_intensity_range_parses_and_round_trips(tmp_path):
    data = valid()
    data["domains"]["MR"]["intensity_range"] = [-1.8, 4.4]
    spec, problems, warns = parse_dataset(data, tmp_path)
    assert spec is not None and not problems and not warns
    assert spec.domains["MR"].intensity_range == (-1.8, 4.4)
    assert spec.domains["CT"].intensity_range is None
    write_dataset_json(spec)
    assert load_dataset(tmp_path) == spec
    assert dataset_to_dict(spec)["domains"]["MR"]["intensity_range"] == [-1.8, 4.4]


@pytest.mark.parametrize("value", [[4.4, -1.8], [1.0], "wide", [0, float("inf")], [True, 2]])
def test_bad_intensity_range_is_a_problem(value):
    data = valid()
    data["domains"]["CT"]["intensity_range"] = value
    got = problems_of(data)
    assert (
        len(got) == 1 and got[0].startswith("[CT]") and "'intensity_range' to be [lo, hi] with finite lo < hi" in got[0]
    )
