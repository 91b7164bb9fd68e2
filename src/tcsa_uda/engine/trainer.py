"""The training loop: stages of iteration-based training over endless source/target loaders.

``train(cfg, out_dir)`` runs every stage of ``cfg.stages`` in order. Each stage writes
``<out>/stage<k>_<method>/`` with ``checkpoint_last.pt`` (every ``checkpoint_every`` iterations,
atomically), ``final.pt`` at the end, ``best.pt`` (the best iteration of the label-free selection
criterion, :mod:`tcsa_uda.engine.selection`), ``metrics.jsonl`` and TensorBoard scalars. The
selected checkpoint of a stage (``best.pt``, or ``final.pt`` with ``selection.criterion: last``)
initialises the next stage, and the last stage's selected checkpoint is copied to
``<out>/final.pt``. The resolved configuration is saved as ``<out>/config.yaml``.

Nothing is written before every check passed (:mod:`tcsa_uda.engine.run_folder`): the config,
the data and text, an existing run (refused without ``resume`` or ``overwrite``), on resume the
saved configuration and every checkpoint to be read. A finished stage is skipped on ``resume``;
an unfinished one continues from its last checkpoint (model, method state, optimisers, RNG states
and loader position). Stage ``k > 0`` starts from the seed ``seed + 1000 k`` (+ rank), so its
random streams do not depend on how the earlier stages ran: a run resumed at a stage boundary
equals an uninterrupted one, as does a run resumed within a stage.

A non-finite loss term or weight stops the run with :class:`NonFiniteError`, naming the stage,
the iteration and the term; weights are checked before every save, so the last checkpoint on
disk is the last good one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from tcsa_uda.config import save_config, to_dict
from tcsa_uda.engine.checkpoint import architecture, check_compatible, load_checkpoint, save_checkpoint
from tcsa_uda.engine.device import resolve_device
from tcsa_uda.engine.distributed import DistInfo, any_rank, barrier, check_in_sync, init_distributed, shutdown
from tcsa_uda.engine.logging import MetricsLogger
from tcsa_uda.engine.performance import RunPerformance, setup_performance
from tcsa_uda.engine.run_folder import check_resume_points, check_run_folder, start_run_folder
from tcsa_uda.engine.schedule import set_poly_lr
from tcsa_uda.engine.seed import rng_state, seed_everything, set_rng_state
from tcsa_uda.engine.selection import Selector
from tcsa_uda.engine.setup import RunInputs, build_run_inputs
from tcsa_uda.errors import ConfigError, TcsaUdaError
from tcsa_uda.layout import BEST, CONFIG_FILE, FINAL, LAST, run_checkpoint, selected_checkpoint, stage_dir
from tcsa_uda.methods import MethodContext, UDAMethod, build_method, method_class
from tcsa_uda.models import available_models, build_segmenter
from tcsa_uda.train_config import TrainConfig


class NonFiniteError(TcsaUdaError):
    """A loss term or a weight became NaN or infinite; the run stopped without saving those weights."""


@dataclass
class TrainResult:
    """Where a finished run left its results."""

    out_dir: Path
    final_checkpoint: Path
    stage_dirs: list[Path]


def validate_config(cfg: TrainConfig) -> None:
    """Checks that need no data: method names and their options are valid, the domains are named and differ."""
    if cfg.model.name not in available_models():
        raise ConfigError(f"model.name={cfg.model.name!r}: expected one of {', '.join(available_models())}.")
    for i, stage in enumerate(cfg.stages):
        method_class(stage.method).parse_options(stage.options, f"stages.{i}.options")
    if not cfg.data.source or not cfg.data.target:
        raise ConfigError(
            f"data.source and data.target must name domains; found source={cfg.data.source!r}, "
            f"target={cfg.data.target!r}."
        )
    if cfg.data.source == cfg.data.target:
        raise ConfigError(
            f"data.source and data.target are both {cfg.data.source!r}: adaptation needs two different domains."
        )


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The network options of ``cfg``, as recorded in checkpoints (``model_kwargs``).

    ``variant`` follows the fidelity: ``released`` builds the authors' code-exact forward pass
    (docs/method.md, Paper vs released fidelity).
    """
    kwargs: dict[str, Any] = {"variant": "released" if cfg.fidelity == "released" else "paper"}
    if cfg.model.base_width is not None:
        kwargs["base_width"] = cfg.model.base_width
    return kwargs


def build_model(cfg: TrainConfig, inputs: RunInputs) -> nn.Module:
    weights = Path(cfg.model.weights) if cfg.model.weights else None
    return build_segmenter(cfg.model.name, inputs.num_classes, inputs.text.dim, weights=weights, **model_kwargs(cfg))


