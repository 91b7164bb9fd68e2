"""Import of the authors' released TCSA-UDA checkpoints, and parity with their forward pass.

The golden file ``data/golden_release_logits.npz`` was produced once, outside this repository, by
running the authors' published model code (github.com/lalitmaurya47/TCSA_UDA at commit c9817fbb:
``MulModSeg2D`` of ``model/multimod_v3.py`` on the DeepLab-v2 of ``model/deeplabv2_v1.py``; the
published file lacks the line that starts the output list of its dynamic-convolution loop, which
their compiled copy has, and that one line was added) on the state dict that
``_release_state.make_state_dict(release_keys.json, seed=0)`` draws, loaded with ``strict=True``,
in eval mode, on the CPU, in float32 (torch 2.13, one thread), with the input
``_release_state.make_input(0)`` of shape (2, 3, 48, 48). It holds, for both text rows (modality
MR = row 0, CT = row 1): the main logits at feature resolution (2, 5, 7, 7) and upsampled to 48 x 48
(bilinear, ``align_corners=True``, as their evaluation does), the aux logits, the text output
``ReLU(text_to_vision(organ_embedding[row]))`` (5, 256), and fingerprints of the input and of the
drawn state dict. Their float32 forward differs from their own float64 forward by up to 3.5e-5.
Nothing of their code is in this repository; ``release_keys.json`` lists the key names and shapes
of their state dict (708 keys), which are facts of their model file.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from tcsa_uda.cli import main
from tcsa_uda.data.io import load_nifti
from tcsa_uda.engine.checkpoint import CheckpointError
from tcsa_uda.errors import ConfigError
from tcsa_uda.evaluation.model import LoadedModel, load_model, model_from_checkpoint
from tcsa_uda.evaluation.released import (
    RELEASE_CLASS_NAMES,
    TEXT_KEY,
    UNUSED_MODULES,
    ReleaseState,
    build_release_model,
    map_release_state,
    project_key,
    read_release_state,
    release_checkpoint,
    release_key,
)
from tcsa_uda.models import TCSASegmenter

DATA = Path(__file__).with_name("data")
TOLERANCE = 1e-4


def _convert_helpers() -> ModuleType:
    """The release-miniature writers of tests/data/convert/conftest.py (real file names)."""
    path = Path(__file__).parents[1] / "data" / "convert" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_convert_helpers", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_release_state", Path(__file__).with_name("_release_state.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return json.loads((DATA / "release_keys.json").read_text())


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(DATA / "golden_release_logits.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def release_state(keys) -> dict[str, torch.Tensor]:
    return GEN.make_state_dict(keys, seed=0)


@pytest.fixture(scope="module")
def network() -> TCSASegmenter:
    return build_release_model()


@pytest.fixture(scope="module")
def mapped(release_state, network) -> ReleaseState:
    return map_release_state(release_state, network)


@pytest.fixture(scope="module")
def imported(mapped) -> LoadedModel:
    """The generated release state dict through the import path (mapping -> checkpoint -> load_model)."""
    return model_from_checkpoint(release_checkpoint(mapped, "MR2CT"))


def test_generator_draws_what_the_golden_file_was_made_from(release_state, golden) -> None:
    x = GEN.make_input(0)
    assert np.array_equal(x.flatten()[:16].numpy(), golden["input_head"])
    assert float(x.double().sum()) == pytest.approx(float(golden["input_sum"][0]), abs=1e-3)
    for key in ("organ_embedding", "backbone.conv1.weight", "backbone.layer3.22.bn3.running_var", "MHA.w_vs.weight"):
        assert np.array_equal(release_state[key].flatten()[:8].numpy(), golden[f"sd_{key.replace('.', '_')}_head"])
    assert np.array_equal(release_state["seg_head.2.bias"].numpy(), golden["sd_last_key"])


def test_key_map_is_one_to_one_and_exhaustive(keys, network, mapped) -> None:
    names = [k[0] for k in keys["keys"]]
    assert len(names) == 708 and keys["num_classes"] == 5
    project = {n: project_key(n) for n in names}
    unused = [n for n in names if n.split(".", 1)[0] in UNUSED_MODULES]
    assert len(unused) == 13 and all(project[n] is None for n in unused)
    assert project[TEXT_KEY] is None
    targets = [p for p in project.values() if p is not None]
    assert len(targets) == len(set(targets)) == len(network.state_dict()) == 694
    assert set(targets) == set(network.state_dict())
    assert all(release_key(p) == n for n, p in project.items() if p is not None)
    assert sorted(mapped.ignored) == sorted(unused)
    # a few rules written out
    assert project["backbone.layer6.decoder.4.1.running_var"] == "embed_head.blocks.13.running_var"
    assert project["backbone.layer5.conv2d_list.3.bias"] == "aux_head.branches.3.bias"
    assert project["MHA.fc.weight"] == "fusion.attn.out_proj.weight"
    assert project["seg_head.2.bias"] == "seg_head.layers.2.bias"


def test_parity_with_the_authors_forward_pass_both_text_rows(imported, golden) -> None:
    """Eval mode, CPU, float32: main, upsampled main, aux and text outputs within 1e-4 of the release's."""
    torch.set_num_threads(1)
    x = GEN.make_input(0)
    assert imported.model.variant == "released" and not imported.model.training
    diffs: dict[str, float] = {}
    with torch.no_grad():
        for domain in ("MR", "CT"):
            out = imported.model(x, imported.text_for(domain))
            up = imported.segment(x, domain=domain)
            diffs[f"main_{domain}"] = float(np.abs(out.main.numpy() - golden[f"main_{domain}"]).max())
            diffs[f"main_up_{domain}"] = float(np.abs(up.numpy() - golden[f"main_up_{domain}"]).max())
            diffs[f"aux_{domain}"] = float(np.abs(out.aux.numpy() - golden["aux"]).max())
            diffs[f"text_{domain}"] = float(np.abs(out.text[0].numpy() - golden[f"text_{domain}"]).max())
    assert max(diffs.values()) < TOLERANCE, diffs
    # the two rows really differ (the test would not notice a swapped row otherwise)
    assert np.abs(golden["main_MR"] - golden["main_CT"]).max() > 100 * TOLERANCE


