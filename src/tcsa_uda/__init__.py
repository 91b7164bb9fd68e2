"""tcsa-uda: cross-modality unsupervised domain adaptation for medical image segmentation.

The package is organised by pipeline stage, lowest layer first (docs/extending.md): core modules
(``errors``, ``atomic``, ``paths``, ``config``, ``train_config``, ``layout``), ``data`` (dataset
contract, verification, converters, phantom benchmark, slice preparation), then ``metrics``,
``text`` (class prompts and frozen text embeddings), ``models`` and ``losses``, then ``methods``
(one file per adaptation method), ``engine`` (training loop, checkpoints, selection),
``evaluation`` (inference, evaluator, predict, reports) and on top ``demo``, ``bench`` and ``cli``.

Public Python API (README, Python API): ``tcsa_uda.load_model(path, device="cpu")`` returns a
:class:`~tcsa_uda.evaluation.model.LoadedModel` in eval mode with ``segment(x)`` and
``preprocess(slices)``. It is imported on first use, so ``import tcsa_uda.data`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tcsa_uda.errors import TcsaUdaError

if TYPE_CHECKING:  # pragma: no cover - for type checkers only; loaded lazily by __getattr__
    from tcsa_uda.evaluation.model import LoadedModel, load_model

__version__ = "0.1.0"
__all__ = ["LoadedModel", "TcsaUdaError", "__version__", "load_model"]

_LAZY: dict[str, str] = {"load_model": "tcsa_uda.evaluation.model", "LoadedModel": "tcsa_uda.evaluation.model"}


def __getattr__(name: str) -> Any:
    """Import the public API (:data:`_LAZY`) on first access (PEP 562)."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tcsa_uda' has no attribute {name!r}")
