"""End-to-end tests of the training engine on a tiny prepared phantom (CPU, seconds)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tcsa_uda.config import load_config, read_yaml
from tcsa_uda.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tcsa_uda.engine.run_folder import RunFolderError
from tcsa_uda.engine.trainer import train
from tcsa_uda.errors import ConfigError, MissingPathError
from tcsa_uda.train_config import TrainConfig

pytestmark = pytest.mark.slow  # trainings through the engine: seconds each (README, Tests)


def _cfg(overrides, stages="[{method: source_only, iterations: 3}]", extra=()):
    return load_config(TrainConfig, None, [*overrides, f"stages={stages}", *extra])


def test_two_stage_tcsa_run_writes_everything(tmp_path, tiny_overrides):
    cfg = _cfg(
        tiny_overrides,
        "[{method: adaoutput, iterations: 3}, {method: tcsa, iterations: 4}]",
        ["stages.1.options.align_start=1", "checkpoint_every=2", "log_every=1"],
    )
    res = train(cfg, tmp_path / "run")
    assert res.final_checkpoint.is_file()
    assert read_yaml(tmp_path / "run" / "config.yaml")["stages"][1]["method"] == "tcsa"
    s2 = tmp_path / "run" / "stage2_tcsa"
    all_rows = [json.loads(line) for line in (s2 / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in all_rows if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    select = [r for r in all_rows if r["kind"] == "select"]
    assert [r["step"] for r in select] == [4]  # end of stage (selection.every defaults to 100)
    assert 0.0 <= select[0]["target_aux_agreement"] <= 1.0 and 0.0 <= select[0]["target_entropy"] <= 1.0
    assert "proto" in rows[-1] and "vl_s" in rows[-1] and "vl_t" in rows[-1]
    assert "proto" not in rows[0]  # alignment losses start after the tcsa option align_start iterations
    ck = load_checkpoint(res.final_checkpoint)
    assert ck["class_names"][0] == "background" and ck["method"] == "tcsa"
    assert ck["text"]["embeddings"].shape[-1] == 16


def _stage_start_weights(monkeypatch) -> dict[int, dict[str, torch.Tensor]]:
    """Record the segmenter's weights at the start of every stage (before its first iteration)."""
    import tcsa_uda.engine.trainer as trainer

    seen: dict[int, dict[str, torch.Tensor]] = {}
    real = trainer._run_stage

    def spy(cfg, inputs, model, k, *args, **kwargs):
        seen[k] = {name: t.detach().clone() for name, t in model.state_dict().items()}
        return real(cfg, inputs, model, k, *args, **kwargs)

    monkeypatch.setattr(trainer, "_run_stage", spy)
    return seen


@pytest.mark.parametrize("init", ["previous", "scratch"])
def test_stage_two_starts_from_stage_one_selected_weights(tmp_path, tiny_overrides, monkeypatch, init):
    seen = _stage_start_weights(monkeypatch)
    stages = f"[{{method: source_only, iterations: 2}}, {{method: source_only, iterations: 1, init: {init}}}]"
    train(_cfg(tiny_overrides, stages), tmp_path / "run")
    s1 = load_checkpoint(tmp_path / "run" / "stage1_source_only" / "final.pt")["model"]
    same = all(torch.equal(seen[1][k], s1[k]) for k in s1)
    assert same == (init == "previous")
    # stage 1 itself trained: its start differs from its end
    assert not all(torch.equal(seen[0][k], s1[k]) for k in s1)


