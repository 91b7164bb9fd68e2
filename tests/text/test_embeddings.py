"""Tests of the shuffled class-to-prompt assignment (tcsa_uda.text.embeddings, ``text.shuffle``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tcsa_uda.data.contract import DatasetSpec, DomainSpec
from tcsa_uda.errors import ConfigError
from tcsa_uda.text import TextEmbeddings, class_derangement, encode_dataset_text, load_text_embeddings
from tcsa_uda.text.embeddings import save_text_embeddings

CLASSES = ["background", "myocardium", "left atrium", "left ventricle", "aorta"]


def make_spec() -> DatasetSpec:
    return DatasetSpec(
        name="tiny",
        labels={name: i for i, name in enumerate(CLASSES)},
        domains={
            "CT": DomainSpec(name="CT", modality="computed tomography", cases=()),
            "MR": DomainSpec(name="MR", modality="magnetic resonance imaging", cases=()),
        },
        root=Path("tiny"),
    )


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_derangement_moves_every_class_and_is_seeded(n):
    for seed in range(20):
        perm = class_derangement(n, seed)
        assert sorted(perm) == list(range(n)) and all(p != k for k, p in enumerate(perm))
        assert perm == class_derangement(n, seed)
    assert len({tuple(class_derangement(n, s)) for s in range(20)}) > (1 if n > 2 else 0)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        class_derangement(1, 0)


def test_shuffle_permutes_prompts_and_embeddings_of_every_domain_alike(tmp_path):
    plain = encode_dataset_text(make_spec(), "random:0:16", cache_dir=tmp_path)
    shuffled = encode_dataset_text(make_spec(), "random:0:16", cache_dir=tmp_path, shuffle_seed=3)
    perm = class_derangement(len(CLASSES), 3)
    assert shuffled.permutation == perm and plain.permutation is None
    for m in range(2):
        for k, p in enumerate(perm):
            assert shuffled.prompts[m][k] == plain.prompts[m][p] != plain.prompts[m][k]
            assert torch.equal(shuffled.embeddings[m, k], plain.embeddings[m, p])
    assert shuffled.class_names == plain.class_names  # class k is still class k; only its text moved


def test_permutation_is_recorded_and_read_back(tmp_path):
    shuffled = encode_dataset_text(make_spec(), "onehot", cache_dir=tmp_path, shuffle_seed=1)
    assert shuffled.to_dict()["permutation"] == shuffled.permutation
    assert "permutation" not in encode_dataset_text(make_spec(), "onehot", cache_dir=tmp_path).to_dict()
    back = load_text_embeddings(save_text_embeddings(shuffled, tmp_path / "t.pt"))
    assert back.permutation == shuffled.permutation and torch.equal(back.embeddings, shuffled.embeddings)


def test_bad_permutations_are_refused():
    emb = encode_dataset_text(make_spec(), "onehot", cache_dir=None, shuffle_seed=0)
    with pytest.raises(ConfigError, match="already permuted"):
        emb.permuted([1, 0, 2, 3, 4])
    data = emb.to_dict()
    data["permutation"] = [0, 0, 1, 2, 3]
    with pytest.raises(ConfigError, match=r"a permutation of 0\.\.4"):
        TextEmbeddings.from_dict(data)
    data["permutation"] = "1,0"
    with pytest.raises(ConfigError, match="list of class ids"):
        TextEmbeddings.from_dict(data)
