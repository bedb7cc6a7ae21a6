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

