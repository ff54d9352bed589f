"""Every test function in perf_tests/ reads in at most ten lines (its decorators and signature
included): the rules it applies live in the library and come back as verdict objects."""
import ast
from pathlib import Path

PERF_TESTS = Path(__file__).resolve().parent.parent / "perf_tests"
MAX_LINES = 10


def long_tests(source: str) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if node.end_lineno - first + 1 > MAX_LINES:
                out.append((node.name, node.end_lineno - first + 1))
    return out


def test_every_perf_test_is_at_most_ten_lines():
    files = sorted(PERF_TESTS.glob("test_*.py"))
    assert files
    too_long = {f.name: long for f in files if (long := long_tests(f.read_text()))}
    assert not too_long, f"test functions over {MAX_LINES} lines: {too_long}"


def test_the_check_sees_a_long_test():
    body = "\n".join(f"    x{i} = {i}" for i in range(10))
    assert long_tests(f"@mark\ndef test_long():\n{body}\n") == [("test_long", 12)]
    assert long_tests("def test_short():\n    pass\n") == []
