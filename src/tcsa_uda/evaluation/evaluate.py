"""Evaluate a trained model on the volumes of one domain and split of a prepared dataset.

Every volume is predicted whole (:mod:`tcsa_uda.evaluation.inference`), mapped back to its
original grid and compared with the original label file, so the numbers do not depend on the
slice size used for training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tcsa_uda.data.prepare import PreparedIndex
from tcsa_uda.engine.checkpoint import load_checkpoint
from tcsa_uda.errors import DatasetError
from tcsa_uda.evaluation.inference import original_label, predict_case
from tcsa_uda.evaluation.metrics import MetricAccumulator, compute_case_metrics, dice
from tcsa_uda.models import build_segmenter
from tcsa_uda.text import TextEmbeddings


@dataclass
class LoadedModel:
    """A segmenter restored from a checkpoint, with the text embeddings it was trained with."""

    model: nn.Module
    text: TextEmbeddings
    class_names: list[str]
    checkpoint: dict

    def text_for(self, domain: str, device: torch.device | str = "cpu") -> torch.Tensor:
        return self.text.for_domain(domain).to(device)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the segmenter stored in a checkpoint written by the training engine (eval mode)."""
    ck = load_checkpoint(path, map_location=device)
    text = TextEmbeddings.from_dict(ck["text"])
    model = build_segmenter(ck["model_name"], len(ck["class_names"]), text.dim, **ck.get("model_kwargs", {}))
    model.load_state_dict(ck["model"])
    model.to(device).eval()
    return LoadedModel(model=model, text=text, class_names=list(ck["class_names"]), checkpoint=ck)


def evaluate_domain(
    loaded: LoadedModel,
    index: PreparedIndex,
    domain: str,
    split: str = "test",
    metrics: str = "dice",
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> MetricAccumulator:
    """Per-volume metrics of ``loaded`` on ``domain``/``split``.

    Args:
        metrics: ``dice`` (Dice only, fast) or ``all`` (Dice, ASSD both variants, HD95; in mm).

    Raises:
        DatasetError: the class names differ from the model's, or the split has no labelled case.
    """
    if list(index.class_names) != loaded.class_names:
        raise DatasetError(
            f"{index.root}: classes {list(index.class_names)} differ from the checkpoint's {loaded.class_names}."
        )
    cases = [c for c in index.cases(domain, split) if c.labelled]
    if not cases:
        raise DatasetError(f"{index.root}: no labelled case in {domain}/{split} to evaluate.")
    names = {i: n for i, n in enumerate(loaded.class_names) if i > 0}
    acc = MetricAccumulator(class_names=names, meta={"domain": domain, "split": split, "metrics": metrics})
    text = loaded.text_for(domain, device)
    class_ids = sorted(names)
    for case in cases:
        pred = predict_case(loaded.model, case, text, batch_size=batch_size)
        gt = original_label(index, case)
        if metrics == "all":
            acc.add(case.id, compute_case_metrics(pred, gt, class_ids, spacing=case.spacing))
        else:
            acc.add(case.id, {c: {"dice": dice(pred == c, gt == c)} for c in class_ids})
    return acc
