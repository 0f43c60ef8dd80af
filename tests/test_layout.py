"""The package's shape: no import cycles between modules (module-level or deferred imports inside
functions), and ``import brittle`` stays light (no torch, pandas, scipy or scikit-learn until used)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import brittle

SRC = Path(brittle.__file__).resolve().parents[1]


def _import_graph() -> dict[str, set[str]]:
    modules = {}
    for f in (SRC / "brittle").rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    graph: dict[str, set[str]] = {}
    for mod, (f, is_pkg) in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    deps.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[mod] = {d for d in deps if d in modules and d != mod}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = _import_graph()
    assert len(graph) > 50  # the walk really saw the package
    assert _cycles(graph) == []


def test_import_brittle_is_light():
    code = ("import sys, brittle; heavy = [m for m in ('torch', 'pandas', 'scipy', 'sklearn', 'matplotlib') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def _resolve(dotted: str):
    import importlib

    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[:i + 1]))  # a submodule not imported yet
    return obj


def test_every_dotted_brittle_name_in_the_readme_and_docs_resolves():
    """A user copies `brittle.x.Y` from the docs: `brittle.execution.make_executor` and
    `brittle.auditing.SubsetEstimateStage` were named there but not exported."""
    import re

    root = Path(__file__).resolve().parents[1]
    names = {}
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for m in re.finditer(r"(?<![\w./-])(brittle(?:\.[A-Za-z_]\w*)+)", page.read_text(encoding="utf-8")):
            names.setdefault(m.group(1), page.name)
    assert len(names) > 30
    bad = []
    for name, page in sorted(names.items()):
        try:
            _resolve(name)
        except (AttributeError, ImportError) as exc:
            bad.append(f"{name} ({page}): {type(exc).__name__}")
    assert not bad, bad
