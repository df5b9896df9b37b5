"""Function-local imports of qbus modules: only the listed ones, each deferring an extra.

A local import hides an edge from import-linter's cycle checks only if the linter is
told to skip it, and it hides the dependency from a reader always. The layer contract
(pyproject.toml) makes them unnecessary; what remains defers an optional heavy
dependency, and this test fails on any other, naming it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "qbus"

# (file under qbus/, imported module): why it is deferred.
ALLOWED = {
    ("client.py", "qbus.engines.convert_qiskit"): "imports qiskit, an optional extra",
    ("ai/draw.py", "qbus.engines.convert_qiskit"): "imports qiskit, an optional extra",
    ("cli/info.py", "qbus.engines.registry"): "engine_table loads every installed framework",
}


def _local_qbus_imports() -> set[tuple[str, str]]:
    found = set()
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        type_checking = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for node in ast.walk(block)
        }
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if id(node) in type_checking:
                    continue
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qbus"):
                    found.add((path.relative_to(ROOT).as_posix(), node.module))
                elif isinstance(node, ast.Import):
                    found.update(
                        (path.relative_to(ROOT).as_posix(), alias.name)
                        for alias in node.names
                        if alias.name.startswith("qbus")
                    )
    return found


def test_only_the_listed_local_imports_remain() -> None:
    found = _local_qbus_imports()
    assert found - ALLOWED.keys() == set(), "move these imports to the top of their module"
    # A listed import that is gone comes off the list, so the list only shrinks.
    assert ALLOWED.keys() - found == set()
