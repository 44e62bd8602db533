"""No function in the package is longer than about 80 lines unless a comment at its top says why."""

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "bifrost_pipeline"
MAX_LINES = 80
# A function may be longer when the comment block above it (or one of its first lines) says why.
WHY_MARK = "long on purpose"


def long_functions(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = node.end_lineno - node.lineno + 1
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1  # 0-based
            above = first
            while above > 0 and lines[above - 1].strip().startswith("#"):  # the comment block above it
                above -= 1
            head = lines[above : node.lineno + 3]
            if length > MAX_LINES and not any(WHY_MARK in line for line in head):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_long_without_saying_why():
    assert long_functions(PACKAGE_DIR) == []


def test_a_long_function_without_a_reason_is_found(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES + 1))
    (tmp_path / "m.py").write_text(f"def long():\n{body}\n\n\n# long on purpose: a table\ndef table():\n{body}\n")
    assert long_functions(tmp_path) == [f"{tmp_path.name}/m.py:1 long ({MAX_LINES + 2} lines)"]
