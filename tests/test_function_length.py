"""Every function in enfold/ fits on a screen: at most MAX_LINES lines, decorators aside.

A longer function does several jobs; split it into named helpers (or an endpoints class with
one method per endpoint) rather than raising the limit.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "enfold"
MAX_LINES = 80


def long_functions(root: Path, limit: int) -> list[str]:
    """``path:line name (N lines)`` for every function or method under ``root`` longer than
    ``limit`` lines, nested ones included."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} "
                                 f"({lines} lines)")
    return found


def test_no_function_in_enfold_is_longer_than_the_limit():
    assert PACKAGE.is_dir()
    too_long = long_functions(PACKAGE, MAX_LINES)
    assert not too_long, (f"functions over {MAX_LINES} lines (split them into named helpers): "
                          + "; ".join(too_long))


def test_the_check_finds_a_long_function(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))  # def line + 80 = 81 lines
    (pkg / "sub" / "long.py").write_text(f"def long():\n{body}\n\n\ndef short():\n    pass\n")
    nested = "\n".join(f"        y{i} = {i}" for i in range(MAX_LINES))
    (pkg / "nested.py").write_text(f"class A:\n    async def method(self):\n{nested}\n")
    (pkg / "fits.py").write_text("def fits():\n" + "\n".join(
        f"    z{i} = {i}" for i in range(MAX_LINES - 1)) + "\n")
    found = long_functions(pkg, MAX_LINES)
    assert found == ["pkg/nested.py:2 method (81 lines)", "pkg/sub/long.py:1 long (81 lines)"]
