"""The package's import graph: no cycles (imports inside functions count too), and the leaf layers stay leaves.

Read from the source with ``ast`` (nothing is imported), so the test is fast and sees every import statement.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mlma_cli", "mlma")

# Cycles known and left for their owners, each with the modules and why it is still here. Empty: every cycle fails.
KNOWN_CYCLES: Set[frozenset] = set()

# Layers that must not reach up: module prefix -> the internal prefixes it may import.
LEAVES = {
    "mlma_cli.errors": (),
    "mlma_cli.utils": ("mlma_cli.errors", "mlma_cli.utils"),
    "mlma_cli.text": ("mlma_cli.errors", "mlma_cli.text"),
    "mlma_cli.averaging": (),
}


def _modules() -> Dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _targets(module: str, path: Path, node: ast.AST, mods: Dict[str, Path]) -> List[str]:
    """Internal modules an import statement executes (``from pkg import sub`` -> pkg.sub when sub is a module)."""
    names: List[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base = base[:len(base) - node.level + 1]
            src = ".".join(base + ([node.module] if node.module else []))
        else:
            src = node.module or ""
        names = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
    return [n for n in names if n in mods and n != module]


def import_graph() -> Dict[str, Set[str]]:
    mods = _modules()
    graph: Dict[str, Set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module].update(_targets(module, path, node, mods))
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[Set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(comp)
    return found


def test_cycle_detection_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = [c for c in cycles(import_graph()) if frozenset(c) not in KNOWN_CYCLES]
    assert not found, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


def test_leaf_layers_import_nothing_above_them():
    bad = []
    for module, targets in import_graph().items():
        for leaf, allowed in LEAVES.items():
            if module == leaf or module.startswith(leaf + "."):
                bad += [f"{module} -> {t}" for t in targets if not t.startswith(allowed or ("\0",))]
    assert not bad, bad
