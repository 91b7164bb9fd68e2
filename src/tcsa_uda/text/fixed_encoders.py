"""Fixed class embeddings that are not computed from the prompts: the text controls of the ablations.

Does the language in TCSA-UDA (arXiv 2511.05782) matter, or only that each class has some fixed
vector? These encoders replace the text encoder while keeping everything else (docs/method.md,
Text; registered in :mod:`tcsa_uda.text.encoders`'s registry when :mod:`tcsa_uda.text` is imported):

``random[:<seed>[:<dim>]]``  one fixed Gaussian vector per class, L2-normalised, drawn from a
                             generator seeded with ``seed`` (default 0), width ``dim`` (default
                             512, CLIP's); the same vector for a class in every domain.
``onehot``                   the one-hot vector of the class id, width ``C``; the same in every
                             domain (every pair of classes equally dissimilar).
``checkpoint:<model.pt>``    the text embeddings stored in a checkpoint (a training run's
                             ``final.pt`` or an ``import-released`` checkpoint holding the authors'
                             CLIP embeddings), read with ``torch.load(weights_only=True)``; rows are
                             picked by domain name and the class names must match the dataset's.

None of them is cached (they cost nothing or are a file already) and none loads a model. The
prompts are still built and recorded with the embeddings, except for ``checkpoint:``, which
records the checkpoint's own prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tcsa_uda.errors import ConfigError, MissingPathError
from tcsa_uda.text.encoders import TORCH_LOAD_ERRORS, TextEncoder, l2_normalise, register_encoder

__all__ = ["CheckpointTextEncoder", "OneHotTextEncoder", "RandomTextEncoder", "parse_random_argument"]

DEFAULT_RANDOM_DIM = 512
"""Width of the ``random`` vectors when not given (CLIP's text width, as in the paper)."""


def _grid_shape(prompts: Sequence[Sequence[str]], who: str) -> tuple[int, int]:
    rows = [len(r) for r in prompts]
    if not rows or len(set(rows)) != 1 or rows[0] == 0:
        raise ConfigError(f"{who}: expected the same non-zero number of prompts per domain, found {rows}")
    return len(rows), rows[0]


def _no_free_text(who: str) -> ConfigError:
    return ConfigError(
        f"text encoder {who!r}: gives one fixed vector per class, not per text; it encodes a domains x classes "
        "grid of class prompts only (encode_dataset_text, encode_grid)"
    )


def parse_random_argument(argument: str | None) -> tuple[int, int]:
    """``seed`` and ``dim`` of ``random[:<seed>[:<dim>]]``.

    Raises:
        ConfigError: not one or two integers, or ``dim < 1``.
    """
    if argument is None:
        return 0, DEFAULT_RANDOM_DIM
    parts = argument.split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or len(values) != len(parts):
        raise ConfigError(
            f"text encoder 'random:{argument}': expected random, random:<seed> or random:<seed>:<dim> with integers, "
            f"found {argument!r}"
        )
    seed, dim = values[0], values[1] if len(values) == 2 else DEFAULT_RANDOM_DIM
    if dim < 1:
        raise ConfigError(f"text encoder 'random:{argument}': expected a width >= 1, found {dim}")
    return seed, dim


class RandomTextEncoder:
    """One fixed Gaussian vector per class (row ``k`` of ``randn(C, dim)`` from ``seed``), unit norm.

    Args:
        seed: seed of the generator (the vectors depend on nothing else but ``dim`` and ``C``).
        dim: the width ``D_text``.
    """

    cacheable = False

    def __init__(self, seed: int = 0, dim: int = DEFAULT_RANDOM_DIM) -> None:
        self.seed = int(seed)
        self._dim = int(dim)

    @property
    def identity(self) -> str:
        return f"random:{self.seed}:{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def encode_grid(self, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        """``(M, C, dim)``: class ``k`` gets the same vector in every domain."""
        m, c = _grid_shape(prompts, f"text encoder {self.identity!r}")
        g = torch.Generator().manual_seed(self.seed)
        vectors = l2_normalise(torch.randn(c, self._dim, generator=g))  # (C, dim)
        return vectors.unsqueeze(0).expand(m, -1, -1).contiguous()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        raise _no_free_text(self.identity)


class OneHotTextEncoder:
    """The one-hot vector of each class id, ``(M, C, C)``: orthogonal, equally dissimilar classes."""

    cacheable = False
    identity = "onehot"

    def __init__(self) -> None:
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        """``C``, known once a grid was encoded.

        Raises:
            ConfigError: no grid was encoded yet (the width is the number of classes).
        """
        if self._dim is None:
            raise ConfigError("text encoder 'onehot': its width is the number of classes, known after encode_grid")
        return self._dim

    def encode_grid(self, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        """``(M, C, C)``, the identity matrix for every domain."""
        m, c = _grid_shape(prompts, "text encoder 'onehot'")
        self._dim = c
        return torch.eye(c).unsqueeze(0).expand(m, -1, -1).contiguous()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        raise _no_free_text(self.identity)


class CheckpointTextEncoder:
    """The text embeddings stored in a checkpoint's ``text`` record (:class:`~tcsa_uda.text.TextEmbeddings`).

    Training checkpoints and ``tcsa-uda import-released`` checkpoints both store the embeddings of
    their domains with the class names and prompts. :meth:`encode_domains` picks the rows of the
    requested domains by name, so the order of the run's source and target never matters.

    Args:
        path: the checkpoint file (read with ``torch.load(weights_only=True)``: a file holding
            anything but tensors and plain containers is refused without running it).

    Raises:
        MissingPathError: the file does not exist.
    """

    cacheable = False

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise MissingPathError(f"text encoder 'checkpoint:{path}': checkpoint file {path} does not exist")
        self.path = path.resolve()
        self._record: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._record is None:
            where = f"{self.path} (text encoder 'checkpoint:')"
            try:
                obj = torch.load(self.path, map_location="cpu", weights_only=True)
            except TORCH_LOAD_ERRORS as exc:
                raise ConfigError(
                    f"{where}: expected a checkpoint readable with torch.load(weights_only=True), found: {exc}"
                ) from exc
            text = obj.get("text") if isinstance(obj, Mapping) else None
            if not isinstance(text, Mapping):
                found = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
                raise ConfigError(f"{where}: expected a checkpoint with a 'text' record, found {found}")
            emb, domains, classes = text.get("embeddings"), text.get("domains"), text.get("class_names")
            prompts = text.get("prompts")
            if not (
                isinstance(emb, torch.Tensor)
                and emb.ndim == 3
                and emb.is_floating_point()
                and isinstance(domains, list)
                and isinstance(classes, list)
                and isinstance(prompts, list)
                and list(emb.shape[:2]) == [len(domains), len(classes)]
                and [len(r) for r in prompts] == [len(classes)] * len(domains)
            ):
                raise ConfigError(
                    f"{where}: expected 'text' with embeddings (domains, classes, dim), domains, class_names and "
                    f"prompts that agree, found keys {sorted(map(str, text))}"
                )
            self._record = {
                "embeddings": l2_normalise(emb.detach().float()).contiguous(),
                "domains": [str(d) for d in domains],
                "class_names": [str(c) for c in classes],
                "prompts": [[str(p) for p in row] for row in prompts],
                "encoder": str(text.get("encoder", "unknown")),
            }
        return self._record

    @property
    def identity(self) -> str:
        st = self.path.stat()
        return f"checkpoint:{self.path}#{st.st_size}-{st.st_mtime_ns} ({self._load()['encoder']})"

    @property
    def dim(self) -> int:
        return int(self._load()["embeddings"].shape[-1])

    def encode_domains(
        self, domains: Sequence[str], class_names: Sequence[str]
    ) -> tuple[torch.Tensor, list[list[str]]]:
        """The stored embeddings ``(M, C, D)`` and prompts of ``domains``, in that order.

        Raises:
            ConfigError: a domain is not stored, or the stored class names differ from ``class_names``.
        """
        rec = self._load()
        if list(class_names) != rec["class_names"]:
            raise ConfigError(
                f"{self.path} (text encoder 'checkpoint:'): expected the dataset's classes {list(class_names)}, "
                f"found {rec['class_names']} (for an imported release, give the dataset's names with "
                "import-released --classes)"
            )
        missing = [d for d in domains if d not in rec["domains"]]
        if missing:
            raise ConfigError(
                f"{self.path} (text encoder 'checkpoint:'): expected text of the domains {list(domains)}, found only "
                f"{rec['domains']} (missing {missing})"
            )
        rows = [rec["domains"].index(d) for d in domains]
        return rec["embeddings"][rows].clone(), [list(rec["prompts"][i]) for i in rows]

    def encode_grid(self, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        raise ConfigError(
            f"text encoder 'checkpoint:{self.path}': rows are chosen by domain name; use encode_dataset_text "
            "(encode_domains), not a bare prompt grid"
        )

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Look ``texts`` up among the stored prompts."""
        rec = self._load()
        index = {p: (i, j) for i, row in enumerate(rec["prompts"]) for j, p in enumerate(row)}
        missing = [t for t in texts if t not in index]
        if missing or not texts:
            raise ConfigError(f"{self.path}: expected texts among the stored prompts, found unknown {missing or texts}")
        return torch.stack([rec["embeddings"][index[t]] for t in texts])


def _random_factory(argument: str | None) -> TextEncoder:
    seed, dim = parse_random_argument(argument)
    return RandomTextEncoder(seed, dim)


def _onehot_factory(_: str | None) -> TextEncoder:
    return OneHotTextEncoder()


def _checkpoint_factory(argument: str | None) -> TextEncoder:
    return CheckpointTextEncoder(Path(str(argument)).expanduser())


register_encoder("random", _random_factory, usage="random[:<seed>[:<dim>]]", optional_argument=True)
register_encoder("onehot", _onehot_factory)
register_encoder("checkpoint", _checkpoint_factory, takes_argument=True, usage="checkpoint:<model.pt>")
