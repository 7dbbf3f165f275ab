"""No import cycle anywhere in ``node/``, and the layering the composition root stands for.

Every import counts: at module level, inside functions and under TYPE_CHECKING
(a function-level import only hides a cycle from the interpreter, and a
TYPE_CHECKING one only from the interpreter, not from the reader or mypy).
``from X import Y`` where ``X.Y`` is a module counts as importing ``X.Y``.
``python ../shared/tools/import_cycles.py node`` prints the same cycles.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "node"

Graph = dict[str, dict[str, list[int]]]  # module -> imported module -> line numbers


def package_modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: Mapping[str, Path]) -> str | None:
    """The module ``name`` means: itself, or the package it is an attribute of."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path) -> Graph:
    """Who imports whom within the package at ``root``, anywhere in each module."""
    modules = package_modules(root)
    package = root.name
    graph: Graph = {name: {} for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules
                           else source for alias in node.names]
            else:
                continue
            for target in targets:
                if target != package and not target.startswith(package + "."):
                    continue
                imported = _resolve(target, modules)
                if imported is not None and imported != name:
                    graph[name].setdefault(imported, []).append(node.lineno)
    return graph


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, edges = work[-1]
            w = next(edges, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def describe(component: list[str], graph: Graph) -> str:
    members = set(component)
    edges = [f"    {a} -> {b} (line {', '.join(map(str, graph[a][b]))})"
             for a in component for b in sorted(graph[a]) if b in members]
    return f"cycle of {len(component)}: {', '.join(component)}\n" + "\n".join(edges)


GRAPH = import_graph(ROOT)


def without(graph: Graph, edges: Iterable[tuple[str, str]]) -> Graph:
    removed = set(edges)
    return {a: {b: lines for b, lines in targets.items() if (a, b) not in removed}
            for a, targets in graph.items()}


def imports_from(module: str, layer: str) -> list[str]:
    return sorted(t for t in GRAPH[module] if t == layer or t.startswith(layer + "."))


def test_the_walker_counts_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for path in ("__init__.py", "sub/__init__.py", "leaf.py"):
        (pkg / path).write_text("")
    (pkg / "a.py").write_text("def f():\n    import pkg.b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from pkg.sub import c\n")
    (pkg / "sub" / "c.py").write_text("from .. import a\nfrom pkg.leaf import x\n")
    graph = import_graph(pkg)
    assert {m: sorted(t) for m, t in graph.items() if t} == {
        "pkg.a": ["pkg.b"], "pkg.b": ["pkg.sub.c"], "pkg.sub.c": ["pkg.a", "pkg.leaf"]}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_the_graph_covers_the_package() -> None:
    assert len(GRAPH) >= 80
    assert "node.node" in GRAPH["node.app"]  # a known edge: the walker is not blind


def test_no_import_cycle() -> None:
    found = cycles(GRAPH)
    assert not found, "import cycles in node/:\n" + "\n".join(describe(c, GRAPH) for c in found)


def test_only_the_composition_root_imports_net_service_and_api_together() -> None:
    """Of the modules outside those three layers (cli, chat, bench, ...), only node.app
    wires them; the layers themselves use what is below them (api uses service and net)."""
    layers = ("node.net", "node.service", "node.api")
    wiring = [m for m in GRAPH
              if not any(m.startswith(layer + ".") for layer in layers)
              and all(imports_from(m, layer) for layer in layers)]
    assert wiring == ["node.app"]


def test_the_peer_manager_knows_no_groups_store_api_or_root() -> None:
    for layer in ("node.service", "node.store", "node.api", "node.app", "node.group"):
        assert not imports_from("node.node", layer)


def test_services_see_peers_only_through_peer_links() -> None:
    edges = {(m, t) for m in GRAPH if m.startswith("node.service.") for t in GRAPH[m]
             if t in ("node.node", "node.net.connection", "node.app") or t.startswith("node.api")}
    assert not edges, sorted(edges)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("node.wire.")))
def test_wire_does_not_import_the_group_layer(module: str) -> None:
    assert not imports_from(module, "node.group")
