"""Tests of ``tcsa-uda embed-text DATASET`` (output table, written file, errors)."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tcsa_uda.cli import app, main
from tcsa_uda.data.contract import load_dataset
from tcsa_uda.text.embeddings import encode_dataset_text, load_text_embeddings
from tcsa_uda.text.encoders import encode_grid, get_encoder

CLASSES = {"background": 0, "myocardium": 1, "left ventricle blood cavity": 2}


def make_dataset(root: Path) -> Path:
    """dataset.json only (embed-text reads no images): CT and MR domains, three classes."""
    root.mkdir(parents=True)
    cases = [{"id": "a", "image": "a.nii.gz", "split": "train"}]
    data = {
        "name": "cli-text",
        "labels": CLASSES,
        "class_descriptions": {"myocardium": "muscular wall of the left ventricle"},
        "domains": {
            "CT": {"modality": "computed tomography", "cases": cases},
            "MR": {"modality": "magnetic resonance imaging", "cases": cases},
        },
    }
    (root / "dataset.json").write_text(json.dumps(data), encoding="utf-8")
    return root


def save_tiny_bert(folder: Path) -> Path:
    """A randomly initialised 1-layer BERT (hidden 8) and its WordPiece tokenizer."""
    from transformers import (  # type: ignore[attr-defined]  # transformers 5 has BertTokenizerFast at runtime only
        BertConfig,
        BertModel,
        BertTokenizerFast,
    )

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "of", "computed", "tomography", "myocardium", "."]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_embed_text_prints_tables_and_writes_a_file_the_file_encoder_reads(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    model = save_tiny_bert(tmp_path / "bert")
    out = tmp_path / "emb" / "text.pt"
    args = ["embed-text", str(ds), "--encoder", f"hf:{model}", "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in CLASSES:
        assert name in result.output
    assert "CT (computed tomography): cosine similarity" in result.output
    assert "MR (magnetic resonance imaging): cosine similarity" in result.output
    assert "1: A computed tomography of a myocardium." in result.output
    assert "1.00" in result.output  # diagonal of the cosine matrix, 2 decimals
    assert f"wrote {out}" in result.output

    saved = load_text_embeddings(out)
    assert saved.domains == ["CT", "MR"] and saved.class_names == list(CLASSES) and saved.dim == 8
    direct = encode_dataset_text(load_dataset(ds), encoder=f"hf:{model}", cache_dir=tmp_path / "c")
    torch.testing.assert_close(saved.embeddings, direct.embeddings)
    via_file = encode_grid(get_encoder(f"file:{out}"), saved.prompts)
    torch.testing.assert_close(via_file, direct.embeddings)
    reloaded = encode_dataset_text(load_dataset(ds), encoder=f"file:{out}")
    torch.testing.assert_close(reloaded.embeddings, direct.embeddings)


@pytest.mark.slow
def test_embed_text_descriptions_option(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    model = save_tiny_bert(tmp_path / "bert")
    args = [
        "embed-text",
        str(ds),
        "--encoder",
        f"hf:{model}",
        "--descriptions",
        "--template",
        "{class}",
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1: muscular wall of the left ventricle" in result.output


def test_embed_text_user_errors_exit_2_with_a_message(tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds")
    assert main(["embed-text", str(ds), "--template", "A {organ}."]) == 2
    assert "expected only the placeholders {class} and {modality}" in capsys.readouterr().err
    missing = tmp_path / "no-model"
    assert main(["embed-text", str(ds), "--encoder", f"hf:{missing}"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "'minilm' works offline" in err


def test_embed_text_never_replaces_an_existing_file_without_overwrite(tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds")
    out = tmp_path / "mine.pt"
    out.write_bytes(b"my own file")
    assert main(["embed-text", str(ds), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"error: embed-text --out {out}: the file exists; choose another name, or pass --overwrite to replace it."
    )
    assert out.read_bytes() == b"my own file"
