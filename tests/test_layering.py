"""The package's import graph runs one way: lower pipeline layers never import higher ones.

Layers, lowest first (docs/extending.md): core (errors, atomic I/O, paths, config and its
schemas, the run-folder layout, numeric precision) -> data -> components (metrics, text, models, losses) ->
methods -> engine -> evaluation -> application (demo, bench, cli). Every import statement is
checked, including imports inside functions, so a lazy import cannot hide a back-arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tcsa_uda

PACKAGE = Path(tcsa_uda.__file__).parent

LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("core", frozenset({"errors", "atomic", "outputs", "paths", "config", "train_config", "layout", "precision"})),
    ("data", frozenset({"data"})),
    ("components", frozenset({"metrics", "text", "models", "losses"})),
    ("methods", frozenset({"methods"})),
    ("engine", frozenset({"engine"})),
    ("evaluation", frozenset({"evaluation"})),
    ("application", frozenset({"demo", "bench", "cli", "__main__"})),
)
RANK = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def _top(module: str) -> str:
    """``tcsa_uda.engine.trainer`` -> ``engine``; the bare package ``tcsa_uda`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tcsa_uda":
                found += [(node.lineno, f"tcsa_uda.{a.name}") for a in node.names if a.name != "__version__"]
            elif node.module.startswith("tcsa_uda."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("tcsa_uda.")]
    return found


def test_every_module_belongs_to_a_layer():
    unknown = sorted({_top("tcsa_uda." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)) for p in _modules()})
    unknown = [name for name in unknown if name not in RANK]
    assert not unknown, f"modules outside every layer (add them to LAYERS): {unknown}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_from_a_higher_layer(path: Path):
    own = _top("tcsa_uda." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    bad = [
        f"line {line}: {module} ({LAYERS[RANK[_top(module)]][0]})"
        for line, module in _imports(path)
        if _top(module) in RANK and RANK[_top(module)] > RANK[own]
    ]
    assert not bad, f"{path.relative_to(PACKAGE)} ({LAYERS[RANK[own]][0]}) imports a higher layer: {bad}"


def test_package_init_imports_only_core_at_import_time():
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    modules = [n.module for n in top_level if isinstance(n, ast.ImportFrom) and n.module]
    assert all(RANK.get(_top(m), 0) == 0 for m in modules if m.startswith("tcsa_uda.")), modules


def test_checker_sees_a_back_arrow(tmp_path: Path):
    """The checker itself: a function-level import of a higher layer is found."""
    mod = tmp_path / "mod.py"
    mod.write_text("def f():\n    from tcsa_uda.engine.trainer import train\n    return train\n", encoding="utf-8")
    assert _imports(mod) == [(2, "tcsa_uda.engine.trainer")]
