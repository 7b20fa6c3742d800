"""The map of the code holds: no import circle, the relay stands alone, modules stay readable.

docs/architecture.md states these rules; this test reads every module's imports from its AST
(function-local imports included, which is where a circle likes to hide) and fails on a breach.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "arp"
MAX_LINES = 700
# The modules that assemble the arps process may reach the gateway (started with --gateway).
RELAY_ASSEMBLY = {"arp.relay.cli"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports anywhere in its body."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(target: str) -> None:
        # `from arp.x import y` names module arp.x.y when it exists, else arp.x.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("arp"):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = name.split(".")
                if not is_package:
                    base_parts = base_parts[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base.startswith("arp"):
                continue
            for alias in node.names:
                add(f"{base}.{alias.name}")
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the list of modules around it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_in_the_package() -> None:
    graph = _graph()
    assert len(graph) > 50, "the walk found too few modules: is SRC right?"
    assert "arp.relay.server" in graph["arp.relay.cli"] or any(
        m.startswith("arp.relay") for m in graph["arp.relay.cli"]
    )
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_relay_imports_neither_command_mode_nor_the_gateway() -> None:
    graph = _graph()
    offenders = {
        name: sorted(t for t in targets if t.startswith(("arp.command", "arp.gateway")))
        for name, targets in graph.items()
        if name.startswith("arp.relay") and name not in RELAY_ASSEMBLY
    }
    assert not {k: v for k, v in offenders.items() if v}


@pytest.mark.parametrize("name", sorted(_modules()))
def test_each_module_is_short_and_says_what_it_holds(name: str) -> None:
    path = _modules()[name]
    text = path.read_text()
    lines = text.count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(SRC)} has {lines} lines (at most {MAX_LINES})"
    if text.strip():
        assert ast.get_docstring(ast.parse(text)), f"{path.relative_to(SRC)} has no docstring"
