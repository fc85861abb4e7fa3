"""Size limits of the code base (issue #10): no module over 400 lines, no function (methods and
nested functions included) over 60 lines, counted from its ``def`` line to its last line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "xception_edge"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _oversized() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(PACKAGE.parent)
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            found.append(f"{where}: {lines} lines (at most {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{where}:{node.lineno} {node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
    return found


def test_no_file_over_400_lines_and_no_function_over_60():
    found = _oversized()
    if found:
        pytest.fail("split these:\n" + "\n".join(found), pytrace=False)
