"""Ablation switches declared next to the method they switch (docs/method.md, Ablations and variants).

A method lists its switches in :attr:`~tcsa_uda.methods.UDAMethod.ablations`: each is a named set of
option values (and, for switches outside the method such as the text encoder or the fidelity,
run-level config overrides) with the logged values it removes or adds. One generic test
(``tests/methods/test_ablation.py``) trains every registered method and every declared switch for
two iterations on tiny data and checks the logs against these declarations, so a new method or a
new switch is tested by declaring it, without writing a test. The bench suites use the same
option values (``configs/bench/phantom_cpu.yaml``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Ablation"]


@dataclass(frozen=True)
class Ablation:
    """One ablation switch (a term switched off) or variant (a term computed differently) of a method.

    Attributes:
        name: short identifier, e.g. ``no_vl`` (test ids, bench entry names).
        description: what the switch does, in a few words.
        options: the method's option values that turn it on (over the method's defaults).
        overrides: run-level ``key.sub=value`` config overrides that turn it on, e.g.
            ``("text.encoder=onehot",)`` or ``("fidelity=released",)``.
        removes: logged keys that the switch removes: logged without the switch, never with it
            (a switched-off term is neither computed nor logged).
        adds: logged keys that appear only with the switch.
    """

    name: str
    description: str
    options: Mapping[str, Any] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    removes: tuple[str, ...] = ()
    adds: tuple[str, ...] = ()

    def option_overrides(self, stage: int) -> list[str]:
        """The switch as ``stages.<stage>.options.<name>=<value>`` config overrides, then :attr:`overrides`."""
        opts = [f"stages.{stage}.options.{k}={_yaml(v)}" for k, v in self.options.items()]
        return [*opts, *self.overrides]


def _yaml(value: Any) -> str:
    """A YAML scalar for an override value (``true``/``false`` for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