@pytest.mark.slow
def test_the_paper_variant_does_not_match(mapped, golden) -> None:
    """The attention ReLUs are what the parity depends on: the paper variant is far off."""
    paper = model_from_checkpoint({**release_checkpoint(mapped, "MR2CT"), "model_kwargs": {"variant": "paper"}})
    with torch.no_grad():
        out = paper.model(GEN.make_input(0), paper.text_for("MR"))
    assert np.abs(out.main.numpy() - golden["main_MR"]).max() > 1.0


def test_text_rows_and_direction_are_recorded(imported, mapped, release_state) -> None:
    lm = imported  # MR2CT
    assert (lm.checkpoint["source"], lm.target) == ("MR", "CT")
    assert torch.equal(lm.text_for("MR"), release_state[TEXT_KEY][0])
    assert torch.equal(lm.text_for("CT"), release_state[TEXT_KEY][1])
    assert lm.class_names == list(RELEASE_CLASS_NAMES) and lm.input_encoding == "caffe_bgr"
    assert lm.preprocessing.normalization.to_dict() == {
        "method": "fixed",
        "ranges": {"CT": [-2.8, 3.2], "MR": [-1.8, 4.4]},
    }
    assert (lm.preprocessing.axis, lm.preprocessing.size) == ("coronal", 256)
    assert "oracle" in lm.model_selection()
    ck = release_checkpoint(mapped, "CT2MR")
    assert (ck["source"], ck["target"]) == ("CT", "MR")
    with pytest.raises(ConfigError, match="--direction: expected one of MR2CT, CT2MR, found 'MR2MR'"):
        release_checkpoint(mapped, "MR2MR")
    with pytest.raises(ConfigError, match="the checkpoint has 5 classes, found 2 names"):
        release_checkpoint(mapped, "MR2CT", class_names=["background", "heart"])


def test_recorded_preprocessing_matches_a_folder_prepared_as_reproduce_md_says() -> None:
    """``prepare --axis coronal --size 256 --normalization fixed`` (sifa ranges) fits the imported checkpoint."""
    from tcsa_uda.data.normalize import FIXED_PRESETS, NormalizationSpec
    from tcsa_uda.data.prepare import PrepareConfig
    from tcsa_uda.evaluation.inference import PreprocessingSettings
    from tcsa_uda.evaluation.released import release_preprocessing

    recorded = PreprocessingSettings.from_mapping(release_preprocessing()["prepare"])
    prepared = PrepareConfig(
        Path("d"), Path("o"), axis="coronal", size=256, normalization=NormalizationSpec.fixed(FIXED_PRESETS["sifa"])
    )
    assert recorded.matches(prepared.settings())
    other = PrepareConfig(Path("d"), Path("o"), axis="coronal", size=256)  # percentile_zscore
    assert not recorded.matches(other.settings())


