"""Tests of tcsa_uda.evaluation.figures: metrics loading, curves for 1 and 2 stages, image figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from tcsa_uda.errors import ConfigError
from tcsa_uda.evaluation.figures import (
    class_colors,
    has_vl_diagnostics,
    load_run_metrics,
    plot_gradcam,
    plot_overlays,
    plot_training_curves,
    plot_tsne,
    plot_vl_diagnostics,
)
from tcsa_uda.evaluation.tsne import TsneEmbedding

CLASSES = ["background", "a", "b"]


def _write_stage(run: Path, name: str, rows: list[dict]) -> None:
    folder = run / name
    folder.mkdir(parents=True)
    text = "\n".join(json.dumps(r) for r in rows) + "\n"
    (folder / "metrics.jsonl").write_text(text + '{"step": 9, "kind": "tra', encoding="utf-8")  # torn last line


def _png_shape(path: Path) -> tuple[int, ...]:
    assert path.is_file()
    return imread(path).shape


def _train(steps, **losses):
    base = {"kind": "train", "lr": 0.01, "sec_per_it": 0.1}
    return [{"step": s, **base, **{k: v(s) for k, v in losses.items()}} for s in steps]


def test_one_stage_curves(tmp_path):
    run = tmp_path / "run"
    _write_stage(run, "stage1_source_only", _train(range(1, 6), seg=lambda s: 1.0 / s, loss=lambda s: 2.0 / s))
    (run / "stage2_unfinished").mkdir()  # no metrics.jsonl: left out
    stages = load_run_metrics(run)
    assert [(s.index, s.method, s.last_step, len(s.rows)) for s in stages] == [(1, "source_only", 5, 5)]
    panels = plot_training_curves(stages, tmp_path / "c1.png")
    assert panels == ["seg", "loss"]  # lr and sec_per_it are not losses; no select rows
    assert _png_shape(tmp_path / "c1.png")[2] in (3, 4)


def test_two_stage_curves_with_selection_and_nan(tmp_path):
    run = tmp_path / "run"
    rows2 = _train(range(1, 4), seg=lambda s: 0.5, proto=lambda s: "nan" if s == 1 else 0.1)
    rows2.append({"step": 3, "kind": "select", "target_entropy": 0.4, "source_val_dice": 0.7})
    _write_stage(run, "stage10_tcsa", rows2)  # numeric order: stage 10 after stage 2
    _write_stage(run, "stage2_adaoutput", _train(range(1, 5), seg=lambda s: 1.0, adv=lambda s: 0.01))
    stages = load_run_metrics(run)
    assert [(s.index, s.method, s.last_step) for s in stages] == [(2, "adaoutput", 4), (10, "tcsa", 3)]
    panels = plot_training_curves(stages, tmp_path / "c2.png")
    assert panels == ["seg", "adv", "proto", "selection scores"]
    one = plot_training_curves(stages[:1], tmp_path / "c1.png")
    assert one == ["seg", "adv"]
    assert _png_shape(tmp_path / "c2.png")[0] > _png_shape(tmp_path / "c1.png")[0]  # 4 panels: two rows


def test_curves_without_train_rows_is_an_error(tmp_path):
    _write_stage(tmp_path / "run", "stage1_tcsa", [{"step": 1, "kind": "select", "target_entropy": 0.3}])
    with pytest.raises(ConfigError, match="no 'train' rows"):
        plot_training_curves(load_run_metrics(tmp_path / "run"), tmp_path / "c.png")


def _images(n: int = 2, size: int = 16):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(n, size, size)).astype(np.float32)
    labels = np.zeros((n, size, size), dtype=np.int64)
    labels[:, 4:10, 4:10] = 1
    labels[:, 11:14, 2:6] = 2
    return images, labels


def test_overlays_and_gradcam_png(tmp_path):
    images, labels = _images()
    plot_overlays(images, labels, np.roll(labels, 2, axis=-1), CLASSES, ["s0", "s1"], tmp_path / "o.png")
    h2 = _png_shape(tmp_path / "o.png")[0]
    plot_overlays(images[:1], labels[:1], labels[:1], CLASSES, ["s0"], tmp_path / "o1.png")
    assert h2 > _png_shape(tmp_path / "o1.png")[0]  # one row per slice
    maps = np.random.default_rng(1).uniform(size=(2, 2, 16, 16)).astype(np.float32)
    plot_gradcam(images, maps, [1, 2], CLASSES, ["s0", "s1"], tmp_path / "g.png", ground_truth=labels)
    assert _png_shape(tmp_path / "g.png")[0] > 0
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary file


@pytest.mark.parametrize(
    "kind, match",
    [("overlay_titles", "titles"), ("overlay_shape", "overlay prediction"), ("cam_shape", "Grad-CAM maps")],
)
def test_figure_input_errors(tmp_path, kind, match):
    images, labels = _images()
    with pytest.raises(ConfigError, match=match):
        if kind == "overlay_titles":
            plot_overlays(images, labels, labels, CLASSES, ["only one"], tmp_path / "x.png")
        elif kind == "overlay_shape":
            plot_overlays(images, labels, labels[:, :8], CLASSES, ["a", "b"], tmp_path / "x.png")
        else:
            plot_gradcam(images, np.zeros((2, 3, 16, 16)), [1, 2], CLASSES, ["a", "b"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def _embedding(seed: int) -> TsneEmbedding:
    rng = np.random.default_rng(seed)
    return TsneEmbedding(
        points=rng.normal(size=(30, 2)).astype(np.float32),
        classes=np.repeat([0, 1, 2], 10),
        domains=np.tile([0, 1], 15),
        domain_names=("MR", "CT"),
        perplexity=9.7,
    )


def test_tsne_figure_rows(tmp_path):
    plot_tsne({"before": _embedding(0), "after": _embedding(1)}, CLASSES, tmp_path / "t2.png")
    plot_tsne({"after": _embedding(1)}, CLASSES, tmp_path / "t1.png")
    assert _png_shape(tmp_path / "t2.png")[0] > _png_shape(tmp_path / "t1.png")[0]
    with pytest.raises(ConfigError, match="at least one embedding"):
        plot_tsne({}, CLASSES, tmp_path / "t0.png")


def test_class_colors_distinct():
    colors = class_colors(5)
    assert colors.shape == (5, 4)
    assert len({tuple(c) for c in colors}) == 5


def test_overlays_with_several_predictions(tmp_path):
    import matplotlib.image as mpimg

    images = np.zeros((2, 16, 16), dtype=np.float32)
    labels = np.zeros((2, 16, 16), dtype=np.int64)
    labels[:, 4:8, 4:8] = 1
    one = plot_overlays(images, labels, labels, CLASSES, ["a", "b"], tmp_path / "one.png")
    two = plot_overlays(images, labels, {"x": labels, "y": labels}, CLASSES, ["a", "b"], tmp_path / "two.png")
    assert mpimg.imread(two).shape[1] > mpimg.imread(one).shape[1]  # one more column
    with pytest.raises(ConfigError, match="overlay y"):
        plot_overlays(images, labels, {"x": labels, "y": labels[:, :8]}, CLASSES, ["a", "b"], tmp_path / "bad.png")


def _vl_rows(steps, grad_zero_until: int = 0):
    rows = _train(steps, seg=lambda s: 1.0, vl_s=lambda s: 1e-3 / s, vl_t=lambda s: 2e-3 / s)
    for r in rows:
        s = r["step"]
        r.update(vl_grad_f_vis=0.0 if s <= grad_zero_until else 1e-3 / s, vl_grad_embed=2e-2 / s, vl_grad_text=0.1)
        for d in ("s", "t"):
            for m in ("sv", "st"):
                r.update({f"vl_{d}_{m}_std": 0.05, f"vl_{d}_{m}_min": 0.4, f"vl_{d}_{m}_max": 0.9})
    return rows


@pytest.mark.slow
def test_vl_diagnostics_figure_and_curves_without_diagnostic_panels(tmp_path):
    run = tmp_path / "run"
    _write_stage(run, "stage1_adaoutput", _train(range(1, 4), seg=lambda s: 1.0, adv=lambda s: 0.01))
    _write_stage(run, "stage2_tcsa", _vl_rows(range(1, 6), grad_zero_until=2))
    stages = load_run_metrics(run)
    assert has_vl_diagnostics(stages) and not has_vl_diagnostics(stages[:1])
    titles = plot_vl_diagnostics(stages, tmp_path / "vl.png")
    assert titles[0] == "VL loss" and len(titles) == 4
    assert _png_shape(tmp_path / "vl.png")[2] in (3, 4)
    panels = plot_training_curves(stages, tmp_path / "c.png")
    assert "vl_s" in panels and not [p for p in panels if p.startswith(("vl_grad", "vl_s_s", "vl_t_s"))]


def test_vl_diagnostics_without_rows_is_an_error(tmp_path):
    run = tmp_path / "run"
    _write_stage(run, "stage1_tcsa", _train(range(1, 3), seg=lambda s: 1.0, vl_s=lambda s: 0.1))
    with pytest.raises(ConfigError, match="vl_grad_embed"):
        plot_vl_diagnostics(load_run_metrics(run), tmp_path / "vl.png")
