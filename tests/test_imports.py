"""The import graph of ``reasonalign/``: no cycles, and the layers point one way.

Every ``import`` / ``from ... import`` statement of every module counts, module-level and
function-level alike (a lazy import inside a function still ties the two modules together); only
those under ``if TYPE_CHECKING:`` are left out, as they never run. An import of a package's
submodule is an edge to that submodule (``from reasonalign.components import judges`` ->
``reasonalign.components.judges``), an import of a name to the module holding it. Dotted paths in
strings (a config's ``_target_``) are not imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# nothing under reasonalign/components/ imports these: components are the lower layer
ABOVE_COMPONENTS = ("reasonalign.analysis", "reasonalign.eval", "reasonalign.methods")


def modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package's __init__)}`` for every module under ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def import_nodes(node: ast.AST):
    """Every import statement under ``node``, at any depth, but those under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            for other in child.orelse:  # an ``else:`` branch does run
                if isinstance(other, (ast.Import, ast.ImportFrom)):
                    yield other
                yield from import_nodes(other)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from import_nodes(child)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """``{module: the package's modules it imports}`` (see the module docstring)."""
    mods = modules(root, package)

    def owner(name: str) -> str | None:  # the module ``name`` is, or the one that holds it
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, (path, is_pkg) in mods.items():
        here = (name if is_pkg else name.rpartition(".")[0]).split(".")
        edges: set[str] = set()
        for node in import_nodes(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                edges.update(filter(None, (owner(a.name) for a in node.names)))
                continue
            base = node.module or ""
            if node.level:  # relative: from the package ``level - 1`` above this module's
                base = ".".join([*here[:len(here) - node.level + 1], *([node.module] if node.module else [])])
            for a in node.names:
                edges.add(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else owner(base))
        edges.discard(name)
        edges.discard(None)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def describe(graph: dict[str, set[str]], comp: list[str]) -> str:
    inside = set(comp)
    return "; ".join(f"{a} -> {b}" for a in comp for b in sorted(graph[a] & inside))


def test_no_import_cycles_among_reasonalign_modules():
    graph = import_graph(ROOT, "reasonalign")
    assert len(graph) > 50 and "reasonalign.components.teachers.base" in graph
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(graph, c) for c in found)


def test_components_do_not_import_analysis_eval_or_methods():
    graph = import_graph(ROOT, "reasonalign")
    bad = sorted(f"{m} -> {t}" for m, targets in graph.items() if within(m, ("reasonalign.components",))
                 for t in targets if within(t, ABOVE_COMPONENTS))
    assert not bad, "components import a higher layer:\n" + "\n".join(bad)


@pytest.fixture
def toy(tmp_path):
    """A package with a function-level cycle (a <-> b, through a relative import), an import
    under TYPE_CHECKING only (c -> a) and a layering breach (components.x -> eval.y)."""
    files = {
        "toy/__init__.py": "",
        "toy/a.py": "def f():\n    from toy.b import g\n    return g\n",
        "toy/b.py": "from . import a\n\ndef g():\n    return a\n",
        "toy/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy.a import f\n",
        "toy/components/__init__.py": "",
        "toy/components/x.py": "import toy.eval.y\n",
        "toy/eval/__init__.py": "",
        "toy/eval/y.py": "from toy.components import x\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return import_graph(tmp_path, "toy")


def test_the_checks_find_what_they_look_for(toy):
    assert toy["toy.a"] == {"toy.b"} and toy["toy.b"] == {"toy.a"} and toy["toy.c"] == set()
    assert cycles(toy) == [["toy.a", "toy.b"], ["toy.components.x", "toy.eval.y"]]
    assert toy["toy.components.x"] == {"toy.eval.y"} and within("toy.eval.y", ("toy.eval",))
    assert not within("toy.evaluation", ("toy.eval",))
