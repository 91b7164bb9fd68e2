"""Tests of the oracle upper bound (tcsa_uda.methods.oracle): it reads target labels and no other method does."""

from __future__ import annotations

import pytest
import torch

from tcsa_uda.losses import source_segmentation_loss
from tcsa_uda.methods import available_methods, build_method, method_class


class RecordingBatch(dict):
    """A batch that records which keys a method reads."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.slow
@pytest.mark.parametrize("name", available_methods())
def test_only_methods_that_declare_it_read_target_labels(make_context, make_batches, name):
    cls = method_class(name)
    method = build_method(name, make_context("light", 3, base_width=8), dict(cls.smoke_options))
    src, tgt = make_batches(2, 48, 3)
    src = RecordingBatch(src)
    tgt = RecordingBatch(tgt, label=src["label"].flip(-1).clone())
    src.read.clear()
    method.training_step(src, tgt, 1, method.build_optimizers())
    assert ("label" in tgt.read) is cls.uses_target_labels, name
    assert cls.uses_target_labels is (name == "oracle")
    if name == "oracle":
        assert not src.read  # the source batch is drawn by the engine but never used


def test_oracle_loss_is_l_seg_on_the_target_batch_with_the_target_text(make_context, make_batches):
    ctx = make_context("light", 3, base_width=8)
    method = build_method("oracle", ctx)
    src, tgt = make_batches(2, 48, 3, seed=1)
    tgt["label"] = src["label"].flip(-1).clone()
    texts = []
    real = ctx.model.forward
    ctx.model.forward = lambda x, text: (texts.append(text), real(x, text))[1]
    out = method.forward(tgt, None)
    loss, logs = method.generator_loss(out, tgt, 1)
    assert len(texts) == 1 and texts[0] is ctx.text_target
    seg, _ = source_segmentation_loss(out.main_s, out.aux_s, tgt["label"], aux_weight=0.1)
    assert loss.item() == pytest.approx(seg.item()) and logs["seg"] == pytest.approx(seg.item())


def test_oracle_without_labelled_target_batches_is_an_engine_error(make_context, make_batches):
    method = build_method("oracle", make_context("light", 3, base_width=8))
    src, tgt = make_batches(2, 48, 3)
    with pytest.raises(RuntimeError, match="needs labelled target batches"):
        method.training_step(src, tgt, 1, method.build_optimizers())
    with pytest.raises(RuntimeError, match="needs labelled target batches"):
        method.training_step(src, None, 1, method.build_optimizers())
    assert torch.is_tensor(src["label"])
