"""``tcsa-uda embed-text DATASET``: embed the class prompts of a dataset and show their similarity.

Builds one prompt per class and modality, embeds them with the chosen encoder (cached), prints
per modality the prompts and their cosine-similarity matrix, and with ``--out`` writes the
embeddings as a ``torch.save`` mapping that the ``file:`` encoder reads back (an existing file
is replaced only with ``--overwrite``).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tcsa_uda.cli.app import app
from tcsa_uda.data.contract import load_dataset
from tcsa_uda.outputs import check_new_file
from tcsa_uda.text.embeddings import TextEmbeddings, encode_dataset_text, save_text_embeddings, similarity_matrix
from tcsa_uda.text.encoders import DEFAULT_ENCODER
from tcsa_uda.text.prompts import DEFAULT_TEMPLATE


def similarity_table(emb: TextEmbeddings, domain: str, modality: str) -> Table:
    """A rich table of the (C, C) prompt cosine similarities of ``domain``, 2 decimals."""
    sim = similarity_matrix(emb.for_domain(domain))  # (C, C)
    table = Table(title=Text(f"{domain} ({modality}): cosine similarity of the class prompts"))
    table.add_column("class", style="bold", no_wrap=True)
    for name in emb.class_names:
        table.add_column(Text(name), justify="right")  # Text: names are not rich markup
    for i, name in enumerate(emb.class_names):
        table.add_row(Text(name), *(f"{v:.2f}" for v in sim[i].tolist()))
    return table


def _console_for(emb: TextEmbeddings) -> Console:
    console = Console()
    if console.is_terminal:
        return console
    # Piped or captured output: make the table wide enough that class names are not folded.
    label = max(len(n) for n in emb.class_names)
    needed = label + sum(max(len(n), 5) + 3 for n in emb.class_names) + 8
    return Console(width=max(console.width, needed))


@app.command("embed-text")
def embed_text_command(
    dataset: Path = typer.Argument(..., help="Dataset folder holding dataset.json (or the path of the file)."),
    encoder: str = typer.Option(
        DEFAULT_ENCODER,
        "--encoder",
        help="Text encoder: minilm (offline default), hf:<folder> or file:<embeddings.pt>.",
    ),
    template: str = typer.Option(
        DEFAULT_TEMPLATE, "--template", help="Prompt template with {class} and optionally {modality}."
    ),
    descriptions: bool = typer.Option(
        False, "--descriptions/--no-descriptions", help="Use class_descriptions of dataset.json instead of class names."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the embeddings here (torch.save; readable by file:)."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Embedding cache folder (default $TCSA_UDA_CACHE or ./.tcsa_uda_cache)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the --out file when it exists."),
) -> None:
    """Embed one prompt per class and modality; print the prompt similarity per modality."""
    if out is not None:
        check_new_file(out, "embed-text", overwrite=overwrite)  # before the (slow) encoding
    spec = load_dataset(dataset)
    emb = encode_dataset_text(
        spec, encoder=encoder, template=template, use_descriptions=descriptions, cache_dir=cache_dir
    )
    console = _console_for(emb)
    console.print(f"encoder: {emb.encoder} (dim {emb.dim})", highlight=False, markup=False)
    for m, domain in enumerate(emb.domains):
        console.print(f"\n{domain} prompts:", highlight=False, markup=False)
        for c, prompt in enumerate(emb.prompts[m]):
            console.print(f"  {c}: {prompt}", highlight=False, markup=False)
        console.print(similarity_table(emb, domain, spec.domain(domain).modality))
    if out is not None:
        path = save_text_embeddings(emb, out)
        console.print(f"\nwrote {path}", highlight=False, markup=False)
