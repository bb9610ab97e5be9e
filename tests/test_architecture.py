"""Static architecture checks: no import cycle among modules or among subpackages.

Every module under ``src/shadowprice`` is parsed with :mod:`ast`; every ``import`` and
``from ... import`` counts, including those inside functions (a lazy import still ties the
two modules together: it only moves the failure from import time to call time). Importing a
module does not count as importing its parent packages: Python runs a package's
``__init__`` on the way to any of its modules, and counting that would make every package
that re-exports its modules a cycle.

The *module graph* has an edge a -> b when module a imports module b (``from pkg import
name`` imports ``pkg.name`` when that is a module, else ``pkg``). The *subpackage graph*
merges modules into their top-level unit under ``shadowprice`` (``evaluate``, ``predict``,
``allocate`` for ``allocate.py``, ``shadowprice`` for the package's own ``__init__``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "shadowprice"

Graph = dict[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of a file under ``root`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``tree`` (the source of ``module``) imports, anywhere."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out |= _resolve(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                out |= {sub} if sub in known else _resolve(base, known)
    out.discard(module)
    return out


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    # A package's own __init__ is level 1 inside itself; a module's level 1 is its package.
    keep = len(parts) - node.level + (1 if is_package else 0)
    base = parts[:keep]
    return ".".join(base + ([node.module] if node.module else []))


def _resolve(name: str, known: set[str]) -> set[str]:
    """The module ``import name`` loads, if it is one of ours (longest known prefix)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in known:
            return {cand}
    return set()


def module_graph(root: Path, package: str = PACKAGE) -> Graph:
    """Edges module -> modules it imports, for every ``*.py`` under ``root / package``."""
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    known = set(files)
    graph: Graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = imported_modules(tree, name, path.name == "__init__.py", known)
    return graph


def unit_of(module: str, package: str = PACKAGE) -> str:
    """Top-level unit of a module: its first name under the package, or the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else package


def subpackage_graph(graph: Graph, package: str = PACKAGE) -> Graph:
    """The module graph merged into top-level units (edges between different units)."""
    out: Graph = defaultdict(set)
    for a, targets in graph.items():
        ua = unit_of(a, package)
        out[ua]
        for b in targets:
            ub = unit_of(b, package)
            if ub != ua:
                out[ua].add(ub)
    return dict(out)


def tangles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one node (sorted): modules tied together."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(components)


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle (a -> ... -> a) per tangle: a shortest one through its first node."""
    return [_cycle_in(graph, comp) for comp in tangles(graph)]


def _cycle_in(graph: Graph, component: Iterable[str]) -> list[str]:
    """A shortest cycle through the component's first node, staying inside the component."""
    comp = set(component)
    start = min(comp)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ()) & comp):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(comp)}")


def _describe(graph: Graph) -> str:
    lines = ["import cycles (one per tangle, then every member of the tangle):"]
    for cycle, tangle in zip(find_cycles(graph), tangles(graph), strict=True):
        lines += ["  " + " -> ".join(cycle), "    tangle: " + ", ".join(tangle)]
    return "\n".join(lines)


def test_no_import_cycle_among_modules() -> None:
    graph = module_graph(SRC)
    assert not find_cycles(graph), _describe(graph)


def test_no_import_cycle_among_subpackages() -> None:
    graph = subpackage_graph(module_graph(SRC))
    assert not find_cycles(graph), _describe(graph)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / "pkg" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return tmp_path


def test_the_check_sees_lazy_relative_and_absolute_imports(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "from .a import f\n",
            "a.py": "def f():\n    from .sub import b  # lazy\n    return b\n",
            "sub/__init__.py": "",
            "sub/b.py": "import pkg.sub.c\n",
            "sub/c.py": "from ..a import f\n",
            "d.py": "from . import a\nfrom .sub import helper_name\n",
        },
    )
    graph = module_graph(root, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.sub.c"}
    assert graph["pkg.d"] == {"pkg.a", "pkg.sub"}  # a name from a package is the package
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]]
    assert find_cycles(subpackage_graph(graph, "pkg")) == [["a", "sub", "a"]]


def test_the_check_passes_an_acyclic_tree(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "from .a import f\nfrom .sub import b\n",
            "a.py": "def f():\n    return 1\n",
            "sub/__init__.py": "from .b import g\n",
            "sub/b.py": "from ..a import f\n\ndef g():\n    from . import c\n",
            "sub/c.py": "import os\n",
        },
    )
    graph = module_graph(root, "pkg")
    assert find_cycles(graph) == [] and find_cycles(subpackage_graph(graph, "pkg")) == []


# docs/architecture.md, "What may import what": a unit imports only units of a lower rank.
LAYERS: dict[str, float] = {
    "limits": -1,  # the bounds on token counts every entry point checks
    "curves": 0,
    "traces": 0,
    "providers": 0,  # an allowance as each API's request fields (pure)
    "ledger": 0,
    "usage": 0,  # the counting rule every reader of a model server's answer applies
    "solve": 1,
    "fit": 1,
    "allocate": 2,
    "live": 2,
    PACKAGE: 2.5,  # the root re-exports allocate and the curves
    "predict": 3,
    "online": 4,
    "engine": 5,
    "serve": 6,
    "evaluate": 7,
    "integrations": 7.5,  # bridges to other systems (Ray): may use all but the commands
    "cli": 8,
}


def layer_violations(graph: Graph) -> set[tuple[str, str]]:
    """Edges (a, b) of the subpackage graph where b is not on a lower layer than a."""
    units = set(graph) | {b for targets in graph.values() for b in targets}
    unknown = sorted(units - set(LAYERS))
    assert not unknown, f"place {unknown} in LAYERS and in docs/architecture.md"
    return {(a, b) for a, targets in graph.items() for b in targets if LAYERS[b] >= LAYERS[a]}


def test_imports_follow_the_layers() -> None:
    bad = layer_violations(subpackage_graph(module_graph(SRC)))
    assert not bad, f"imports against the layers of docs/architecture.md: {sorted(bad)}"
