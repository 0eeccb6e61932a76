"""The project's habits, checked where CI runs the tests: lint, format, types over every
package, and the layering (no module imports a layer above its own)."""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

# Each layer may import itself and the layers before it.
LAYERS = [
    "pools",
    "trainer.errors",
    "trainer.project",
    "trainer.outputs",
    "trainer.data",
    "trainer.core",
    "trainer.export",
    "trainer.distributed",
    "trainer.api",
    "trainer.cli",
    "service",
    "adasir",
]


def _tool(name: str) -> list[str]:
    if (
        shutil.which(name) is None
        and subprocess.run(
            [sys.executable, "-m", name, "--version"], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return [sys.executable, "-m", name]


@pytest.mark.parametrize("check", [["check", "."], ["format", "--check", "."]])
def test_ruff(check):
    proc = subprocess.run(
        [*_tool("ruff"), *check], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def test_mypy_over_the_packages():
    proc = subprocess.run(
        [*_tool("mypy"), "pools", "trainer", "service", "adasir"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


def _layer(module: str) -> int | None:
    best = None
    for i, name in enumerate(LAYERS):
        if module == name or module.startswith(name + "."):
            best = i
    return best


def _imports(path: str) -> list[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return found


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, ROOT)
        if rel.startswith(("tests", "benchmarks", "build")) or rel in (
            "trainer/run.py",
            "trainer/prepare.py",
            "trainer/tune.py",
            "trainer/__init__.py",
        ):
            continue
        module = rel[:-3].replace(os.sep, ".").removesuffix(".__init__")
        mine = _layer(module)
        for imported in _imports(path):
            theirs = _layer(imported)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{rel} imports {imported}")
    assert not upward, upward


def test_no_sys_path_edits():
    offenders = [
        p
        for p in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True)
        if "sys.path.insert" in open(p, encoding="utf-8").read()
        and not p.endswith("test_habits.py")
    ]
    assert not offenders, offenders