def test_resume_continues_where_interrupted(tmp_path, tiny_overrides):
    extra = ["checkpoint_every=2", "log_every=1", "seed=5"]
    full = _cfg(tiny_overrides, "[{method: adaoutput, iterations: 4}]", extra)
    train(full, tmp_path / "full")
    ref = load_checkpoint(tmp_path / "full" / "final.pt")["model"]

    # Interrupted run: keep only the iteration-2 checkpoint of a 4-iteration stage.
    part = _cfg(tiny_overrides, "[{method: adaoutput, iterations: 4}]", extra)
    run = tmp_path / "part"
    train(part, run)
    sdir = run / "stage1_adaoutput"
    (sdir / "final.pt").unlink()
    (run / "final.pt").unlink()
    assert (sdir / "checkpoint_last.pt").is_file()
    assert load_checkpoint(sdir / "checkpoint_last.pt")["iteration"] == 2
    # Leftovers of interrupted atomic writes are removed when the run resumes.
    (run / ".final.pt.tmp-abc123").write_bytes(b"partial")
    (sdir / ".checkpoint_last.pt.tmp-xyz").write_bytes(b"partial")
    train(part, run, resume=True)
    got = load_checkpoint(run / "final.pt")["model"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # bit-exact
    assert not list(run.glob(".*.tmp-*")) and not list(sdir.glob(".*.tmp-*"))


def test_resume_at_a_stage_boundary_equals_an_uninterrupted_run(tmp_path, tiny_overrides):
    """Stage 2 starts from its own seed, so resuming after stage 1 finished is bit-exact."""
    stages = "[{method: source_only, iterations: 2}, {method: adaoutput, iterations: 2}]"
    cfg = _cfg(tiny_overrides, stages, ["seed=5"])
    train(cfg, tmp_path / "full")
    run = tmp_path / "part"
    train(cfg, run)
    shutil.rmtree(run / "stage2_adaoutput")
    (run / "final.pt").unlink()
    train(cfg, run, resume=True)
    ref = load_checkpoint(tmp_path / "full" / "final.pt")["model"]
    got = load_checkpoint(run / "final.pt")["model"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.mark.parametrize(
    "extra, error, match",
    [
        (["stages=[{method: nope, iterations: 1}]"], ConfigError, "valid methods"),
        (["data.target=MR"], ConfigError, "two different domains"),
        (["data.source=PET"], ConfigError, "prepared domains"),
        (["data.classes=[background, liver]"], ConfigError, "differs from the classes"),
        (["data.prepared=does/not/exist"], MissingPathError, "tcsa-uda prepare"),
        (["model.name=unet9000"], ConfigError, "deeplabv2_r101"),
    ],
)
def test_bad_configs_stop_before_training(tmp_path, tiny_overrides, extra, error, match):
    cfg = load_config(TrainConfig, None, [*tiny_overrides, "stages=[{method: source_only, iterations: 1}]", *extra])
    with pytest.raises(error, match=match):
        train(cfg, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # nothing is written before every check passed


def test_label_free_selection_picks_best_and_hands_it_on(tmp_path, tiny_overrides):
    cfg = _cfg(
        tiny_overrides,
        "[{method: adaoutput, iterations: 4}, {method: tcsa, iterations: 2}]",
        ["selection.criterion=target_entropy", "selection.every=1", "log_every=1"],
    )
    train(cfg, tmp_path / "run")
    s1 = tmp_path / "run" / "stage1_adaoutput"
    scores = [json.loads(x) for x in (s1 / "metrics.jsonl").read_text().splitlines()]
    ent = {r["step"]: r["target_entropy"] for r in scores if r["kind"] == "select"}
    assert sorted(ent) == [1, 2, 3, 4]
    best = load_checkpoint(s1 / "best.pt")
    assert best["selection"]["criterion"] == "target_entropy"
    assert best["selection"]["iteration"] == min(ent, key=ent.get)
    assert "oracle" not in scores[-1]  # target test labels are not read unless asked for
    final = load_checkpoint(tmp_path / "run" / "final.pt")
    assert final["selection"]["criterion"] == "target_entropy" and final["method"] == "tcsa"


def test_oracle_selection_is_named(tmp_path, tiny_overrides):
    cfg = _cfg(
        tiny_overrides, "[{method: source_only, iterations: 2}]", ["selection.criterion=oracle", "selection.every=1"]
    )
    train(cfg, tmp_path / "run")
    final = load_checkpoint(tmp_path / "run" / "final.pt")
    assert final["selection"]["criterion"] == "oracle"


def test_released_run_records_variant_encoding_and_shared_bank(tmp_path, tiny_overrides, monkeypatch):
    """fidelity=released builds the released network and BatchNorm discriminators, feeds the
    configured input encoding, and records both so that load_model and evaluate rebuild them."""
    import tcsa_uda.engine.trainer as trainer
    from tcsa_uda.evaluation.model import load_model

    seen: list[tuple[float, float]] = []
    real_build = trainer.build_model

    def spy_build(cfg, inputs):
        model = real_build(cfg, inputs)
        model.register_forward_pre_hook(lambda _m, args: seen.append((float(args[0].min()), float(args[0].max()))))
        return model

    monkeypatch.setattr(trainer, "build_model", spy_build)
    cfg = _cfg(
        tiny_overrides,
        "[{method: adaoutput, iterations: 1}, {method: tcsa, iterations: 2}]",
        ["fidelity=released", "model.input_encoding=caffe_bgr", "stages.1.options.align_start=0"],
    )
    res = train(cfg, tmp_path / "run")
    assert seen and min(lo for lo, _ in seen) < -100.0 and max(hi for _, hi in seen) > 100.0  # caffe range
    ck = load_checkpoint(res.final_checkpoint)
    assert ck["model_kwargs"]["variant"] == "released"
    assert ck["preprocessing"]["input_encoding"] == "caffe_bgr"
    assert "vl.bank" in ck["method_state"]["extra"] and "vl_source.bank" not in ck["method_state"]["extra"]
    assert any(k.endswith("running_var") for k in ck["method_state"]["discriminators"])  # BatchNorm PatchGANs
    loaded = load_model(res.final_checkpoint)
    assert loaded.model.variant == "released" and loaded.model.fusion.attn.activation
    assert loaded.input_encoding == "caffe_bgr"


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_existing_run_is_refused_without_resume_or_overwrite(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    train(_cfg(tiny_overrides, "[{method: source_only, iterations: 1}]"), run)
    before = _snapshot(run)
    cfg = _cfg(tiny_overrides, "[{method: source_only, iterations: 2}]")
    with pytest.raises(
        RunFolderError,
        match=r"already holds a run \(config.yaml, final.pt, stage1_source_only\).*--resume.*--overwrite",
    ):
        train(cfg, run)
    # --overwrite with a config that fails validation: the old run is left as it was
    bad = _cfg(tiny_overrides, "[{method: source_only, iterations: 2}]", ["data.source=PET"])
    with pytest.raises(ConfigError, match="PET"):
        train(bad, run, overwrite=True)
    assert _snapshot(run) == before
    # a valid --overwrite replaces the run, including the folders of stages the new config lacks
    (run / "stage2_tcsa").mkdir()
    (run / "notes.txt").write_text("mine")
    train(cfg, run, overwrite=True)
    assert not (run / "stage2_tcsa").exists() and (run / "notes.txt").read_text() == "mine"
    assert load_checkpoint(run / "final.pt")["iteration"] == 2
    rows = (run / "stage1_source_only" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows if json.loads(r)["kind"] == "train"] == [2]  # not appended
    with pytest.raises(ConfigError, match="give one of them"):
        train(cfg, run, resume=True, overwrite=True)


def test_resume_refuses_another_config_and_lists_the_keys(tmp_path, tiny_overrides):
    stages = "[{method: source_only, iterations: 1}, {method: adaoutput, iterations: 2}]"
    run = tmp_path / "run"
    train(_cfg(tiny_overrides, stages, ["checkpoint_every=1"]), run)
    (run / "stage2_adaoutput" / "final.pt").unlink()
    (run / "final.pt").unlink()
    before = _snapshot(run)
    other = _cfg(tiny_overrides, stages, ["checkpoint_every=1", "optim.lr=0.001", "data.target=MR", "data.source=CT"])
    with pytest.raises(ConfigError) as info:
        train(other, run, resume=True)
    message = str(info.value)
    assert "differs from the run's" in message and "3 key(s)" in message
    assert "optim.lr: saved 0.00025, now 0.001" in message and "data.source: saved 'MR', now 'CT'" in message
    finished = _cfg(tiny_overrides, "[{method: source_only, iterations: 5}, {method: adaoutput, iterations: 2}]")
    with pytest.raises(ConfigError, match=r"stages.0.iterations: saved 1, now 5"):
        train(finished, run, resume=True)
    assert _snapshot(run) == before
    # iterations of the unfinished stage and logging keys may change
    longer = _cfg(tiny_overrides, "[{method: source_only, iterations: 1}, {method: adaoutput, iterations: 3}]",
                  ["checkpoint_every=2", "log_every=1"])  # fmt: skip
    train(longer, run, resume=True)
    assert load_checkpoint(run / "final.pt")["iteration"] == 3
    assert read_yaml(run / "config.yaml")["stages"][1]["iterations"] == 3


def test_resume_refuses_a_checkpoint_of_another_network(tmp_path, tiny_overrides):
    cfg = _cfg(tiny_overrides, "[{method: source_only, iterations: 3}]", ["checkpoint_every=2"])
    run = tmp_path / "run"
    train(cfg, run)
    sdir = run / "stage1_source_only"
    (sdir / "final.pt").unlink()
    last = load_checkpoint(sdir / "checkpoint_last.pt")
    last["model_kwargs"] = {"variant": "paper", "base_width": 4}
    last["class_names"] = [*last["class_names"][:-1], "spleen"]
    save_checkpoint(sdir / "checkpoint_last.pt", last)
    config_before = (run / "config.yaml").read_bytes()
    with pytest.raises(CheckpointError) as info:
        train(cfg, run, resume=True)
    message = str(info.value)
    assert "checkpoint_last.pt was written for another network or class set" in message
    expected = (
        "model_kwargs: checkpoint {'variant': 'paper', 'base_width': 4}, expected {'variant': 'paper', 'base_width': 8}"
    )
    assert expected in message and "spleen" in message
    assert (run / "config.yaml").read_bytes() == config_before


# --- method hooks the engine honours (uses_target_labels, the log schedule, on_stage_end) ----------


def _train_rows(run, stage_folder):
    lines = (run / stage_folder / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


def test_only_the_oracle_gets_labelled_target_batches_and_its_run_is_an_upper_bound(
    tmp_path, tiny_overrides, monkeypatch
):
    from tcsa_uda.evaluation.model import load_model
    from tcsa_uda.methods.base import UDAMethod
    from tcsa_uda.methods.oracle import Oracle

    seen: list[tuple[str, bool]] = []
    for cls in (UDAMethod, Oracle):
        real = cls.training_step

        def spy(self, batch_s, batch_t, iteration, optimizers, real=real, cls=cls):
            if (cls is Oracle) == (type(self) is Oracle):  # the outer call of each method
                seen.append((self.name, batch_t is not None and "label" in batch_t))
            return real(self, batch_s, batch_t, iteration, optimizers)

        monkeypatch.setattr(cls, "training_step", spy)
    train(
        _cfg(tiny_overrides, "[{method: adaoutput, iterations: 1}, {method: oracle, iterations: 2}]"), tmp_path / "run"
    )
    assert seen == [("adaoutput", False), ("oracle", True), ("oracle", True)]
    final = load_checkpoint(tmp_path / "run" / "final.pt")
    assert final["upper_bound"].startswith("UPPER BOUND") and final["selection"]["upper_bound"] == final["upper_bound"]
    assert "UPPER BOUND" in load_model(tmp_path / "run" / "final.pt").model_selection()
    stage1 = load_checkpoint(tmp_path / "run" / "stage1_adaoutput" / "final.pt")
    assert "upper_bound" not in stage1 and "upper_bound" not in stage1["selection"]


def test_adabn_ends_its_stage_with_target_statistics_on_source_only_weights(tmp_path, tiny_overrides):
    from tcsa_uda.data.prepared import load_prepared

    for method in ("source_only", "adabn"):
        train(_cfg(tiny_overrides, f"[{{method: {method}, iterations: 2}}]", ["log_every=1"]), tmp_path / method)
    so = load_checkpoint(tmp_path / "source_only" / "final.pt")["model"]
    ada = load_checkpoint(tmp_path / "adabn" / "final.pt")["model"]
    stats = [k for k in so if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(torch.equal(so[k], ada[k]) for k in so if k not in stats)  # training was source-only
    assert all(not torch.equal(so[k], ada[k]) for k in stats if k.endswith("running_mean"))
    rows = _train_rows(tmp_path / "adabn", "stage1_adabn")
    idx = load_prepared(tiny_overrides[0].split("=", 1)[1])
    slices = sum(c.n_slices for c in idx.cases("CT", "train"))
    assert "adabn_batches" not in rows[0] and rows[1]["adabn_batches"] == slices // 2  # one pass, batch size 2


def test_vl_diagnostics_follow_the_log_schedule(tmp_path, tiny_overrides):
    stages = "[{method: tcsa, iterations: 5, options: {align_start: 0}}]"
    train(_cfg(tiny_overrides, stages, ["log_every=2"]), tmp_path / "run")
    rows = _train_rows(tmp_path / "run", "stage1_tcsa")
    assert [r["step"] for r in rows] == [2, 4, 5]
    assert all({"vl_s", "vl_grad_embed", "vl_grad_text", "vl_grad_f_vis"} <= set(r) for r in rows)


def test_a_runs_text_can_be_reused_with_the_checkpoint_encoder(tmp_path, tiny_overrides):
    train(_cfg(tiny_overrides, "[{method: source_only, iterations: 1}]"), tmp_path / "a")
    first = load_checkpoint(tmp_path / "a" / "final.pt")["text"]
    extra = [f"text.encoder=checkpoint:{tmp_path / 'a' / 'final.pt'}", "text.shuffle=true"]
    train(_cfg(tiny_overrides, "[{method: source_only, iterations: 1}]", extra), tmp_path / "b")
    second = load_checkpoint(tmp_path / "b" / "final.pt")["text"]
    perm = second["permutation"]
    assert sorted(perm) == list(range(len(perm))) and all(p != k for k, p in enumerate(perm))
    torch.testing.assert_close(second["embeddings"], first["embeddings"][:, perm])
    assert second["encoder"].startswith("checkpoint:")
