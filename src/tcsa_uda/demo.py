"""``tcsa-uda demo``: the main job on the built-in phantom benchmark, no download needed.

phantom -> prepare -> train source-only and TCSA-UDA (light model, CPU) -> evaluate per-volume
3D Dice on the target test volumes (and source-only on the source test volumes as the
reference) -> ``results.md``, ``results.json`` and ``figure.png`` in the output folder.

Every step reuses what an earlier, interrupted run left (phantom and prepare are idempotent, a
finished training run is not repeated, an unfinished one resumes from its last checkpoint). The
output folder must be absent, empty or an earlier demo's, unless ``overwrite``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from tcsa_uda.atomic import atomic_write_json, atomic_write_text
from tcsa_uda.config import load_config
from tcsa_uda.data.contract import DATASET_FILE
from tcsa_uda.data.phantom import generate_phantom
from tcsa_uda.data.prepare import prepare_dataset
from tcsa_uda.data.prepared import PreparedIndex
from tcsa_uda.engine.trainer import train
from tcsa_uda.errors import ConfigError
from tcsa_uda.evaluation.evaluate import evaluate_domain
from tcsa_uda.evaluation.model import LoadedModel, load_model
from tcsa_uda.evaluation.settings import EvalSettings
from tcsa_uda.layout import FINAL
from tcsa_uda.outputs import OutputFolder
from tcsa_uda.train_config import TrainConfig

DIRECTIONS = {"MR2CT": ("MR", "CT"), "CT2MR": ("CT", "MR")}


@dataclass
class DemoSettings:
    """Options of the demo (the CLI's flags).

    Attributes:
        out: output folder.
        direction: ``MR2CT`` or ``CT2MR``.
        seed: seed of the phantom and of training.
        cases: phantom cases per domain.
        shape: phantom volume shape (D, H, W).
        size: slice size for prepare.
        iterations_scale: multiplies every stage's iterations (e.g. 0.1 for a smoke run).
        overrides: extra ``key=value`` overrides applied to both training configs.
        progress: show progress bars.
        overwrite: write into a non-empty folder that an earlier demo did not write.
    """

    out: Path
    direction: str = "MR2CT"
    seed: int = 0
    cases: int = 10
    shape: tuple[int, int, int] = (48, 96, 96)
    size: int = 96
    iterations_scale: float = 1.0
    overrides: tuple[str, ...] = ()
    progress: bool = True
    overwrite: bool = False


def packaged_config(name: str) -> Path:
    """Path of a config shipped in ``tcsa_uda/configs`` (``configs/`` in the repository)."""
    ref = resources.files("tcsa_uda") / "configs" / name
    path = Path(str(ref))
    if not path.is_file():
        raise ConfigError(f"Packaged config {name!r} not found at {path}.")
    return path


def demo_configs(s: DemoSettings, prepared: Path) -> dict[str, TrainConfig]:
    """The source-only and TCSA configs of the demo for ``s.direction``."""
    if s.direction not in DIRECTIONS:
        raise ConfigError(f"direction={s.direction!r}: expected one of {', '.join(DIRECTIONS)}.")
    src, tgt = DIRECTIONS[s.direction]
    common = [
        f"data.prepared={prepared}",
        f"data.source={src}",
        f"data.target={tgt}",
        f"seed={s.seed}",
        f"progress={str(s.progress).lower()}",
    ]
    cfgs = {}
    tag = s.direction.lower()
    for method, file in (("source_only", f"phantom_{tag}_source_only.yaml"), ("tcsa", f"phantom_{tag}.yaml")):
        cfg = load_config(TrainConfig, packaged_config(file), [*common, *s.overrides])
        for stage in cfg.stages:
            stage.iterations = max(1, round(stage.iterations * s.iterations_scale))
        cfgs[method] = cfg
    return cfgs


def run_demo(s: DemoSettings) -> dict[str, Any]:
    """Run the whole demo; returns the results dictionary also written to ``results.json``."""
    if s.direction not in DIRECTIONS:
        raise ConfigError(f"direction={s.direction!r}: expected one of {', '.join(DIRECTIONS)}.")
    out = Path(s.out)
    OutputFolder(out, "demo", overwrite=s.overwrite).claim_folder()
    raw = out / "phantom"
    if not (raw / DATASET_FILE).is_file():
        generate_phantom(raw, seed=s.seed, cases=s.cases, shape=s.shape, progress=s.progress)
    index = prepare_dataset(raw, out / "prepared", axis="axial", size=s.size, progress=s.progress)
    cfgs = demo_configs(s, out / "prepared")
    src, tgt = DIRECTIONS[s.direction]
    models: dict[str, LoadedModel] = {}
    for method, cfg in cfgs.items():
        run_dir = out / "runs" / f"{method}_{s.direction}"
        if not (run_dir / FINAL).is_file():
            train(cfg, run_dir, resume=True)
        models[method] = load_model(run_dir / FINAL)
    results: dict[str, Any] = {
        "direction": s.direction,
        "source": src,
        "target": tgt,
        "seed": s.seed,
        "metric": "per-volume 3D Dice on the original grid, mean over test volumes",
        "model_selection": "last iteration (no selection on target labels)",
        "class_names": list(index.class_names[1:]),
        "methods": {},
    }
    evals = [("source_only", src), ("source_only", tgt), ("tcsa", tgt), ("tcsa", src)]
    for method, domain in evals:
        acc = evaluate_domain(models[method], index, domain, "test", settings=EvalSettings(metrics="dice"))
        summary = acc.summary()
        per_class = {index.class_names[c]: summary["classes"][c]["dice"]["mean"] for c in sorted(summary["classes"])}
        results["methods"].setdefault(method, {})[domain] = {
            "per_class": per_class,
            "mean": summary["class_mean"]["dice"]["mean"],
            "cases": acc.to_rows(),
        }
    atomic_write_json(out / "results.json", _finite(results))
    atomic_write_text(out / "results.md", results_markdown(results))
    write_figure(out / "figure.png", models, index, tgt)
    return results


def _finite(obj: Any) -> Any:
    """JSON has no NaN: write undefined values as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def results_markdown(results: dict[str, Any]) -> str:
    """The demo's table: per-class Dice (%) per method and evaluated domain."""
    classes = results["class_names"]
    src, tgt = results["source"], results["target"]
    head = "| method | evaluated on | " + " | ".join(classes) + " | mean |"
    sep = "|" + "---|" * (len(classes) + 3)
    rows = []
    order = [
        ("source_only", src, "source-only (reference: source test)"),
        ("source_only", tgt, "source-only"),
        ("tcsa", tgt, "TCSA-UDA"),
        ("tcsa", src, "TCSA-UDA"),
    ]
    for method, domain, label in order:
        r = results["methods"][method][domain]
        vals = " | ".join(_pct(r["per_class"][c]) for c in classes)
        rows.append(f"| {label} | {domain} test | {vals} | {_pct(r['mean'])} |")
    gain = results["methods"]["tcsa"][tgt]["mean"] - results["methods"]["source_only"][tgt]["mean"]
    lines = [
        f"# tcsa-uda demo: phantom {src} -> {tgt} (seed {results['seed']})",
        "",
        f"Metric: {results['metric']}. Model selection: {results['model_selection']}.",
        "",
        head,
        sep,
        *rows,
        "",
        f"TCSA-UDA minus source-only on the target ({tgt}) test volumes: {gain * 100:+.1f} Dice points.",
        "",
    ]
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def write_figure(path: Path, models: dict[str, LoadedModel], index: PreparedIndex, domain: str, n: int = 4) -> None:
    """Image, ground truth, source-only and TCSA predictions on ``n`` target test slices."""
    from tcsa_uda.evaluation.figures import plot_overlays
    from tcsa_uda.models.inference import predict_slices

    case = next(c for c in index.cases(domain, "test") if c.labelled)
    img = np.asarray(case.load_image())
    lab = np.asarray(case.load_label())
    fg = [s for s in range(lab.shape[0]) if lab[s].any()]
    picks = [fg[int(i)] for i in np.linspace(0, len(fg) - 1, n)] if fg else list(range(n))
    names = {"source_only": "source-only", "tcsa": "TCSA-UDA"}
    preds = {
        names[m]: predict_slices(lm.model, img[picks], lm.text_for(domain), encoding=lm.input_encoding).argmax(1)
        for m, lm in models.items()
    }
    plot_overlays(
        img[picks],
        lab[picks],
        preds,
        index.class_names,
        [f"{case.id} s{s}" for s in picks],
        path,
        suptitle=f"{domain} test slices (target domain)",
    )
