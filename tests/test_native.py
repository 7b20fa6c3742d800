"""The compiled data path (`arp.native`): the suite runs it, and a stale build never runs.

A module compiled by mypyc differs from its source in two ways the type checker does not
catch, so the rules are checked here on the sources: an exception class loses its class
attributes (its status), and an interpreted class cannot subclass a compiled one.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import arp.errors
from arp import native

ROOT = Path(__file__).resolve().parent.parent

PROBE = (
    "import sys, arp, arp.net.pump as p; "
    "print(arp._native.active(), p.__file__.endswith('.py'), 'arp_native__mypyc' in sys.modules)"
)


def _probe(src: Path, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, "PYTHONPATH": str(src), **env},
        cwd=src,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_the_suite_runs_the_compiled_data_path() -> None:
    assert native.current() is not None, (
        "build/native is missing or older than the sources: run bash scripts/setup.sh --dev"
    )
    assert native.active()
    import arp.net.pump
    import arp.relay.conversation

    for module in (arp.net.pump, arp.relay.conversation):
        assert module.__file__ is not None
        assert module.__file__.startswith(native.BUILD_DIR), module.__file__


def test_a_stale_build_is_not_loaded(tmp_path: Path) -> None:
    if native.current() is None:
        pytest.fail("build/native is missing or stale: run bash scripts/setup.sh --dev")
    # A copy of the checkout (times kept, as the stamp records them), then one edit.
    shutil.copytree(ROOT / "src" / "arp", tmp_path / "src" / "arp")
    shutil.copytree(ROOT / "build" / "native", tmp_path / "build" / "native")
    src = tmp_path / "src"
    assert _probe(src) == "True False True"
    assert _probe(src, ARP_NATIVE="0") == "False True False"

    edited = src / "arp" / "relay" / "conversation.py"
    edited.write_text(edited.read_text() + "\n# edited after the build\n")
    # Every module runs from its source then, not only the edited one: compiled modules call
    # each other directly, so a mix would run the old code of the edited one.
    assert _probe(src) == "False True False"


def test_without_a_build_the_sources_run(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "src" / "arp", tmp_path / "src" / "arp")
    assert _probe(tmp_path / "src") == "False True False"


def _compiled_classes() -> dict[str, str]:
    classes: dict[str, str] = {}
    for module in native.MODULES:
        tree = ast.parse(Path(native.source_path(module)).read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                classes[node.name] = module
    return classes


def test_compiled_modules_define_no_exception() -> None:
    exceptions = {
        name
        for name, value in vars(arp.errors).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    } | {"Exception", "BaseException", "OSError", "ConnectionError", "ValueError"}
    found = []
    for module in native.MODULES:
        tree = ast.parse(Path(native.source_path(module)).read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}
                if bases & exceptions:
                    found.append(f"{module}.{node.name}")
    assert not found, f"define these in arp/errors.py: {found}"


def test_no_interpreted_class_subclasses_a_compiled_one() -> None:
    classes = _compiled_classes()
    compiled = {Path(native.source_path(m)) for m in native.MODULES}
    found = []
    for path in [*ROOT.glob("src/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/*.py")]:
        if path in compiled:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    name = ast.unparse(base).rsplit(".", 1)[-1]
                    if name in classes:
                        found.append(f"{path.relative_to(ROOT)}: {node.name}({name})")
    assert not found, f"compile these too (arp.native.MODULES) or subclass otherwise: {found}"