def run_architecture(cfg: TrainConfig, inputs: RunInputs) -> dict[str, Any]:
    """What every checkpoint of this run must have been written for (see :func:`check_compatible`)."""
    return architecture(cfg.model.name, model_kwargs(cfg), inputs.class_names, inputs.text.dim)


def checkpoint_payload(
    cfg: TrainConfig,
    inputs: RunInputs,
    model: nn.Module,
    stage_index: int,
    iteration: int,
    method: UDAMethod | None = None,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    loaders: dict[str, Any] | None = None,
    selection: dict[str, Any] | None = None,
    performance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to resume training or to predict without the dataset folder."""
    payload: dict[str, Any] = {
        "config": to_dict(cfg),
        "stage": stage_index,
        "method": cfg.stages[stage_index].method,
        "iteration": iteration,
        "model": model.state_dict(),
        "model_name": cfg.model.name,
        "model_kwargs": model_kwargs(cfg),
        "class_names": inputs.class_names,
        "source": cfg.data.source,
        "target": cfg.data.target,
        "text": inputs.text.to_dict(),
        "preprocessing": inputs.preprocessing,
    }
    bound = upper_bound(cfg, stage_index)
    if bound is not None:  # trained with target labels: flagged wherever the checkpoint is evaluated
        payload["upper_bound"] = bound
        selection = {**selection, "upper_bound": bound} if selection is not None else None
    if selection is not None:
        payload["selection"] = selection
    if performance is not None:
        payload["performance"] = performance  # precision used, loss-scaler state, layout options
    if method is not None:
        payload["method_state"] = method.state_dict()
    if optimizers is not None:
        payload["optimizers"] = {k: o.state_dict() for k, o in optimizers.items()}
    if loaders is not None:
        payload["loaders"] = {k: v.state_dict() for k, v in loaders.items()}
        payload["rng"] = rng_state()
    return payload


def upper_bound(cfg: TrainConfig, stage_index: int) -> str | None:
    """Why the weights of stage ``stage_index`` are an upper bound, or None for a UDA result.

    Stage ``k``'s weights are an upper bound when a method of stages ``0..k`` trains on target
    labels (:attr:`~tcsa_uda.methods.UDAMethod.uses_target_labels`, e.g. ``oracle``).
    """
    # The text never names the method: "oracle" in a selection text means oracle *selection* (tables.is_oracle).
    if not any(method_class(s.method).uses_target_labels for s in cfg.stages[: stage_index + 1]):
        return None
    return "UPPER BOUND: trained with target training labels, not a UDA result"


def train(cfg: TrainConfig, out_dir: Path, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Run every stage of ``cfg``; see the module docstring for the folder layout.

    Args:
        cfg: the run's configuration.
        out_dir: the run folder.
        resume: continue the run in ``out_dir`` (a fresh run when it holds none); the saved
            configuration may differ only in :data:`~tcsa_uda.engine.run_folder.RESUME_MAY_CHANGE`.
        overwrite: replace the run in ``out_dir``; its files are removed only after every check passed.

    Raises:
        ConfigError / DatasetError / MissingPathError: before training starts, for a bad config,
            a missing prepared dataset, a domain or class set that does not match the data, or a
            resume with another configuration.
        RunFolderError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite`` was given.
        CheckpointError: a checkpoint to resume from is unsafe, modified or for another network.
        NonFiniteError: a loss term or weight became non-finite (the last good checkpoint is kept).
    """
    validate_config(cfg)
    out_dir = Path(out_dir)
    check_run_folder(cfg, out_dir, resume=resume, overwrite=overwrite)
    device = resolve_device(cfg.device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    dist_info = init_distributed(device)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    try:
        perf = setup_performance(cfg, device)
        inputs = build_run_inputs(cfg, device, rank=dist_info.rank)
        expected = run_architecture(cfg, inputs)
        if resume:
            check_resume_points(cfg, out_dir, expected)
        seed_everything(cfg.seed + dist_info.rank)
        model = build_model(cfg, inputs).to(device)  # checks the model options and backbone weights
        perf.prepare_model(model)
        # Every check passed: from here on the run folder is written.
        if dist_info.is_main:
            start_run_folder(out_dir, overwrite=overwrite)
            save_config(cfg, out_dir / CONFIG_FILE)
        barrier(dist_info)
        stage_dirs: list[Path] = []
        final = run_checkpoint(out_dir)
        for k, stage in enumerate(cfg.stages):
            sdir = stage_dir(out_dir, k, stage.method)
            stage_dirs.append(sdir)
            if not (resume and (sdir / FINAL).is_file()):
                if k > 0:
                    # A seed of its own: the stage's random streams (new discriminators, dropout) do not
                    # depend on how the earlier stages ran, so a resume at this boundary is exact.
                    seed_everything(cfg.seed + 1000 * k + dist_info.rank)
                    if stage.init == "scratch":
                        model = build_model(cfg, inputs).to(device)
                        perf.prepare_model(model)
                _run_stage(cfg, inputs, model, k, sdir, device, dist_info, resume, perf)
            # The next stage (and the run's final.pt) starts from this stage's selected weights.
            path = selected_checkpoint(sdir)
            state = load_checkpoint(path, map_location=device)
            check_compatible(path, state, expected)
            model.load_state_dict(state["model"])
        if dist_info.is_main:
            state = load_checkpoint(selected_checkpoint(stage_dirs[-1]), map_location="cpu")
            save_checkpoint(final, {k: v for k, v in state.items() if k != "format"})
        barrier(dist_info)
        return TrainResult(out_dir=out_dir, final_checkpoint=final, stage_dirs=stage_dirs)
    finally:
        shutdown(dist_info)


def _run_stage(
    cfg: TrainConfig,
    inputs: RunInputs,
    model: nn.Module,
    k: int,
    sdir: Path,
    device: torch.device,
    dist_info: DistInfo,
    resume: bool,
    perf: RunPerformance,
) -> None:
    stage = cfg.stages[k]
    wrap = None
    if dist_info.enabled:
        ids = [device.index] if device.type == "cuda" else None

        def wrap(m: nn.Module) -> nn.Module:
            return nn.parallel.DistributedDataParallel(m, device_ids=ids)

    amp = perf.start_stage()
    wrapped: nn.Module = perf.compile_model(wrap(model) if wrap is not None else model)
    ctx = MethodContext(
        model=wrapped,
        num_classes=inputs.num_classes,
        text_source=inputs.text_source,
        text_target=inputs.text_target,
        optim=cfg.optim,
        fidelity=cfg.fidelity,
        device=device,
        core=model,
        disc_width=cfg.model.disc_width,
        wrap=wrap,
        precision=amp,
    )
    method = build_method(stage.method, ctx, stage.options, f"stages.{k}.options")
    perf.prepare_model(method.discriminators)
    method.set_log_schedule(cfg.log_every, stage.iterations)
    optimizers = method.build_optimizers()
    loaders = inputs.make_loaders(
        seed=cfg.seed + 7919 * k + 104729 * dist_info.rank,
        uses_target=method.uses_target,
        target_labels=method.uses_target_labels,
    )
    selector = (
        Selector.build(cfg.selection, inputs.index, cfg.data.source, cfg.data.target, cfg.model.input_encoding)
        if dist_info.is_main
        else None
    )
    start = 0
    if resume and (sdir / LAST).is_file():
        state = load_checkpoint(sdir / LAST, map_location=device)
        check_compatible(sdir / LAST, state, run_architecture(cfg, inputs))
        model.load_state_dict(state["model"])
        method.load_state_dict(state["method_state"])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, loader in loaders.items():
            loader.load_state_dict(state["loaders"][name])
        set_rng_state(state["rng"])
        perf.restore(state.get("performance"), str(sdir / LAST))
        start = int(state["iteration"])
        if selector is not None and "selector" in state:
            selector.best_value = float(state["selector"]["best_value"])
            selector.best_iteration = int(state["selector"]["best_iteration"])
    if start == 0 and dist_info.is_main:
        (sdir / BEST).unlink(missing_ok=True)  # a fresh stage never inherits an older run's choice
    logger = MetricsLogger(sdir, tensorboard=cfg.tensorboard) if dist_info.is_main else None
    decay = cfg.optim.decay_iterations or stage.iterations
    model.train()
    method.discriminators.train()
    bar = tqdm(
        total=stage.iterations,
        initial=start,
        desc=f"stage {k + 1}/{len(cfg.stages)} {stage.method}",
        disable=not (cfg.progress and dist_info.is_main),
        dynamic_ncols=True,
    )
    t0 = time.perf_counter()
    try:
        for it in range(start, stage.iterations):
            for opt in optimizers.values():
                set_poly_lr(opt, it, decay, cfg.optim.power)
            batch_s = perf.to_device(next(loaders["source"]))
            batch_t = perf.to_device(next(loaders["target"])) if "target" in loaders else None
            logs = method.training_step(batch_s, batch_t, it + 1, optimizers)
            step = it + 1
            if logger is not None and it == start:  # after the first step: a compile fallback is known
                logger.log(step, perf.log_values(), kind="performance")
            if amp.scaler is not None:
                logs["loss_scale"] = amp.scale
            bad = nonfinite_terms(logs)
            stop = any_rank(dist_info, bool(bad), device)
            if step == stage.iterations and not stop:  # before the last logs, selection and final.pt (e.g. AdaBN)
                logs.update(method.on_stage_end(_target_pass(loaders, device)))
            if logger is not None and (stop or method.is_logged(step)):
                logs["lr"] = method.logged_lr(optimizers)
                logs["sec_per_it"] = (time.perf_counter() - t0) / max(step - start, 1)
                logger.log(step, logs)
            if stop:
                what = f"non-finite loss term(s) {_named(bad)}" if bad else "a non-finite loss term on another rank"
                raise _nonfinite_error(cfg, k, step, sdir, what)
            if selector is not None and (step % cfg.selection.every == 0 or step == stage.iterations):
                _select(cfg, inputs, model, method, selector, k, step, sdir, logger, perf)
            bar.set_postfix({key: f"{logs[key]:.3f}" for key in method.progress_keys if key in logs})
            bar.update(1)
            if step % cfg.checkpoint_every == 0 and step < stage.iterations and dist_info.is_main:
                _check_weights(cfg, k, step, sdir, model, method)
                payload = checkpoint_payload(
                    cfg, inputs, model, k, step, method, optimizers, loaders, performance=perf.record()
                )
                if selector is not None:
                    payload["selector"] = {"best_value": selector.best_value, "best_iteration": selector.best_iteration}
                save_checkpoint(sdir / LAST, payload)
        if dist_info.is_main:
            _check_weights(cfg, k, stage.iterations, sdir, model, method)
            info = {"criterion": "last", "iteration": stage.iterations}
            save_checkpoint(
                sdir / FINAL,
                checkpoint_payload(
                    cfg, inputs, model, k, stage.iterations, method, selection=info, performance=perf.record()
                ),
            )
    finally:
        bar.close()
        if logger is not None:
            logger.close()
    check_in_sync(dist_info, [model, method.discriminators], f"stage {k + 1} ({stage.method})")
    barrier(dist_info)


def _select(
    cfg: TrainConfig,
    inputs: RunInputs,
    model: nn.Module,
    method: UDAMethod,
    selector: Selector,
    k: int,
    step: int,
    sdir: Path,
    logger: MetricsLogger | None,
    perf: RunPerformance | None = None,
) -> None:
    """Score the model (under the run's autocast), log every score, and save ``best.pt`` when the criterion improves."""
    with perf.precision.autocast() if perf is not None else contextlib.nullcontext():
        scores = selector.score(model, inputs.text_source, inputs.text_target, inputs.num_classes)
    if logger is not None:
        logger.log(step, scores, kind="select")
    if cfg.selection.criterion != "last" and selector.update(step, scores):
        _check_weights(cfg, k, step, sdir, model, method)
        info = {"criterion": cfg.selection.criterion, "iteration": step, "value": selector.best_value}
        record = perf.record() if perf is not None else None
        save_checkpoint(
            sdir / BEST, checkpoint_payload(cfg, inputs, model, k, step, method, selection=info, performance=record)
        )


def _target_pass(loaders: dict[str, Any], device: torch.device) -> Iterator[dict[str, Any]]:
    """One epoch of target training batches (none without a target loader), drawn lazily."""
    loader = loaders.get("target")
    if loader is None:
        return
    for _ in range(len(loader.dataset) // loader.batch_size):
        yield _to(next(loader), device)


def nonfinite_terms(logs: Mapping[str, float]) -> dict[str, float]:
    """The logged loss terms of one iteration that are NaN or infinite."""
    return {k: float(v) for k, v in logs.items() if not math.isfinite(float(v))}


def nonfinite_parameters(modules: Iterable[nn.Module]) -> list[str]:
    """Names of the parameters and buffers that hold a NaN or infinite value."""
    bad = []
    for module in modules:
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad.append(name)
    return bad


def _named(values: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _nonfinite_error(cfg: TrainConfig, k: int, step: int, sdir: Path, what: str) -> NonFiniteError:
    last = sdir / LAST
    if last.is_file():
        at = load_checkpoint(last).get("iteration")
        kept = f"the last good checkpoint is {last} (iteration {at}); resume from it with --resume"
    else:
        kept = "no checkpoint of this stage was saved yet"
    return NonFiniteError(
        f"stage {k + 1} ({cfg.stages[k].method}), iteration {step}: {what}; training stopped and these weights "
        f"were not saved ({kept}). Lower optim.lr (now {cfg.optim.lr:g}) or the loss weights, or check the data."
    )


def _check_weights(cfg: TrainConfig, k: int, step: int, sdir: Path, model: nn.Module, method: UDAMethod) -> None:
    """Raise :class:`NonFiniteError` instead of saving non-finite weights."""
    bad = nonfinite_parameters([model, method.discriminators, method.extra])
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise _nonfinite_error(cfg, k, step, sdir, f"non-finite weights in {shown}")


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
