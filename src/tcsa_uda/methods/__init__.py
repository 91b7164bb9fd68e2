"""Adaptation methods, one file each, registered by name.

Importing this package registers every built-in method: ``source_only``, ``adaoutput``
(AdaptSegNet output space; TCSA stage 1), ``advent``, ``minent`` (ADVENT's adversarial and
entropy-minimisation baselines) and ``tcsa`` (TCSA-UDA stage 2).
"""

from tcsa_uda.methods import minent, output_adversarial, source_only, tcsa  # noqa: F401  (registration)
from tcsa_uda.methods.base import MethodContext, MethodOptions, StepOutputs, UDAMethod
from tcsa_uda.methods.registry import available_methods, build_method, method_class, register_method

__all__ = [
    "MethodContext",
    "MethodOptions",
    "StepOutputs",
    "UDAMethod",
    "available_methods",
    "build_method",
    "method_class",
    "register_method",
]
