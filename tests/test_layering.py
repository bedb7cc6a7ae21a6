"""Imports go one way: library modules never import command modules, and tclip never imports thermgen."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Command modules: argument parsing and printing around library calls.
COMMANDS = ("thermgen.caption", "thermgen.generate", "thermgen.judge", "thermgen.demo", "thermgen.demo_browser",
            "thermgen.fid", "thermgen.bench", "thermgen.pretrained")
LIBRARY = ("thermgen/ircap", "thermgen/metrics", "thermgen/io", "thermgen/data", "thermgen/train", "pipelines", "tclip")


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_library_modules_import_no_command_module_and_tclip_no_thermgen():
    bad = []
    for root in LIBRARY:
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel.endswith("__main__.py"):
                continue
            for mod in _imports(path):
                if rel.startswith("tclip/") and (mod == "thermgen" or mod.startswith("thermgen.")):
                    bad.append((rel, mod))
                elif any(mod == c or mod.startswith(c + ".") for c in COMMANDS):
                    bad.append((rel, mod))
    assert not bad, bad



def _module_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere (top level or inside functions), from the source."""
    paths = {}
    for root in ("thermgen", "tclip", "pipelines"):
        for p in (REPO / root).rglob("*.py"):
            parts = p.relative_to(REPO).with_suffix("").parts
            paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for name, p in paths.items():
        pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(p.read_text(), filename=str(p))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for a in node.names:  # "from pkg import submodule" depends on the submodule, not on pkg's __init__
                    deps.add(f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in paths and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_counting_imports_inside_functions():
    assert _cycles(_module_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = _module_graph()
    assert "thermgen.metrics.fid" in graph["thermgen.metrics.report"]
    assert "thermgen.metrics.features" in graph["thermgen.metrics.fid"]
