"""Tests of the text-encoder registry and encoders (tcsa_uda.text.encoders)."""

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from tcsa_uda.errors import ConfigError, MissingPathError
from tcsa_uda.text import encoders
from tcsa_uda.text.encoders import (
    FileTextEncoder,
    TextEncoder,
    TransformerTextEncoder,
    available_encoders,
    encode_grid,
    get_encoder,
    pool_tokens,
    pooling_mode,
)

WORDS = ["a", "of", "computed", "tomography", "background", "myocardium", "left", "ventricle", "blood", "cavity", "."]


def save_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 1-layer BERT (hidden 8) and its WordPiece tokenizer."""
    from transformers import (  # type: ignore[attr-defined]  # transformers 5 has BertTokenizerFast at runtime only
        BertConfig,
        BertModel,
        BertTokenizerFast,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


def save_tiny_clip(folder: Path, with_projection: bool) -> Path:
    """A tiny CLIP (text + vision) or a CLIP text tower without projection, BERT tokenizer."""
    from transformers import (  # type: ignore[attr-defined]  # transformers 5 has BertTokenizerFast at runtime only
        BertTokenizerFast,
        CLIPConfig,
        CLIPModel,
        CLIPTextConfig,
        CLIPTextModel,
    )

    save_tiny_bert(folder)  # for its tokenizer files; the weights are overwritten below
    (folder / "model.safetensors").unlink()
    vocab = len((folder / "vocab.txt").read_text(encoding="utf-8").split())
    text: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        "projection_dim": 6,
        "bos_token_id": 2,
        "eos_token_id": 3,
        "pad_token_id": 0,
    }
    torch.manual_seed(0)
    if with_projection:
        vision = {
            "hidden_size": 8,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 8,
            "patch_size": 4,
            "projection_dim": 6,
        }
        CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=6)).save_pretrained(folder)
    else:
        CLIPTextModel(CLIPTextConfig(**text)).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    enc = get_encoder("minilm")
    enc.encode(["warm up"])  # load once for the module
    return enc


# --- registry ---------------------------------------------------------------------------------


def test_registry_lists_the_three_builtin_encoders():
    assert available_encoders()[:3] == ["minilm", "hf:<folder>", "file:<embeddings.pt>"]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("clip", "found 'clip'"),
        ("", "expected one of"),
        ("hf", "argument is missing"),
        ("minilm:x", "without an argument"),
    ],
)
def test_bad_encoder_names_list_the_valid_ones(name, fragment):
    with pytest.raises(ConfigError) as info:
        get_encoder(name)
    assert fragment in str(info.value)
    assert "hf:<folder>" in str(info.value)


def test_constructing_an_encoder_does_not_load_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(encoders, "load_text_model", lambda folder: calls.append(folder))
    folder = save_tiny_bert(tmp_path / "bert")
    enc = get_encoder(f"hf:{folder}")
    assert enc.identity.startswith(f"hf@{folder.resolve()}#")
    assert calls == []


# --- pooling ----------------------------------------------------------------------------------


def test_pool_tokens_respects_the_mask():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, -100.0]]])  # (1, 3, 2), last token is padding
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(pool_tokens(hidden, mask, "mean"), torch.tensor([[2.0, 4.0]]))
    torch.testing.assert_close(pool_tokens(hidden, mask, "cls"), torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(pool_tokens(hidden, mask, "max"), torch.tensor([[3.0, 6.0]]))
    torch.testing.assert_close(pool_tokens(hidden, mask, "mean_sqrt_len"), torch.tensor([[4.0, 8.0]]) / 2**0.5)
    with pytest.raises(ConfigError, match="'median'"):
        pool_tokens(hidden, mask, "median")


def test_pooling_mode_from_sentence_transformers_config(tmp_path):
    assert pooling_mode(tmp_path) == "mean"
    (tmp_path / "1_Pooling").mkdir()
    cfg = tmp_path / "1_Pooling" / "config.json"
    cfg.write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    assert pooling_mode(tmp_path) == "cls"
    cfg.write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}))
    with pytest.raises(ConfigError, match="expected exactly one"):
        pooling_mode(tmp_path)


def test_packaged_minilm_declares_mean_pooling_and_normalisation():
    folder = encoders.minilm_folder()
    assert pooling_mode(folder) == "mean"
    modules = json.loads((folder / "modules.json").read_text())
    assert modules[-1]["type"].endswith("Normalize")


# --- minilm -----------------------------------------------------------------------------------


def test_minilm_runs_offline_384d_unit_norm_and_deterministic(minilm):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    texts = [
        "A computed tomography of a myocardium.",
        "A computed tomography of a left ventricle blood cavity.",
        "A computed tomography of a myocardium.",
    ]
    vec = minilm.encode(texts)
    assert minilm.dim == 384
    assert vec.shape == (3, 384) and vec.dtype == torch.float32 and not vec.requires_grad
    torch.testing.assert_close(vec.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(vec[0], vec[2], atol=1e-5, rtol=0)  # same prompt, same vector (padding ignored)
    torch.testing.assert_close(minilm.encode(texts[:1])[0], vec[0], atol=1e-5, rtol=0)
    cos = float(vec[0] @ vec[1])
    assert cos < 0.95  # different structures, different vectors


def test_minilm_embeddings_are_semantic(minilm):
    vec = minilm.encode(
        ["A CT scan of the heart muscle.", "A computed tomography of a myocardium.", "A photo of a cat."]
    )
    assert float(vec[0] @ vec[1]) > float(vec[0] @ vec[2]) + 0.3


# --- hf:<folder> ------------------------------------------------------------------------------


def test_hf_missing_folder_names_the_path_and_the_offline_default(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(MissingPathError) as info:
        get_encoder(f"hf:{missing}")
    assert f"model folder {missing} does not exist" in str(info.value)
    assert "'minilm' works offline" in str(info.value)


def test_hf_tiny_bert_mean_pooling_matches_a_manual_forward(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    folder = save_tiny_bert(tmp_path / "bert")
    enc = get_encoder(f"hf:{folder}")
    texts = ["a computed tomography of a myocardium .", "background"]
    vec = enc.encode(texts)
    assert isinstance(enc, TransformerTextEncoder) and enc.dim == 8 and vec.shape == (2, 8)
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)
    torch.testing.assert_close(vec, expected, atol=1e-5, rtol=1e-5)


def test_hf_cls_pooling_config_is_honoured(tmp_path):
    folder = save_tiny_bert(tmp_path / "bert")
    mean_vec = get_encoder(f"hf:{folder}").encode(["a myocardium"])
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    enc = get_encoder(f"hf:{folder}")
    cls_vec = enc.encode(["a myocardium"])
    assert not torch.allclose(mean_vec, cls_vec, atol=1e-4)
    from transformers import AutoModel, AutoTokenizer

    batch = AutoTokenizer.from_pretrained(folder)(["a myocardium"], return_tensors="pt")
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(folder).eval()(**batch).last_hidden_state
    torch.testing.assert_close(cls_vec, torch.nn.functional.normalize(hidden[:, 0], dim=-1), atol=1e-5, rtol=1e-5)


def test_hf_identity_changes_with_the_model_files(tmp_path):
    folder = save_tiny_bert(tmp_path / "bert")
    before = get_encoder(f"hf:{folder}").identity
    assert get_encoder(f"hf:{folder}").identity == before
    assert get_encoder(f"hf:{folder}/../bert").identity == before  # same folder, other spelling
    save_tiny_bert(folder, seed=1)
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert get_encoder(f"hf:{folder}").identity != before


@pytest.mark.parametrize(("with_projection", "dim"), [(True, 6), (False, 8)])
def test_hf_clip_text_tower(tmp_path, with_projection, dim):
    folder = save_tiny_clip(tmp_path / "clip", with_projection)
    enc = get_encoder(f"hf:{folder}")
    vec = enc.encode(["a myocardium", "a left ventricle blood cavity"])
    assert enc.dim == dim and vec.shape == (2, dim)
    torch.testing.assert_close(vec.norm(dim=1), torch.ones(2))
    assert not torch.allclose(vec[0], vec[1], atol=1e-4)


def test_hf_folder_without_config_is_a_config_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"config.json"):
        get_encoder(f"hf:{tmp_path / 'empty'}").encode(["a"])


# --- file:<embeddings.pt> ---------------------------------------------------------------------


def test_file_encoder_checks_shape_against_the_prompts(tmp_path):
    path = tmp_path / "emb.pt"
    torch.save(torch.randn(2, 3, 4), path)
    enc = get_encoder(f"file:{path}")
    assert isinstance(enc, FileTextEncoder) and enc.dim == 4
    grid = [["a", "b", "c"], ["d", "e", "f"]]
    out = encode_grid(enc, grid)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 3))
    with pytest.raises(ConfigError) as info:
        encode_grid(enc, [["a", "b", "c", "d", "e"], ["f", "g", "h", "i", "j"]])
    msg = str(info.value)
    assert str(path.resolve()) in msg and "[2, 5, dim]" in msg and "[2, 3, 4]" in msg


def test_file_encoder_dict_with_prompts_supports_lookup(tmp_path):
    path = tmp_path / "emb.pt"
    emb = torch.nn.functional.normalize(torch.randn(1, 2, 5), dim=-1)
    torch.save({"embeddings": emb, "prompts": [["x", "y"]]}, path)
    enc = get_encoder(f"file:{path}")
    torch.testing.assert_close(enc.encode(["y", "x"]), emb[0].flip(0))
    with pytest.raises(ConfigError, match="unknown"):
        enc.encode(["z"])
    with pytest.warns(UserWarning, match="stored prompts differ"):
        encode_grid(enc, [["x", "other"]])


def test_file_encoder_bad_files(tmp_path):
    with pytest.raises(MissingPathError, match="does not exist"):
        get_encoder(f"file:{tmp_path / 'none.pt'}")
    torch.save({"weights": torch.zeros(1, 1, 1)}, tmp_path / "nokey.pt")
    with pytest.raises(ConfigError, match="key 'embeddings'"):
        _ = get_encoder(f"file:{tmp_path / 'nokey.pt'}").dim
    torch.save(torch.zeros(3, 4), tmp_path / "flat.pt")
    with pytest.raises(ConfigError, match=r"found shape \[3, 4\]"):
        _ = get_encoder(f"file:{tmp_path / 'flat.pt'}").dim
