"""The paper's six settings end to end on miniature downloads (CPU, seconds each).

raw download -> ``tcsa-uda convert`` -> ``prepare`` (32 px) -> the setting's paper config with
overrides (light model, 2 + 2 iterations of adaoutput + tcsa) -> ``evaluate_domain`` on the
target test volumes -> a finite Dice for every class. MM-WHS CT -> MR runs on the SIFA release
conversion, so both MM-WHS converters feed a training run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tcsa_uda.config import load_config
from tcsa_uda.data.convert import convert_abdomen, convert_brats, convert_mmwhs, convert_mmwhs_sifa
from tcsa_uda.data.prepare import prepare_dataset
from tcsa_uda.data.prepared import load_prepared
from tcsa_uda.demo import packaged_config
from tcsa_uda.engine.trainer import train
from tcsa_uda.evaluation.evaluate import evaluate_domain
from tcsa_uda.evaluation.model import load_model
from tcsa_uda.train_config import TrainConfig

SETTINGS = {
    # config file: (dataset, source, target)
    "paper_mmwhs_mr2ct.yaml": ("mmwhs", "MR", "CT"),
    "paper_mmwhs_ct2mr.yaml": ("mmwhs_sifa", "CT", "MR"),
    "paper_abdomen_mr2ct.yaml": ("abdomen", "MR", "CT"),
    "paper_abdomen_ct2mr.yaml": ("abdomen", "CT", "MR"),
    "paper_brats_flair2t2.yaml": ("brats", "FLAIR", "T2"),
    "paper_brats_t22flair.yaml": ("brats", "T2", "FLAIR"),
}
AXIS = {"mmwhs": "coronal", "mmwhs_sifa": "coronal", "abdomen": "axial", "brats": "axial"}


def _convert(name: str, root: Path, raw: SimpleNamespace) -> Path:
    dl, out = root / f"{name}_download", root / name
    if name == "mmwhs":
        shape = (16, 14, 12)
        raw.write_mmwhs(dl, "ct", [1001, 1002, 1003, 1008, 1014, 1019], shape=shape, seed=0)
        raw.write_mmwhs(dl, "mr", [1001, 1002, 1007, 1009, 1018, 1019], shape=shape, seed=1)
        convert_mmwhs(dl, dl, out, progress=False)
    elif name == "mmwhs_sifa":
        raw.write_sifa(dl, size=16, depth=6)
        convert_mmwhs_sifa(dl, out, progress=False)
    elif name == "abdomen":
        for cid in (1, 2, 13, 32, 38):
            raw.write_chaos_case(dl / "CHAOS", cid, rows=16, cols=14, n_slices=8)
        raw.write_btcv(dl / "BTCV", [1, 2, 9, 30, 32, 33, 39], shape=(14, 16, 8))
        convert_abdomen(dl / "CHAOS", dl / "BTCV", out, progress=False)
    else:
        raw.write_brats(dl, 8, shape=(16, 16, 8), missing_seg=False)
        convert_brats(dl, out, progress=False)
    return out


@pytest.fixture(autouse=True)
def _restore_threads():
    """``num_threads=1`` is set process-wide by the trainer; give the other tests their setting back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, SimpleNamespace], Path]:
    """dataset name -> prepared folder, built on first use (shared by the two directions)."""
    root = tmp_path_factory.mktemp("settings")
    cache: dict[str, Path] = {}

    def get(name: str, raw: SimpleNamespace) -> Path:
        if name not in cache:
            dataset = _convert(name, root, raw)
            prepare_dataset(dataset, root / f"{name}_prepared", axis=AXIS[name], size=32, progress=False)
            index = load_prepared(root / f"{name}_prepared")
            g = torch.Generator().manual_seed(0)
            torch.save({"embeddings": torch.randn(2, index.num_classes, 16, generator=g)}, root / f"{name}_text.pt")
            cache[name] = root / f"{name}_prepared"
        return cache[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(SETTINGS))
def test_setting_trains_and_evaluates(config, prepared, raw, tmp_path):
    dataset, source, target = SETTINGS[config]
    prep = prepared(dataset, raw)
    cfg = load_config(
        TrainConfig,
        packaged_config(config),
        [
            f"data.prepared={prep}",
            "data.batch_size=2",
            "model.name=light",
            "model.base_width=8",
            f"text.encoder=file:{prep.parent / f'{dataset}_text.pt'}",
            "stages.0.iterations=2",
            "stages.1.iterations=2",
            "optim.decay_iterations=2",
            "stages.1.options.align_start=1",
            "checkpoint_every=2",
            "log_every=1",
            "tensorboard=false",
            "progress=false",
            "device=cpu",
            "num_threads=1",  # tiny tensors: one thread avoids OpenMP barrier waits on busy cores
        ],
    )
    assert (cfg.data.source, cfg.data.target) == (source, target)
    assert [s.method for s in cfg.stages] == ["adaoutput", "tcsa"]
    result = train(cfg, tmp_path / "run")
    index = load_prepared(prep)
    acc = evaluate_domain(load_model(result.final_checkpoint), index, target, "test")
    summary = acc.summary()
    n_test = len([c for c in index.cases(target, "test") if c.labelled])
    assert summary["n_cases"] == n_test >= 1
    assert sorted(summary["classes"]) == list(range(1, index.num_classes))
    for cid, stats in summary["classes"].items():
        value = stats["dice"]["mean"]
        assert math.isfinite(value) and 0.0 <= value <= 1.0, (config, index.class_names[cid], value)
    assert math.isfinite(summary["class_mean"]["dice"]["mean"])
