"""Everything a run needs before its first iteration, checked before training starts.

:func:`build_run_inputs` resolves the prepared dataset, checks that the configured domains
exist and differ and that the source has labelled training slices, encodes (or loads from the
cache) the class prompts of both modalities, and returns loader factories. Any problem stops the
run here with a message naming the config key or file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tcsa_uda.data.contract import DatasetSpec, DomainSpec
from tcsa_uda.data.prepared import PreparedIndex, load_prepared
from tcsa_uda.data.slices import SliceDataset
from tcsa_uda.engine.loaders import EndlessLoader
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError
from tcsa_uda.text import TextEmbeddings, encode_dataset_text
from tcsa_uda.train_config import TrainConfig


@dataclass
class RunInputs:
    """Resolved inputs of a run.

    Attributes:
        index: the prepared dataset.
        text: frozen prompt embeddings of every domain, (M, C, D).
        text_source, text_target: (C, D) on the run's device.
        make_loaders: ``(seed, uses_target, target_labels) -> {"source": EndlessLoader, "target"?: EndlessLoader}``;
            target batches carry labels only with ``target_labels`` (a method that trains on them).
        preprocessing: what predict needs to reproduce the input pipeline (the ``prepare``
            settings and the network's ``input_encoding``).
    """

    index: PreparedIndex
    text: TextEmbeddings
    text_source: torch.Tensor
    text_target: torch.Tensor
    make_loaders: Callable[..., dict[str, EndlessLoader]]
    preprocessing: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return list(self.index.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.index.class_names)


def load_run_data(path: str) -> PreparedIndex:
    """The prepared folder of ``data.prepared`` (relative paths also under ``$TCSA_UDA_DATA``).

    Raises:
        ConfigError: ``data.prepared`` is empty.
        MissingPathError / DatasetError: the folder is missing or not a complete prepared folder,
            with the config key named.
    """
    if not path:
        raise ConfigError("data.prepared is empty: give the folder written by `tcsa-uda prepare`.")
    try:
        return load_prepared(path)
    except MissingPathError as exc:
        raise MissingPathError(f"data.prepared={path!r}: {exc}") from exc


def spec_from_index(index: PreparedIndex) -> DatasetSpec:
    """The class and modality part of the dataset description, as recorded by prepare."""
    domains = {name: DomainSpec(name=name, modality=mod, cases=()) for name, mod in index.modalities.items()}
    return DatasetSpec(
        name=index.dataset_name,
        labels=dict(index.labels),
        domains=domains,
        root=index.root,
        class_descriptions=dict(index.class_descriptions),
    )


def build_run_inputs(cfg: TrainConfig, device: torch.device, rank: int = 0) -> RunInputs:
    """Resolve and check the data and text of ``cfg`` (see the module docstring)."""
    index = load_run_data(cfg.data.prepared)
    src, tgt = cfg.data.source, cfg.data.target
    for key, name in (("data.source", src), ("data.target", tgt)):
        if name not in index.modalities:
            raise ConfigError(
                f"{key}={name!r}: no such domain in {index.root}; prepared domains: {', '.join(index.modalities)}."
            )
    if cfg.data.classes is not None and list(cfg.data.classes) != list(index.class_names):
        raise ConfigError(
            f"data.classes={list(cfg.data.classes)} differs from the classes of {index.root}: "
            f"{list(index.class_names)}."
        )
    splits = tuple(cfg.data.train_splits)
    encoding = cfg.model.input_encoding
    src_ds = SliceDataset(index, src, split=splits, with_labels=True, encoding=encoding)
    tgt_ds = SliceDataset(index, tgt, split=splits, with_labels=False, encoding=encoding)
    if len(src_ds) == 0:
        raise DatasetError(f"{index.root}: source domain {src!r} has no labelled slices in splits {list(splits)}.")
    if len(tgt_ds) == 0:
        raise DatasetError(f"{index.root}: target domain {tgt!r} has no slices in splits {list(splits)}.")
    cache = Path(cfg.text.cache_dir) if cfg.text.cache_dir else None
    text = encode_dataset_text(
        spec_from_index(index),
        encoder=cfg.text.encoder,
        template=cfg.text.template,
        use_descriptions=cfg.text.use_descriptions,
        cache_dir=cache,
        domains=[src, tgt],
        shuffle_seed=cfg.text.shuffle_seed if cfg.text.shuffle else None,
    )
    bs, workers = cfg.data.batch_size, cfg.data.num_workers
    pin = device.type == "cuda"  # page-locked batches: asynchronous host-to-GPU copies

    def make_loaders(seed: int, uses_target: bool = True, target_labels: bool = False) -> dict[str, EndlessLoader]:
        loaders = {"source": EndlessLoader(src_ds, bs, seed, workers, name=f"source domain {src!r}", pin_memory=pin)}
        if uses_target:
            # Target labels only for a method that declares it trains on them (an upper bound).
            t_ds = labelled_target() if target_labels else tgt_ds
            loaders["target"] = EndlessLoader(
                t_ds, bs, seed + 1, workers, name=f"target domain {tgt!r}", pin_memory=pin
            )
        return loaders

    def labelled_target() -> SliceDataset:
        ds = SliceDataset(index, tgt, split=splits, with_labels=True, encoding=encoding)
        if len(ds) == 0:
            raise DatasetError(
                f"{index.root}: target domain {tgt!r} has no labelled slices in splits {list(splits)}; the method "
                "trains on target labels (an upper bound) and needs them."
            )
        return ds

    preprocessing = {
        "prepare": dict(index.settings),
        "size": index.size,
        "modalities": dict(index.modalities),
        "input_encoding": encoding,
    }
    return RunInputs(
        index=index,
        text=text,
        text_source=text.for_domain(src).to(device),
        text_target=text.for_domain(tgt).to(device),
        make_loaders=make_loaders,
        preprocessing=preprocessing,
    )
