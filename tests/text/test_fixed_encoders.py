"""Tests of the fixed class embeddings (tcsa_uda.text.fixed_encoders): random, onehot, checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tcsa_uda.data.contract import DatasetSpec, DomainSpec
from tcsa_uda.engine.checkpoint import save_checkpoint
from tcsa_uda.errors import ConfigError, MissingPathError
from tcsa_uda.evaluation.released import release_text
from tcsa_uda.text import TextEmbeddings, available_encoders, encode_dataset_text, get_encoder
from tcsa_uda.text.fixed_encoders import DEFAULT_RANDOM_DIM, parse_random_argument

CLASSES = ["background", "myocardium", "left ventricle"]


def make_spec(classes: list[str] = CLASSES) -> DatasetSpec:
    return DatasetSpec(
        name="tiny",
        labels={name: i for i, name in enumerate(classes)},
        domains={
            "CT": DomainSpec(name="CT", modality="computed tomography", cases=()),
            "MR": DomainSpec(name="MR", modality="magnetic resonance imaging", cases=()),
        },
        root=Path("tiny"),
    )


def test_registry_lists_the_fixed_encoders():
    assert {"random[:<seed>[:<dim>]]", "onehot", "checkpoint:<model.pt>"} <= set(available_encoders())


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("random:x", "random:<seed>:<dim> with integers"), ("random:1:2:3", "with integers"), ("random:0:0", ">= 1"),
     ("random:", "argument is missing"), ("onehot:3", "without an argument"), ("checkpoint", "argument is missing")],
)  # fmt: skip
def test_bad_fixed_encoder_names(name, fragment):
    with pytest.raises(ConfigError, match=fragment):
        get_encoder(name)


def test_random_is_seeded_unit_norm_shared_by_domains_and_not_cached(tmp_path):
    assert parse_random_argument(None) == (0, DEFAULT_RANDOM_DIM)
    assert parse_random_argument("7") == (7, DEFAULT_RANDOM_DIM)
    a = encode_dataset_text(make_spec(), "random:3:32", cache_dir=tmp_path)
    b = encode_dataset_text(make_spec(), "random:3:32", cache_dir=tmp_path)
    c = encode_dataset_text(make_spec(), "random:4:32", cache_dir=tmp_path)
    assert a.embeddings.shape == (2, 3, 32) and a.encoder == "random:3:32"
    torch.testing.assert_close(a.embeddings.norm(dim=-1), torch.ones(2, 3))
    assert torch.equal(a.embeddings, b.embeddings) and not torch.equal(a.embeddings, c.embeddings)
    assert torch.equal(a.embeddings[0], a.embeddings[1])  # a class has one vector in every domain
    assert not (tmp_path / "text").exists()  # nothing cached
    assert encode_dataset_text(make_spec(), "random", cache_dir=tmp_path).dim == DEFAULT_RANDOM_DIM
    with pytest.raises(ConfigError, match="one fixed vector per class"):
        get_encoder("random").encode(["a text"])


def test_onehot_is_the_identity_per_domain(tmp_path):
    enc = get_encoder("onehot")
    with pytest.raises(ConfigError, match="known after encode_grid"):
        _ = enc.dim
    emb = encode_dataset_text(make_spec(), enc, cache_dir=tmp_path)
    assert torch.equal(emb.embeddings, torch.eye(3).expand(2, 3, 3))
    assert enc.dim == 3 and emb.encoder == "onehot"


def _checkpoint(tmp_path: Path, classes: list[str] = CLASSES) -> tuple[Path, torch.Tensor]:
    """A checkpoint as ``import-released`` writes it: the release's (MR, CT) text rows under ``text``."""
    g = torch.Generator().manual_seed(0)
    organ = torch.nn.functional.normalize(torch.randn(2, len(classes), 8, generator=g), dim=-1)
    path = tmp_path / "imported.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(1)}, "text": release_text(organ, classes).to_dict()})
    return path, organ


def test_checkpoint_encoder_picks_rows_by_domain_name_and_records_the_stored_prompts(tmp_path):
    path, organ = _checkpoint(tmp_path)
    # run CT -> MR: domains in the order [CT, MR], the release stores [MR, CT]
    emb = encode_dataset_text(make_spec(), f"checkpoint:{path}", domains=["CT", "MR"], cache_dir=tmp_path)
    torch.testing.assert_close(emb.for_domain("CT"), organ[1])  # re-normalised: equal up to rounding
    torch.testing.assert_close(emb.for_domain("MR"), organ[0])
    assert emb.prompts[0][1] == "released organ_embedding[1] (CT), class 'myocardium'; prompt not published"
    assert emb.encoder.startswith(f"checkpoint:{path.resolve()}#") and "authors' CLIP" in emb.encoder
    assert not (tmp_path / "text").exists()  # not cached: the checkpoint is the file


def test_checkpoint_encoder_errors(tmp_path):
    with pytest.raises(MissingPathError, match="does not exist"):
        get_encoder(f"checkpoint:{tmp_path / 'none.pt'}")
    path, _ = _checkpoint(tmp_path, ["background", "MYO", "LV"])
    with pytest.raises(ConfigError, match=r"expected the dataset's classes .*import-released --classes"):
        encode_dataset_text(make_spec(), f"checkpoint:{path}", cache_dir=tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    good, _ = _checkpoint(other)
    spec = make_spec()
    spec.domains["PET"] = DomainSpec(name="PET", modality="positron emission tomography", cases=())
    with pytest.raises(ConfigError, match=r"missing \['PET'\]"):
        encode_dataset_text(spec, f"checkpoint:{good}", cache_dir=tmp_path)
    no_text = tmp_path / "no_text.pt"
    torch.save({"model": {}}, no_text)
    with pytest.raises(ConfigError, match="with a 'text' record"):
        encode_dataset_text(make_spec(), f"checkpoint:{no_text}", cache_dir=tmp_path)


def test_checkpoint_encoder_never_runs_pickled_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "pickled.pt"
    torch.save({"text": Payload()}, path)
    with pytest.raises(ConfigError, match="weights_only"):
        encode_dataset_text(make_spec(), f"checkpoint:{path}", cache_dir=tmp_path)


def test_a_training_checkpoints_text_round_trips(tmp_path):
    """The text a run recorded (TextEmbeddings.to_dict) is read back as it was, permutation aside."""
    grid = encode_dataset_text(make_spec(), "random:1:4", domains=["MR", "CT"], cache_dir=tmp_path)
    path = tmp_path / "final.pt"
    save_checkpoint(path, {"text": grid.to_dict(), "config": {"seed": 0}})
    back = encode_dataset_text(make_spec(), f"checkpoint:{path}", domains=["MR", "CT"], cache_dir=tmp_path)
    torch.testing.assert_close(back.embeddings, grid.embeddings)
    assert back.prompts == grid.prompts
    assert isinstance(back, TextEmbeddings)
