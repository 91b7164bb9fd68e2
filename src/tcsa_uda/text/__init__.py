"""Text stage: class prompts, swappable text encoders and cached frozen embeddings.

See docs/method.md section Text and arXiv 2511.05782: each class of each modality is described by a
prompt such as "A computed tomography of a myocardium.", embedded once by a frozen text encoder.
"""

from tcsa_uda.text.cache import EmbeddingCache, cache_key
from tcsa_uda.text.embeddings import (
    TextEmbeddings,
    class_derangement,
    encode_dataset_text,
    load_text_embeddings,
    save_text_embeddings,
    similarity_matrix,
)
from tcsa_uda.text.encoders import (
    DEFAULT_ENCODER,
    FileTextEncoder,
    TextEncoder,
    TransformerTextEncoder,
    available_encoders,
    encode_grid,
    get_encoder,
    register_encoder,
)
from tcsa_uda.text.fixed_encoders import CheckpointTextEncoder, OneHotTextEncoder, RandomTextEncoder
from tcsa_uda.text.prompts import DEFAULT_TEMPLATE, build_prompts, validate_template

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_TEMPLATE",
    "CheckpointTextEncoder",
    "EmbeddingCache",
    "FileTextEncoder",
    "OneHotTextEncoder",
    "RandomTextEncoder",
    "TextEmbeddings",
    "TextEncoder",
    "TransformerTextEncoder",
    "available_encoders",
    "build_prompts",
    "cache_key",
    "class_derangement",
    "encode_dataset_text",
    "encode_grid",
    "get_encoder",
    "load_text_embeddings",
    "register_encoder",
    "save_text_embeddings",
    "similarity_matrix",
    "validate_template",
]
