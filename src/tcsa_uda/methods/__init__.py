"""Adaptation methods, one file each, registered by name.

Importing this package imports every module in it, which registers every method: e.g.
``source_only``, ``adaoutput`` (AdaptSegNet output space; TCSA stage 1), ``advent``, ``minent``
(ADVENT's adversarial and entropy-minimisation baselines), ``adabn`` (target BatchNorm
statistics), ``mpscl`` (margin-preserving self-paced contrastive learning), ``oracle`` (trained on
target labels: an upper bound) and ``tcsa`` (TCSA-UDA stage 2). A new method is one new file
(docs/extending.md).
"""

import importlib
import pkgutil

from tcsa_uda.methods.ablation import Ablation
from tcsa_uda.methods.base import MethodContext, MethodOptions, StepOutputs, UDAMethod
from tcsa_uda.methods.registry import available_methods, build_method, method_class, register_method

# Every module of this package registers its method when imported: import them all, so a new
# method is one new file (docs/extending.md).
for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("ablation", "base", "registry"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "Ablation",
    "MethodContext",
    "MethodOptions",
    "StepOutputs",
    "UDAMethod",
    "available_methods",
    "build_method",
    "method_class",
    "register_method",
]
