"""Tests of the embedding cache and encode_dataset_text (tcsa_uda.text.cache / .embeddings)."""

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from tcsa_uda.data.contract import DatasetSpec, DomainSpec
from tcsa_uda.errors import ConfigError
from tcsa_uda.text import encoders
from tcsa_uda.text.cache import EmbeddingCache, cache_key
from tcsa_uda.text.embeddings import (
    TextEmbeddings,
    encode_dataset_text,
    load_text_embeddings,
    save_text_embeddings,
    similarity_matrix,
)
from tcsa_uda.text.encoders import register_encoder


def make_spec() -> DatasetSpec:
    return DatasetSpec(
        name="tiny",
        labels={"background": 0, "myocardium": 1, "left ventricle blood cavity": 2},
        domains={
            "CT": DomainSpec(name="CT", modality="computed tomography", cases=()),
            "MR": DomainSpec(name="MR", modality="magnetic resonance imaging", cases=()),
        },
        root=Path("tiny"),
    )


class HashEncoder:
    """Deterministic fake encoder: a text's vector is derived from its SHA-256; counts loads."""

    loads = 0

    def __init__(self, identity: str = "hash-v1") -> None:
        self._identity = identity
        self._loaded = False

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def dim(self) -> int:
        return 4

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        if not self._loaded:  # stands for the expensive model load
            HashEncoder.loads += 1
            self._loaded = True
        rows = [[b - 128.0 for b in hashlib.sha256(t.encode()).digest()[:4]] for t in texts]
        return torch.nn.functional.normalize(torch.tensor(rows), dim=-1)