def test_refuses_missing_unexpected_and_misshaped_keys(release_state, network) -> None:
    state = dict(release_state)
    del state["backbone.layer2.1.conv2.weight"]
    del state[TEXT_KEY]
    state["decoder.extra.weight"] = torch.zeros(3, 3)
    state["seg_head.2.weight"] = torch.zeros(4, 64, 1, 1)
    with pytest.raises(CheckpointError) as info:
        map_release_state(state, network, source="ours.pth")
    msg = str(info.value)
    assert msg.startswith("ours.pth: expected the authors' released TCSA-UDA state dict")
    assert "2 missing key(s): organ_embedding (expected [2, 5, 512]); backbone.layer2.1.conv2.weight (expected" in msg
    assert "1 unexpected key(s): decoder.extra.weight (found [3, 3])" in msg
    assert "1 mis-shaped key(s): seg_head.2.weight (expected [5, 64, 1, 1], found [4, 64, 1, 1])" in msg
    assert "\n" not in msg


def test_refuses_a_wrong_dtype_and_a_wrong_text_shape(release_state, network) -> None:
    state = {**release_state, "MHA.fc.bias": torch.zeros(256, dtype=torch.int64), TEXT_KEY: torch.zeros(2, 4, 512)}
    with pytest.raises(CheckpointError) as info:
        map_release_state(state, network)
    assert "MHA.fc.bias (expected dtype torch.float32, found torch.int64)" in str(info.value)
    assert "organ_embedding (expected [2, 5, 512] float, found [2, 4, 512] torch.float32)" in str(info.value)


def test_refuses_non_tensor_values(release_state, network) -> None:
    with pytest.raises(CheckpointError, match=r"expected a state dict of tensors, found other values: epoch \(int\)"):
        map_release_state({**release_state, "epoch": 3}, network)


@pytest.mark.parametrize(
    ("wrap", "how"),
    [
        (lambda sd: sd, "plain state dict"),
        (lambda sd: {"state_dict": sd, "epoch": 7}, "['state_dict']"),
        (lambda sd: {"model": sd}, "['model']"),
        (lambda sd: {"model_state_dict": sd, "optimizer": {"lr": 1.0}}, "['model_state_dict']"),
        (lambda sd: {"model": {"state_dict": sd}}, "['model'], ['state_dict']"),
        (lambda sd: {f"module.{k}": v for k, v in sd.items()}, "'module.' prefix"),
        (lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}, "['state_dict'], 'module.' prefix"),
    ],
)
def test_wrappers_are_unwrapped(tmp_path, wrap, how) -> None:
    sd = {"backbone.conv1.weight": torch.ones(2, 3), "organ_embedding": torch.zeros(2, 5, 4)}
    torch.save(wrap(sd), tmp_path / "ck.pth")
    state, found = read_release_state(tmp_path / "ck.pth")
    assert set(state) == set(sd) and found == how
    assert torch.equal(state["backbone.conv1.weight"], sd["backbone.conv1.weight"])


def test_no_state_dict_inside_is_refused(tmp_path) -> None:
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"expected a state dict \(name -> tensor\).*found list"):
        read_release_state(tmp_path / "list.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(
        CheckpointError, match=r"cannot be read as a torch checkpoint of tensors .*nothing in it was run"
    ):
        read_release_state(tmp_path / "junk.pth")


