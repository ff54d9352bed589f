"""The `diffperf` command line (diffperf/cli/): one subcommand per tool, tools/*.py calling the same
modules, and the plugin kept to wiring."""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from diffperf.cli import main as cli
from diffperf.cli import report

ROOT = Path(__file__).resolve().parent.parent


def _options(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_command_has_the_options_of_its_tool(name, capsys):
    """`diffperf NAME --help` and the command alone (tools/<name>.py) take the same options."""
    module = cli.COMMANDS[name][0]
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    assert e.value.code == 0
    via_diffperf = capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    alone = capsys.readouterr().out
    assert _options(via_diffperf) == _options(alone) and len(_options(alone)) > 1  # --help and its own


def test_every_tool_is_a_shim_of_a_command():
    """tools/<name>.py imports its command's module and calls its main; nothing edits sys.path."""
    modules = {module.__name__ for module, _, _ in cli.COMMANDS.values()}
    shims = sorted((ROOT / "tools").glob("*.py"))
    assert len(shims) == len(modules)
    for path in shims:
        tree = ast.parse(path.read_text())
        imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert [i.module for i in imports] in ([m] for m in modules), f"{path.name}: {[i.module for i in imports]}"
        assert len(tree.body) <= 3, f"{path.name} holds more than a shim"


def test_no_sys_path_edits():
    for path in [*ROOT.glob("diffperf/**/*.py"), *ROOT.glob("tools/*.py"), *ROOT.glob("tests/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} uses sys.path")


def test_a_command_runs_the_same_through_diffperf_and_alone(tmp_path, capsys):
    """A bad results file: both say so with the same message and exit status 2."""
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"schema_version": 99, "kind": "diffperf-results"}))
    assert cli.main(["report", "summary", str(bad)]) == 2
    via_diffperf = capsys.readouterr().err
    assert report.main(["summary", str(bad)]) == 2
    assert capsys.readouterr().err == via_diffperf and "schema_version" in via_diffperf


def test_python_m_diffperf_cli_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "diffperf.cli", "--help"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for name in cli.COMMANDS:
        assert name in out.stdout


def test_plugin_hooks_and_fixtures_are_a_few_lines():
    """diffperf/plugin.py only wires: no function of more than three statements (a docstring
    aside), and no private pytest module (diffperf/session.py says where it needs one)."""
    tree = ast.parse((ROOT / "diffperf" / "plugin.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
            assert len(body) <= 3, f"plugin.{node.name}: {len(body)} statements"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            assert not any((n or "").startswith("_pytest") for n in names)
