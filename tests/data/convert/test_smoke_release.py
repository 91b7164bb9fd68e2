"""Each layout of the SIFA / MPSCL release, end to end through the command line (CPU, seconds each).

miniature with the real names -> ``convert mmwhs-sifa`` -> ``prepare --normalization fixed --axis coronal``
-> ``train`` the paper config for one iteration per stage in ``released`` fidelity with the light model
-> ``evaluate --parity mpscl`` on the raw dataset and on the prepared folder. The MPSCL tree covers the
numpy slices with their datalists and the ``.npz`` test volumes; the SIFA tree the tfrecords and the
``image_`` / ``gth_`` test NIfTI. Test volumes have 34 slices: 32 predicted, the last 2 left background.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tcsa_uda.cli import main
from tcsa_uda.data.convert.mmwhs import TEST_IDS
from tcsa_uda.demo import packaged_config

LAYOUTS = {
    # layout: (writer, config, target)
    "mpscl": ("write_mpscl", "paper_mmwhs_mr2ct.yaml", "CT"),
    "sifa": ("write_sifa", "paper_mmwhs_ct2mr.yaml", "MR"),
}
ORDER = "myocardium,left atrium blood cavity,left ventricle blood cavity,ascending aorta"


@pytest.fixture(autouse=True)
def _restore_threads():
    """``num_threads=1`` is set process-wide by the trainer; give the other tests their setting back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_release_layout_converts_trains_released_and_evaluates_mpscl(layout, raw, tmp_path: Path) -> None:
    writer, config, target = LAYOUTS[layout]
    getattr(raw, writer)(tmp_path / "download", size=16, n_train=4, n_val=1, depth=34)
    ds, prep, run = tmp_path / "dataset", tmp_path / "prepared", tmp_path / "run"
    assert main(["convert", "mmwhs-sifa", "--root", str(tmp_path / "download"), "--out", str(ds), "--no-progress"]) == 0
    argv = ["prepare", str(ds), "--out", str(prep), "--axis", "coronal", "--size", "32", "--normalization", "fixed"]
    assert main([*argv, "--no-progress"]) == 0
    torch.save({"embeddings": torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))}, tmp_path / "t.pt")
    overrides = [
        f"data.prepared={prep}",
        "data.batch_size=2",
        "model.name=light",
        "model.base_width=8",
        "fidelity=released",
        f"text.encoder=file:{tmp_path / 't.pt'}",
        "stages.0.iterations=1",
        "stages.1.iterations=1",
        "optim.decay_iterations=1",
        "stages.1.options.align_start=0",
        "checkpoint_every=1",
        "log_every=1",
        "tensorboard=false",
        "progress=false",
        "device=cpu",
        "num_threads=1",
    ]
    assert main(["train", str(packaged_config(config)), *overrides, "--out", str(run)]) == 0
    results = {}
    for kind, folder in (("raw", ds), ("prepared", prep)):
        out = tmp_path / f"eval_{kind}"
        argv = ["evaluate", str(run), "--dataset", str(folder), "--out", str(out), "--parity", "mpscl"]
        assert main([*argv, "--class-order", ORDER, "--device", "cpu", "--no-progress"]) == 0
        results[kind] = json.loads((out / "metrics.json").read_text())
    data = results["raw"]
    meta = data["meta"]
    assert meta["domain"] == target and meta["settings"]["parity"] == "mpscl"
    assert meta["settings"]["tail_policy"] == "released_batch32"
    assert meta["tail_slices"] == dict.fromkeys(TEST_IDS[target], 2)  # 34 slices = 32 predicted + 2
    ranges = {"CT": [-2.8, 3.2], "MR": [-1.8, 4.4]}
    assert meta["predictions"]["preprocessing"]["normalization"] == {"method": "fixed", "ranges": ranges}
    assert data["summary"]["n_cases"] == 4
    for row in data["rows"]:
        assert 0.0 <= row["dice"] <= 1.0 and math.isfinite(row["assd_vox_mean_of_means"])
    assert results["prepared"]["rows"] == data["rows"]  # raw and prepared folders: the same numbers