class _Payload:
    """An object whose unpickling would create a file (a stand-in for code in a checkpoint)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_payload_is_refused_without_running(tmp_path) -> None:
    marker = tmp_path / "payload_ran"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "extra": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"refused: the file holds Python objects .* nothing in it was run"):
        read_release_state(tmp_path / "evil.pth")
    assert not marker.exists()


@pytest.mark.slow
def test_evaluate_and_predict_an_imported_model_in_memory(mapped, tmp_path) -> None:
    """The library path evaluate and predict use, on a tiny synthetic dataset (slices of 32 pixels)."""
    from tcsa_uda.data.contract import load_dataset
    from tcsa_uda.data.phantom import generate_phantom
    from tcsa_uda.evaluation.evaluate import evaluate_dataset
    from tcsa_uda.evaluation.settings import resolve_settings

    lm = model_from_checkpoint(release_checkpoint(mapped, "MR2CT", size=32))
    spec = generate_phantom(tmp_path / "raw", seed=1, cases=4, shape=(16, 24, 24), progress=False)
    acc = evaluate_dataset(lm, load_dataset(tmp_path / "raw"), "CT", settings=resolve_settings("dice", parity="mpscl"))
    rows = acc.to_rows()
    assert len(acc) >= 1 and acc.class_ids == [1, 2, 3, 4]
    assert rows and all(0.0 <= r["dice"] <= 1.0 for r in rows)
    case = spec.domain("CT").cases[0]
    raw = load_nifti(tmp_path / "raw" / case.image, what="image").array
    stack = raw[:, :, :2].transpose(2, 0, 1)  # two slices of the raw volume, not resized
    x = lm.preprocess(stack, domain="CT")
    assert x.shape == (2, 3, *stack.shape[1:]) and float(x.mean()) < -50  # caffe_bgr: far from [-1, 1]
    expected = (stack + 2.8) / 6.0 * 2.0 - 1.0  # fixed CT range, no clipping
    np.testing.assert_allclose(x[:, 0].numpy(), (expected + 1.0) * 127.5 - 104.00698793, rtol=1e-6, atol=1e-3)
    assert lm.segment(x).shape == (2, 5, *stack.shape[1:])


@pytest.mark.slow
def test_import_cli_then_evaluate_and_predict(tmp_path, release_state, capsys) -> None:
    """``import-released`` on a wrapped file (``module.`` prefixes under ``state_dict``), then
    ``convert mmwhs-sifa`` of a miniature of the real MPSCL release, ``evaluate`` (default and
    ``--parity mpscl``) and ``predict`` a converted test volume (~30 s: ResNet-101 builds and
    350 MB checkpoints)."""

    wrapped = {"state_dict": {f"module.{k}": v for k, v in release_state.items()}, "epoch": 1}
    torch.save(wrapped, tmp_path / "ours_MR2CT_best.pth")
    out = tmp_path / "imported.pt"
    argv = ["import-released", str(tmp_path / "ours_MR2CT_best.pth"), "--direction", "MR2CT", "--out", str(out)]
    assert main([*argv, "--size", "32"]) == 0
    text = capsys.readouterr().out
    assert "mapped 694 keys" in text and "row 0 -> MR, row 1 -> CT; source MR, target CT" in text
    assert "ignored 13 keys of the unused modules mha, fusion_ffn, norm:" in text
    assert "  mha.in_proj_weight" in text and "  norm.running_var" in text and "  fusion_ffn.2.bias" in text
    assert "['state_dict'], 'module.' prefix" in text and f"wrote {out}" in text

    lm = load_model(out)
    ck = lm.checkpoint
    assert ck["model_kwargs"] == {"variant": "released"} and ck["imported"]["file"] == "ours_MR2CT_best.pth"
    assert len(ck["imported"]["ignored_keys"]) == 13 and lm.preprocessing.size == 32
    assert lm.preprocessing.axis == "coronal"

    # A miniature of the real MPSCL release (real file names, .nii.gz.npz test volumes), converted.
    write_mpscl = _convert_helpers().write_mpscl
    write_mpscl(tmp_path / "download", size=16, n_train=4, n_val=1, depth=34)
    ds = tmp_path / "dataset"
    assert main(["convert", "mmwhs-sifa", "--root", str(tmp_path / "download"), "--out", str(ds), "--no-progress"]) == 0
    for extra in ([], ["--parity", "mpscl"]):
        ev = tmp_path / f"ev{len(extra)}"
        code = main(["evaluate", str(out), "--dataset", str(ds), "--out", str(ev), "--no-progress", *extra])
        assert code == 0, capsys.readouterr().err
        data = json.loads((ev / "metrics.json").read_text())
        meta = data["meta"]
        assert meta["domain"] == "CT" and meta["predictions"]["input_encoding"] == "caffe_bgr"
        assert meta["predictions"]["preprocessing"]["normalization"]["method"] == "fixed"
        assert len({row["case"] for row in data["rows"]}) == 4  # the four CT test volumes of the literature split
    assert meta["settings"]["parity"] == "mpscl" and meta["settings"]["tail_policy"] == "released_batch32"
    capsys.readouterr()

    image = next((ds / "CT").rglob("*1003*.nii.gz"))
    assert main(["predict", "-c", str(out), "-i", str(image), "-o", str(tmp_path / "pred"), "--no-progress"]) == 0
    labels = load_nifti(tmp_path / "pred" / image.name, what="label").array
    assert labels.shape == load_nifti(image, what="image").array.shape
    assert set(np.unique(labels)) <= set(range(5))
    record = json.loads((tmp_path / "pred" / "predict.json").read_text())
    assert record["domain"] == "CT" and record["input_encoding"] == "caffe_bgr"


def test_import_refuses_a_bad_file_with_one_line(tmp_path, capsys) -> None:
    torch.save({"backbone.conv1.weight": torch.zeros(64, 1, 7, 7)}, tmp_path / "bad.pth")
    code = main(["import-released", str(tmp_path / "bad.pth"), "--direction", "CT2MR", "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "o.pt").exists()
    assert "mis-shaped key(s): backbone.conv1.weight (expected [64, 3, 7, 7], found [64, 1, 7, 7])" in err
    assert "missing key(s): organ_embedding (expected [2, 5, 512])" in err
    assert err.count("\n") == 1
    code = main(["import-released", str(tmp_path / "bad.pth"), "--direction", "MR", "--out", str(tmp_path / "o.pt")])
    assert code == 2 and "--direction: expected one of MR2CT, CT2MR, found 'MR'" in capsys.readouterr().err