@pytest.fixture
def counting_registry(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Register ``hash`` whose factory counts its calls; the registry is restored afterwards."""
    monkeypatch.setattr(encoders, "_REGISTRY", dict(encoders._REGISTRY))
    monkeypatch.setattr(HashEncoder, "loads", 0)
    factory_calls: list[str | None] = []

    def factory(argument: str | None) -> HashEncoder:
        factory_calls.append(argument)
        return HashEncoder()

    register_encoder("hash", factory)
    return factory_calls


def test_second_call_hits_the_cache_without_loading_the_encoder(tmp_path, counting_registry):
    first = encode_dataset_text(make_spec(), encoder="hash", cache_dir=tmp_path)
    assert HashEncoder.loads == 1
    assert first.embeddings.shape == (2, 3, 4) and first.domains == ["CT", "MR"]
    assert first.class_names == ["background", "myocardium", "left ventricle blood cavity"]
    assert first.prompts[1][2] == "A magnetic resonance imaging of a left ventricle blood cavity."
    assert len(list((tmp_path / "text").glob("*.pt"))) == 1
    second = encode_dataset_text(make_spec(), encoder="hash", cache_dir=tmp_path)
    assert HashEncoder.loads == 1  # cache hit: no model load
    assert counting_registry == [None, None]
    torch.testing.assert_close(second.embeddings, first.embeddings, rtol=0, atol=0)
    assert second.encoder == "hash-v1"


def test_new_prompts_or_encoder_miss_the_cache(tmp_path, counting_registry):
    encode_dataset_text(make_spec(), encoder="hash", cache_dir=tmp_path)
    encode_dataset_text(make_spec(), encoder="hash", template="{class} in {modality}", cache_dir=tmp_path)
    assert HashEncoder.loads == 2
    encode_dataset_text(make_spec(), encoder="hash", domains=["MR"], cache_dir=tmp_path)
    assert HashEncoder.loads == 3
    encode_dataset_text(make_spec(), encoder=HashEncoder("hash-v2"), cache_dir=tmp_path)
    assert HashEncoder.loads == 4
    assert len(list((tmp_path / "text").glob("*.pt"))) == 4


def test_cache_key_depends_on_identity_domains_and_prompts():
    base = cache_key("enc", ["CT"], [["a", "b"]])
    assert base == cache_key("enc", ["CT"], [["a", "b"]])
    assert (
        len(
            {
                base,
                cache_key("enc2", ["CT"], [["a", "b"]]),
                cache_key("enc", ["MR"], [["a", "b"]]),
                cache_key("enc", ["CT"], [["a", "c"]]),
                cache_key("enc", ["CT"], [["b", "a"]]),
            }
        )
        == 5
    )


def test_unreadable_cache_entry_is_reported_and_recomputed(tmp_path, counting_registry):
    first = encode_dataset_text(make_spec(), encoder="hash", cache_dir=tmp_path)
    (entry,) = (tmp_path / "text").glob("*.pt")
    entry.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable"):
        again = encode_dataset_text(make_spec(), encoder="hash", cache_dir=tmp_path)
    assert HashEncoder.loads == 2
    torch.testing.assert_close(again.embeddings, first.embeddings)
    assert EmbeddingCache(tmp_path).load(entry.stem) is not None  # rewritten


def test_cache_root_from_environment(tmp_path, monkeypatch, counting_registry):
    monkeypatch.setenv("TCSA_UDA_CACHE", str(tmp_path / "env-cache"))
    encode_dataset_text(make_spec(), encoder="hash")
    assert len(list((tmp_path / "env-cache" / "text").glob("*.pt"))) == 1


def test_text_embeddings_round_trip_and_checks(tmp_path):
    emb = TextEmbeddings(
        domains=["CT"],
        class_names=["bg", "heart"],
        prompts=[["p0", "p1"]],
        embeddings=torch.tensor([[[1.0, 0.0], [0.6, 0.8]]], dtype=torch.float64),
        encoder="e",
    )
    assert emb.dim == 2 and emb.embeddings.dtype == torch.float32
    torch.testing.assert_close(emb.for_domain("CT"), torch.tensor([[1.0, 0.0], [0.6, 0.8]]))
    with pytest.raises(ConfigError, match="'MR'"):
        emb.for_domain("MR")
    back = load_text_embeddings(save_text_embeddings(emb, tmp_path / "e.pt"))
    assert back.to_dict()["prompts"] == [["p0", "p1"]] and back.encoder == "e"
    torch.testing.assert_close(back.embeddings, emb.embeddings)
    with pytest.raises(ConfigError, match=r"expected 'embeddings' of shape \[1, 3, D\]"):
        TextEmbeddings(["CT"], ["a", "b", "c"], [["1", "2", "3"]], torch.zeros(1, 2, 4), "e")
    with pytest.raises(ConfigError, match="missing \\['encoder'\\]"):
        TextEmbeddings.from_dict({k: v for k, v in emb.to_dict().items() if k != "encoder"})


def test_similarity_matrix_is_cosine():
    sim = similarity_matrix(torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0]]))
    r = 2**-0.5
    torch.testing.assert_close(sim, torch.tensor([[1.0, r, 0.0], [r, 1.0, -r], [0.0, -r, 1.0]]))
    with pytest.raises(ConfigError, match="expected a \\(C, D\\) tensor"):
        similarity_matrix(torch.zeros(2, 2, 2))


class _TokenStates(torch.nn.Module):
    """Stands for a transformer: token states (N, 2, 3) that depend on the row index only."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        states = torch.arange(input_ids.shape[0] * 6, dtype=torch.float32).reshape(-1, 2, 3)
        return type("Output", (), {"last_hidden_state": states})()


def _fake_tokenizer(texts, **_):
    ones = torch.ones(len(texts), 2, dtype=torch.long)
    return {"input_ids": ones, "attention_mask": ones}


def test_minilm_cache_hit_does_not_load_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real default encoder; its loader is replaced by a counter returning a stand-in model."""
    calls: list[Path] = []

    def counting_loader(folder: Path) -> encoders.LoadedTextModel:
        calls.append(folder)
        return encoders.LoadedTextModel(_fake_tokenizer, _TokenStates(), "auto", "mean", 8, 3)

    monkeypatch.setattr(encoders, "load_text_model", counting_loader)
    first = encode_dataset_text(make_spec(), encoder="minilm", cache_dir=tmp_path)
    second = encode_dataset_text(make_spec(), encoder="minilm", cache_dir=tmp_path)
    assert len(calls) == 1 and calls[0] == encoders.minilm_folder()
    assert first.embeddings.shape == (2, 3, 3)
    assert first.encoder.startswith("minilm@") and second.encoder == first.encoder
    torch.testing.assert_close(second.embeddings, first.embeddings, rtol=0, atol=0)
