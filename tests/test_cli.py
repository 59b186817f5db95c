"""The command line: memlens run (--line), python -m memlens."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MEMLENS

pytestmark = pytest.mark.usefixtures("in_tmp")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"



def run(*args, **kwargs):
    return subprocess.run(list(args), capture_output=True, text=True,
                          timeout=120, **kwargs)


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "prog.py"
    path.write_text(
        "import sys\n\n"
        "@profile\n"
        "def work(n):\n"
        "    data = [0] * n\n"
        "    return len(data)\n\n"
        "print('args', sys.argv[1:])\n"
        "work(10**6)\n"
        "sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)\n")
    return path


@pytest.mark.parametrize("prefix", [["run", "--line"], ["--line"]])
def test_run_line_prints_the_table_and_returns_the_exit_code(script, prefix):
    result = run(*MEMLENS, *prefix, str(script), "7", "x")
    assert result.returncode == 7, result.stderr
    assert "args ['7', 'x']" in result.stdout
    assert f"Filename: {script}" in result.stdout
    assert "data = [0] * n" in result.stdout
    assert "Line #    Mem usage    Increment  Occurrences" in result.stdout
    assert "peak" in result.stderr and "exit status 7" in result.stderr


def test_run_line_alloc_adds_columns(script):
    result = run(*MEMLENS, "run", "--line", "--alloc", str(script))
    assert result.returncode == 0, result.stderr
    assert "Allocated          Net" in result.stdout


def test_run_without_line_reports_the_peak(tmp_path):
    result = run(*MEMLENS, "run", "-c",
                 "b = bytearray(b'x') * (100 * 2**20); del b")
    assert result.returncode == 0
    assert "peak" in result.stderr and "MiB above start" in result.stderr


def test_run_module(tmp_path):
    (tmp_path / "mymod.py").write_text("import sys\nprint('mod', sys.argv)\n")
    result = run(*MEMLENS, "run", "-m", "mymod", "a",
                 cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "mod [" in result.stdout and "'a'" in result.stdout


def test_program_error_shows_its_traceback(tmp_path):
    prog = tmp_path / "fails.py"
    prog.write_text("def f():\n    raise ValueError('boom')\nf()\n")
    result = run(*MEMLENS, "run", str(prog))
    assert result.returncode == 1
    assert "ValueError: boom" in result.stderr
    assert "memlens/cli/" not in result.stderr


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.py", "no such file"),
    (lambda d: d, "it is a directory"),
    (lambda d: (d / "bin.py").write_bytes(b"\x00\x01\x02") and d / "bin.py",
     "binary content"),
])
def test_bad_script_gets_one_clear_line(tmp_path, make, message):
    target = make(tmp_path)
    result = run(*MEMLENS, "run", str(target))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_syntax_error_is_shown_as_python_shows_it(tmp_path):
    prog = tmp_path / "bad.py"
    prog.write_text("x = (\n")
    result = run(*MEMLENS, "run", str(prog))
    assert result.returncode == 1
    assert "SyntaxError" in result.stderr and "bad.py" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_option_and_help():
    result = run(*MEMLENS, "run", "--bogus", "x.py")
    assert result.returncode == 2 and "unrecognized" in result.stderr
    result = run(*MEMLENS, "run", "--help")
    assert result.returncode == 0 and "--line" in result.stdout
    result = run(*MEMLENS, "run")
    assert result.returncode == 2 and "give a script" in result.stderr


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("memlens")
    result = run(str(exe), "run", "--line", str(EXAMPLES / "line_demo.py"))
    assert result.returncode == 0, result.stderr
    assert "b = [2] * (2 * 10 ** 7)" in result.stdout
