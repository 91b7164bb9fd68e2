"""Frozen class-prompt embeddings of a dataset: build, cache, store in checkpoints.

:func:`encode_dataset_text` turns a :class:`~tcsa_uda.data.contract.DatasetSpec` into a
:class:`TextEmbeddings` of shape ``(M, C, D)`` (domains x classes x text dim), the text anchors of
TCSA-UDA (arXiv 2511.05782, docs/method.md section Text). Results are cached on disk
(:mod:`tcsa_uda.text.cache`) and the encoder is only loaded when the cache misses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tcsa_uda.atomic import atomic_write_with
from tcsa_uda.data.contract import DatasetSpec
from tcsa_uda.errors import ConfigError, MissingPathError
from tcsa_uda.text.cache import EmbeddingCache, cache_key
from tcsa_uda.text.encoders import DEFAULT_ENCODER, TORCH_LOAD_ERRORS, TextEncoder, encode_grid, get_encoder
from tcsa_uda.text.prompts import DEFAULT_TEMPLATE, build_prompts

_KEYS: tuple[str, ...] = ("embeddings", "domains", "class_names", "prompts", "encoder")


@dataclass
class TextEmbeddings:
    """Frozen prompt embeddings of every class of every domain.

    Attributes:
        domains: domain names, length ``M`` (row order of ``embeddings``).
        class_names: class names ordered by id, background first, length ``C``.
        prompts: ``M x C`` prompt strings that were embedded.
        embeddings: float32 tensor of shape ``(M, C, D)``, unit-norm rows, no gradient.
        encoder: identity of the encoder that produced them.
        permutation: None, or the class-to-prompt assignment of a shuffled run (``text.shuffle``):
            class ``k`` carries the prompt and embedding of class ``permutation[k]``.
    """

    domains: list[str]
    class_names: list[str]
    prompts: list[list[str]]
    embeddings: torch.Tensor
    encoder: str
    permutation: list[int] | None = None

    def __post_init__(self) -> None:
        self.embeddings = _check_shapes(
            self.embeddings, self.domains, self.class_names, self.prompts, "text embeddings"
        )
        if self.permutation is not None and sorted(self.permutation) != list(range(len(self.class_names))):
            raise ConfigError(
                f"text embeddings: expected 'permutation' to be a permutation of 0..{len(self.class_names) - 1}, "
                f"found {self.permutation}"
            )

    def permuted(self, permutation: list[int]) -> TextEmbeddings:
        """A copy whose class ``k`` carries the prompts and embeddings of class ``permutation[k]``.

        Raises:
            ConfigError: ``permutation`` is not a permutation of the class ids, or these embeddings
                are already permuted.
        """
        if self.permutation is not None:
            raise ConfigError(f"text embeddings: already permuted ({self.permutation}); permute the originals")
        if sorted(permutation) != list(range(len(self.class_names))):
            raise ConfigError(
                f"text permutation: expected a permutation of 0..{len(self.class_names) - 1}, found {permutation}"
            )
        return TextEmbeddings(
            domains=list(self.domains),
            class_names=list(self.class_names),
            prompts=[[row[p] for p in permutation] for row in self.prompts],
            embeddings=self.embeddings[:, permutation].clone(),
            encoder=self.encoder,
            permutation=list(permutation),
        )

    @property
    def dim(self) -> int:
        """``D_text``, the embedding width."""
        return int(self.embeddings.shape[-1])

    def for_domain(self, name: str) -> torch.Tensor:
        """The ``(C, D)`` embeddings of domain ``name``.

        Raises:
            ConfigError: ``name`` is not one of :attr:`domains`.
        """
        if name not in self.domains:
            raise ConfigError(f"text embeddings: expected a domain among {self.domains}, found {name!r}")
        return self.embeddings[self.domains.index(name)]

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for ``torch.save`` (checkpoints, ``embed-text --out``, ``file:`` encoder)."""
        out: dict[str, Any] = {
            "embeddings": self.embeddings.clone(),
            "domains": list(self.domains),
            "class_names": list(self.class_names),
            "prompts": [list(r) for r in self.prompts],
            "encoder": self.encoder,
        }
        if self.permutation is not None:
            out["permutation"] = list(self.permutation)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "text embeddings") -> TextEmbeddings:
        """Inverse of :meth:`to_dict`; ``source`` names the file or checkpoint in errors.

        Raises:
            ConfigError: a key is missing or the shapes do not agree.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping with keys {list(_KEYS)}, found {type(data).__name__}")
        missing = [k for k in _KEYS if k not in data]
        if missing:
            raise ConfigError(f"{source}: expected keys {list(_KEYS)}, missing {missing}")
        permutation = data.get("permutation")
        if permutation is not None and not (
            isinstance(permutation, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in permutation)
        ):
            raise ConfigError(f"{source}: expected 'permutation' as a list of class ids, found {permutation!r}")
        return cls(
            domains=[str(d) for d in data["domains"]],
            class_names=[str(c) for c in data["class_names"]],
            prompts=[[str(p) for p in row] for row in data["prompts"]],
            embeddings=data["embeddings"],
            encoder=str(data["encoder"]),
            permutation=None if permutation is None else [int(p) for p in permutation],
        )


def _check_shapes(
    emb: Any, domains: list[str], class_names: list[str], prompts: list[list[str]], source: str
) -> torch.Tensor:
    if not isinstance(emb, torch.Tensor) or emb.ndim != 3 or not emb.is_floating_point():
        found = f"shape {list(emb.shape)} dtype {emb.dtype}" if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise ConfigError(f"{source}: expected 'embeddings' as a float tensor (M, C, D), found {found}")
    expected = [len(domains), len(class_names)]
    if list(emb.shape[:2]) != expected:
        raise ConfigError(
            f"{source}: expected 'embeddings' of shape [{expected[0]}, {expected[1]}, D] "
            f"(domains {domains} x classes {class_names}), found {list(emb.shape)}"
        )
    rows = [len(r) for r in prompts]
    if rows != [len(class_names)] * len(domains):
        raise ConfigError(
            f"{source}: expected 'prompts' as {len(domains)} lists of {len(class_names)} strings, found lengths {rows}"
        )
    return emb.detach().to(dtype=torch.float32, device="cpu").contiguous()


def similarity_matrix(emb: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between every pair of rows.

    Args:
        emb: (C, D) embeddings.

    Returns:
        (C, C) tensor with entries in [-1, 1] (1 on the diagonal for non-zero rows).
    """
    if not isinstance(emb, torch.Tensor) or emb.ndim != 2:
        found = list(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise ConfigError(f"similarity_matrix: expected a (C, D) tensor, found {found}")
    unit = F.normalize(emb.float(), p=2.0, dim=-1, eps=1e-12)
    return unit @ unit.T


def class_derangement(num_classes: int, seed: int) -> list[int]:
    """A seeded permutation of the class ids in which no class keeps its own id (``perm[k] != k``).

    Sattolo's algorithm with a generator seeded by ``seed``: a uniformly drawn cyclic permutation
    (one cycle through every class), so every class is given another class's prompt.

    Raises:
        ConfigError: ``num_classes < 2``.
    """
    if num_classes < 2:
        raise ConfigError(f"text.shuffle: expected at least 2 classes to permute, found {num_classes}")
    g = torch.Generator().manual_seed(int(seed))
    perm = list(range(num_classes))
    for i in range(num_classes - 1, 0, -1):
        j = int(torch.randint(0, i, (1,), generator=g))  # j < i: Sattolo, never the identity at i
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def encode_dataset_text(
    spec: DatasetSpec,
    encoder: str | TextEncoder = DEFAULT_ENCODER,
    template: str = DEFAULT_TEMPLATE,
    use_descriptions: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    domains: list[str] | None = None,
    shuffle_seed: int | None = None,
) -> TextEmbeddings:
    """Embed the prompts of every class of every (selected) domain, using the cache.

    Args:
        spec: the dataset (class names, descriptions, modality phrases).
        encoder: an encoder name (``minilm``, ``hf:<folder>``, ``file:<embeddings.pt>``,
            ``random[:<seed>[:<dim>]]``, ``onehot``, ``checkpoint:<model.pt>``) or an encoder object.
        template: prompt template, see :func:`tcsa_uda.text.prompts.build_prompts`.
        use_descriptions: use ``class_descriptions`` instead of bare class names.
        cache_dir: cache root; default :func:`tcsa_uda.paths.cache_root`.
        domains: domains to embed, in this order; all when None.
        shuffle_seed: when given, the class-to-prompt assignment is permuted by
            :func:`class_derangement` of this seed (the ``text.shuffle`` ablation), the same
            permutation for every domain; the result records it (:attr:`TextEmbeddings.permutation`).

    Returns:
        :class:`TextEmbeddings` with ``embeddings`` of shape (M, C, D).

    Raises:
        ConfigError: bad template, encoder name or precomputed file.
        MissingPathError: an ``hf:`` folder or ``file:`` path does not exist.
    """
    emb = _encode(spec, encoder, template, use_descriptions, cache_dir, domains)
    if shuffle_seed is None:
        return emb
    return emb.permuted(class_derangement(len(emb.class_names), shuffle_seed))


def _encode(
    spec: DatasetSpec,
    encoder: str | TextEncoder,
    template: str,
    use_descriptions: bool,
    cache_dir: str | os.PathLike[str] | None,
    domains: list[str] | None,
) -> TextEmbeddings:
    """:func:`encode_dataset_text` without the shuffle."""
    by_domain = build_prompts(spec, template=template, use_descriptions=use_descriptions, domains=domains)
    names = list(by_domain)
    grid = [by_domain[d] for d in names]
    enc = get_encoder(encoder) if isinstance(encoder, str) else encoder
    by_name = getattr(enc, "encode_domains", None)
    if callable(by_name):  # stored embeddings picked by domain name (checkpoint:), with their own prompts
        tensor, stored = by_name(names, spec.class_names)
        return TextEmbeddings(
            domains=names, class_names=spec.class_names, prompts=stored, embeddings=tensor, encoder=enc.identity
        )
    cacheable = bool(getattr(enc, "cacheable", True))
    cache = EmbeddingCache(cache_dir) if cacheable else None
    key = cache_key(enc.identity, names, grid) if cacheable else ""
    if cache is not None:
        hit = cache.load(key)
        if hit is not None:
            try:
                cached = TextEmbeddings.from_dict(hit, source=str(cache.path(key)))
            except ConfigError:
                cached = None
            if cached is not None and cached.prompts == grid and cached.domains == names:
                return cached
    tensor = encode_grid(enc, grid)  # (M, C, D)
    result = TextEmbeddings(
        domains=names, class_names=spec.class_names, prompts=grid, embeddings=tensor, encoder=enc.identity
    )
    if cache is not None:
        cache.save(key, result.to_dict())
    return result


def save_text_embeddings(emb: TextEmbeddings, path: str | os.PathLike[str]) -> Path:
    """Write ``emb.to_dict()`` with ``torch.save`` atomically (readable by the ``file:`` encoder)."""
    dest = Path(path)
    data = emb.to_dict()
    atomic_write_with(dest, lambda fh: torch.save(data, fh))
    return dest


def load_text_embeddings(path: str | os.PathLike[str]) -> TextEmbeddings:
    """Read a file written by :func:`save_text_embeddings`.

    Raises:
        MissingPathError: the file does not exist.
        ConfigError: it is not a text-embeddings mapping.
    """
    src = Path(path)
    if not src.is_file():
        raise MissingPathError(f"text embeddings file {src} does not exist")
    try:
        data = torch.load(src, map_location="cpu", weights_only=True)
    except TORCH_LOAD_ERRORS as exc:
        raise ConfigError(f"{src}: expected a torch.save file of text embeddings, found: {exc}") from exc
    return TextEmbeddings.from_dict(data, source=str(src))
