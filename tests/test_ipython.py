"""IPython magics: %load_ext memlens, the per-cell watcher, %memit."""
import gc
import html
import os
import re
import subprocess
import sys
import weakref

import pytest

IPython = pytest.importorskip("IPython")

from IPython.core.error import UsageError  # noqa: E402

import memlens  # noqa: E402
from memlens import _core  # noqa: E402

from conftest import MiB, figures  # noqa: E402

MEMIT = re.compile(r"peak memory: (\d+\.\d\d) MiB, increment: (-?\d+\.\d\d) MiB")
WATCH = re.compile(
    r"In \[(\d+)\] used (-?\d+\.\d\d) MiB RAM in \d+\.\d\d s, peaked "
    r"(\d+\.\d\d) MiB above start and end, total RAM usage \d+\.\d\d MiB")


@pytest.fixture(scope="session")
def shell():
    from IPython.testing.globalipapp import start_ipython

    return start_ipython()


@pytest.fixture
def ip(shell):
    """The shell with memlens loaded; unloaded (and checked) afterwards."""
    shell.run_line_magic("load_ext", "memlens")
    shell.user_ns["np"] = pytest.importorskip("numpy")
    yield shell
    shell.run_line_magic("unload_ext", "memlens")


def run(ip, source):
    result = ip.run_cell(source, store_history=True)
    return result


def memit_figures(text):
    match = MEMIT.search(text)
    assert match, text
    return float(match[1]), float(match[2])


def test_ipython_is_imported_only_when_the_extension_loads():
    code = ("import sys, memlens\nmemlens.measure\nmemlens.rss()\n"
            "print('IPython' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "False"


def test_load_registers_magics_and_nothing_else(shell):
    events = {k: list(v) for k, v in shell.events.callbacks.items()}
    state = _core.state()
    shell.run_line_magic("load_ext", "memlens")
    try:
        magics = shell.magics_manager.magics
        assert {"memlens", "memit"} <= set(magics["line"])
        assert "memit" in magics["cell"]
        assert {k: list(v) for k, v in shell.events.callbacks.items()} == events
        assert _core.state() == state
    finally:
        shell.run_line_magic("unload_ext", "memlens")
    assert "memit" not in shell.magics_manager.magics["line"]
    assert "memlens" not in shell.magics_manager.magics["line"]
    assert "memit" not in shell.magics_manager.magics["cell"]


def test_unload_removes_a_running_watcher(shell):
    events = {k: list(v) for k, v in shell.events.callbacks.items()}
    shell.run_line_magic("load_ext", "memlens")
    shell.run_line_magic("memlens", "on")
    shell.run_line_magic("unload_ext", "memlens")
    assert {k: list(v) for k, v in shell.events.callbacks.items()} == events
    assert _core.state()["open_windows"] == 0


def test_watcher_prints_one_line_per_cell_and_keeps_history(ip, capsys):
    run(ip, "%memlens on")
    capsys.readouterr()
    result = run(ip, "x = 41 + 1\nprint('the cell')")
    out = capsys.readouterr().out
    assert out.index("the cell") < out.index("used")
    match = WATCH.search(out)
    assert match and int(match[1]) == result.execution_count
    history = ip.run_line_magic("memlens", "history")
    newest = history[-1]
    assert newest.execution_count == result.execution_count
    assert newest.elapsed >= 0 and newest.peak >= 0
    assert set(newest.to_dict()) >= {"execution_count", "delta", "peak",
                                     "elapsed"}
    assert "<table" in history._repr_html_() and "used" in str(history)
    ip.run_line_magic("memlens", "status")
    assert "memlens watcher: on" in capsys.readouterr().out
    run(ip, "%memlens off")
    capsys.readouterr()
    run(ip, "y = 1")
    assert "used" not in capsys.readouterr().out
    ip.run_line_magic("memlens", "status")
    assert "memlens watcher: off" in capsys.readouterr().out


@figures
def test_watcher_peak_is_the_transient_above_start_and_end(ip, capsys):
    n = 760 * MiB // 8
    run(ip, f"big = np.ones({n})")
    run(ip, "%memlens on")
    capsys.readouterr()
    run(ip, "del big")
    used, peak = WATCH.search(capsys.readouterr().out).group(2, 3)
    assert float(used) < -700 and float(peak) == 0.0
    run(ip, f"tmp = np.ones({n}); res = tmp * 2; del tmp")
    used, peak = WATCH.search(capsys.readouterr().out).group(2, 3)
    assert abs(float(used) - 760) < 760 * 0.03
    assert abs(float(peak) - 760) < 760 * 0.03
    run(ip, "del res")
    run(ip, "%memlens off")


def test_watcher_history_is_bounded(ip, monkeypatch):
    from memlens import ipython as mip

    magics = mip._LOADED[ip]
    magics.watcher.history = type(magics.watcher.history)(maxlen=3)
    run(ip, "%memlens on")
    for i in range(6):
        run(ip, f"v = {i}")
    run(ip, "%memlens off")
    assert len(ip.run_line_magic("memlens", "history")) == 3


def test_memit_prints_memory_profilers_line(ip, capsys):
    run(ip, "%memit x = [0] * 10**6")
    peak, increment = memit_figures(capsys.readouterr().out)
    assert peak > 0 and increment >= 0


def test_memit_runs_statement_once_per_repeat(ip, capsys):
    ip.user_ns["counter"] = []
    run(ip, "%memit counter.append(1)")
    run(ip, "%memit -r 5 counter.append(1)")
    run(ip, "%%memit -r 3\ncounter.append(1)\ncounter.append(1)")
    assert len(ip.user_ns["counter"]) == 1 + 5 + 6


def test_memit_starts_no_process_sleeps_never_and_collects_only_on_request(
        ip, monkeypatch, capsys):
    import gc
    import os
    import time

    def forbidden(*args, **kwargs):
        raise AssertionError("memit must not do this")

    collected = []
    monkeypatch.setattr(os, "fork", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(time, "sleep", forbidden)
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(1) or 0)
    run(ip, "%memit -r 3 x = 1")
    assert collected == []
    run(ip, "%memit -r 2 --gc x = 1")
    assert collected == [1, 1]
    assert MEMIT.search(capsys.readouterr().out)


def test_memit_o_returns_a_result_and_q_is_quiet(ip, capsys):
    # 40 MiB: above glibc's largest mmap threshold, so always fresh pages.
    result = ip.run_line_magic(
        "memit", "-o -q -r 3 x = np.ones(40 * 2**20 // 8)")
    assert capsys.readouterr().out == ""
    assert len(result.peaks) == len(result.increments) == 3
    assert result.peak == max(result.peaks)
    assert result.increment == max(result.increments)
    assert result.increment >= 39
    assert str(result).startswith("peak memory: ")
    assert "<table" in result._repr_html_()
    assert result.to_dict()["unit"] == "MiB"


def test_memit_result_has_memory_profilers_fields(ip):
    before = memlens.rss() / MiB
    result = ip.run_line_magic(
        "memit", "-o -q -r 3 -i 0.05 -t 100 x = np.ones(40 * 2**20 // 8)")
    after = memlens.rss() / MiB
    # mem_usage: one peak per run, in MiB (memory_profiler's list).
    assert result.mem_usage == result.peaks and len(result.mem_usage) == 3
    # baseline: one figure, the memory just before the first run.
    assert isinstance(result.baseline, float)
    assert before - 1 <= result.baseline <= after + 1
    assert result.baseline <= min(result.mem_usage)
    assert result.baseline == pytest.approx(
        result.peaks[0] - result.increments[0])
    # The first run holds 40 MiB more than before it.
    assert max(result.mem_usage) - result.baseline >= 39
    assert (result.interval, result.timeout) == (0.05, 100.0)
    assert result.include_children is False
    assert str(result) == (f"peak memory: {max(result.mem_usage):.2f} MiB, "
                           f"increment: {result.increment:.2f} MiB")
    d = result.to_dict()
    assert (d["baseline"], d["interval"], d["timeout"]) == (
        result.baseline, 0.05, 100.0)


def test_memit_result_interval_and_timeout_defaults(ip):
    result = ip.run_line_magic("memit", "-o -q x = 1")
    assert (result.interval, result.timeout) == (0.1, None)
    assert len(result.mem_usage) == 1
    assert result.baseline <= result.mem_usage[0]


def test_memit_result_pretty_prints_as_memory_profiler_does(ip):
    from IPython.lib.pretty import pretty

    result = ip.run_line_magic("memit", "-o -q x = 1")
    assert pretty(result) == f"<MemitResult : {result}>"


@figures
def test_memit_300mb_twenty_times_within_3_percent(ip):
    misses = []
    for _ in range(20):
        result = ip.run_line_magic(
            "memit", "-o -q b = np.ones(300 * 2**20 // 8); del b")
        if abs(result.increment - 300) > 9:
            misses.append(result.increment)
    assert not misses


def test_cell_memit_runs_the_cell(ip, capsys):
    run(ip, "%%memit\nimport math\ncell_value = math.sqrt(16)")
    assert ip.user_ns["cell_value"] == 4.0
    assert MEMIT.search(capsys.readouterr().out)


def test_cell_memit_runs_the_line_as_setup_once_and_measures_the_body(
        ip, capsys):
    ip.user_ns["runs"] = []
    result = ip.run_cell_magic(
        "memit", "-o -q -r 3 setup_runs = []; runs.append('setup')",
        "runs.append('body')\nsetup_runs.append(1)\n")
    assert ip.user_ns["runs"] == ["setup", "body", "body", "body"]
    assert ip.user_ns["setup_runs"] == [1, 1, 1]
    assert len(result.peaks) == 3 and capsys.readouterr().out == ""
    # A setup that raises shows its own traceback; nothing is measured.
    result = run(ip, "%%memit {}['no such key']\nruns.append(1)\n")
    assert isinstance(result.error_in_exec, KeyError)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "KeyError" in text and "{}['no such key']" in text
    assert not MEMIT.search(text)
    assert ip.user_ns["runs"] == ["setup", "body", "body", "body"]
    assert _core.state()["open_windows"] == 0


def test_cell_memit_setup_is_not_measured(ip):
    # 40 MiB: above glibc's largest mmap threshold, so always fresh pages.
    result = ip.run_cell_magic(
        "memit", "-o -q setup_held = np.ones(40 * 2**20 // 8)",
        "x = 1\n")
    assert result.increment < 20
    del ip.user_ns["setup_held"]


def test_cell_memit_with_setup_and_an_empty_body_is_a_usage_error(ip):
    with pytest.raises(UsageError, match="no statement"):
        ip.run_cell_magic("memit", "x = 1", "\n")


@figures
def test_cell_memit_setup_import_is_left_out_of_a_fresh_session():
    # A shell of its own in a fresh interpreter, so that NumPy is imported
    # by the setup line (IPython.testing would import it beforehand).
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "assert 'numpy' not in sys.modules\n"
        "ip.run_line_magic('load_ext', 'memlens')\n"
        "r = ip.run_cell_magic('memit', '-o -q import numpy as np, "
        "numpy.random', 'np.random.randn(1000000)\\n')\n"
        "print(r.increment, 'numpy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True, timeout=120).stdout.split()
    increment, imported = float(out[0]), out[1]
    # One array of a million doubles: 7.63 MiB; the import is 20 MiB more.
    assert imported == "True"
    assert 6.5 <= increment <= 9, increment


def test_memit_timeout_stops_repeating(ip):
    ip.user_ns["ticks"] = []
    code = "ticks.append(1); sum(range(3 * 10**6))"
    ip.run_line_magic("memit", f"-q -r 1000 -t 0.05 {code}")
    assert 1 <= len(ip.user_ns["ticks"]) < 1000


@figures
def test_memit_c_counts_a_child_holding_100mb(ip, capsys, tmp_path):
    script = ("import sys, time\nb = bytearray(b'x') * (100 * 2**20)\n"
              "print('ready', flush=True)\nsys.stdin.read()\n")
    ip.user_ns.update(sys=sys, subprocess=subprocess, script=script)
    start = ("child = subprocess.Popen([sys.executable, '-c', script], "
             "stdin=subprocess.PIPE, stdout=subprocess.PIPE); "
             "child.stdout.readline()")
    try:
        with_children = ip.run_line_magic("memit", f"-o -q -c {start}")
        ip.user_ns["child"].communicate()
        without = ip.run_line_magic("memit", f"-o -q {start}")
        ip.user_ns["child"].communicate()
    finally:
        child = ip.user_ns.get("child")
        if child and child.poll() is None:
            child.kill()
            child.wait()
    assert with_children.increment >= 100
    assert without.increment < 50


def test_unknown_flag_is_a_usage_error_with_usage(ip):
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("memit", "-z pass")
    assert "-z" in str(info.value) and "%memit [-r R]" in str(info.value)


@pytest.mark.parametrize("line", ["-r 0 pass", "-t -1 pass", "-r x pass", ""])
def test_bad_memit_arguments_are_usage_errors(ip, line):
    with pytest.raises(UsageError):
        ip.run_line_magic("memit", line)


@pytest.mark.parametrize("line", ["-t nan", "-t inf", "-i nan", "-i inf"])
def test_memit_non_finite_time_or_interval_is_a_usage_error(ip, line):
    ip.user_ns.pop("memit_ran", None)
    with pytest.raises(UsageError, match="finite positive"):
        ip.run_line_magic("memit", f"{line} memit_ran = 1")
    assert "memit_ran" not in ip.user_ns


def test_raising_statement_shows_the_original_traceback(ip, capsys):
    result = run(ip, "%memit 1/0")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    err = capsys.readouterr()
    text = err.out + err.err
    assert "ZeroDivisionError" in text and "1/0" in text
    assert _core.state()["open_windows"] == 0


def test_raising_cell_under_the_watcher_still_reports(ip, capsys):
    run(ip, "%memlens on")
    capsys.readouterr()
    result = run(ip, "raise KeyError('k')")
    assert isinstance(result.error_in_exec, KeyError)
    assert WATCH.search(capsys.readouterr().out)
    run(ip, "%memlens off")


def test_memlens_bogus_prints_the_usage(ip, capsys):
    run(ip, "%memlens bogus")
    out = capsys.readouterr().out
    assert "unknown action 'bogus'" in out and "%memlens [action]" in out


@pytest.mark.slow
def test_terminal_ipython_prints_the_line_before_the_next_prompt(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "IPYTHONDIR": str(tmp_path / "ipython"), "TERM": "xterm",
           "PROMPT_TOOLKIT_NO_CPR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    for name in ("LD_PRELOAD", "PYTHONMALLOC", "ASAN_OPTIONS",
                 "UBSAN_OPTIONS", "MEMLENS_SANITIZED"):
        if name in os.environ:
            env[name] = os.environ[name]
    child = pexpect.spawn(
        sys.executable,
        ["-m", "IPython", "--no-banner", "--colors=NoColor",
         "--HistoryManager.hist_file=:memory:", "--no-confirm-exit"],
        env=env, encoding="utf-8", timeout=60, dimensions=(50, 250))
    ansi = re.compile(r"\x1b\][^\x07]*\x07|\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")
    try:
        child.expect(r"In \[1\]:")
        child.sendline("%load_ext memlens")
        child.expect(r"In \[2\]:")
        child.sendline("%memlens on")
        child.expect(r"In \[3\]:")
        child.sendline("print('cell' + '-output')")
        child.expect(r"In \[4\]:")
        screen = ansi.sub("", child.before)
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert "cell-output" in screen
    line = WATCH.search(screen)
    assert line, screen
    assert line[1] == "3"
    assert screen.index("cell-output") < line.start()


@pytest.mark.slow
def test_jupyter_kernel_runs_the_magics(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "%load_ext memlens",
        "%memlens on",
        "%memit x = bytearray(b'x') * (50 * 2**20)",
        "%%memit -r 2\ny = bytearray(b'x') * (20 * 2**20)",
        "r = %memit -o -q z = 1\nr",
        "1/0",
        "%memit {}['missing']",
        "print('kernel' + ' alive')",
    ]
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    def text(i):
        return "".join(o.get("text", "") for o in nb.cells[i].outputs
                       if o.output_type == "stream")

    assert "memlens watcher: on" in text(1)
    assert MEMIT.search(text(2)) and WATCH.search(text(2))
    assert MEMIT.search(text(3)) and WATCH.search(text(3))
    rich = [o for o in nb.cells[4].outputs
            if o.output_type == "execute_result"]
    assert "<table" in rich[0]["data"]["text/html"]
    assert "peak memory:" in rich[0]["data"]["text/plain"]
    ansi = re.compile(r"\x1b\[[0-9;]*m")

    def error(i, ename, source):
        errors = [o for o in nb.cells[i].outputs if o.output_type == "error"]
        assert errors and errors[0].ename == ename
        assert source in ansi.sub("", "\n".join(errors[0].traceback))

    error(5, "ZeroDivisionError", "1/0")
    assert WATCH.search(text(5))
    error(6, "KeyError", "{}['missing']")
    assert "kernel alive" in text(7)


def test_mprun_profiles_a_function_defined_in_a_cell(ip, capsys, line_backend):
    run(ip, "def cell_func(n):\n    data = [0] * n\n    total = sum(data)\n"
            "    return total\n")
    capsys.readouterr()
    result = run(ip, "%mprun -f cell_func cell_func(10**6)")
    assert result.error_in_exec is None
    out = capsys.readouterr().out
    assert "Line #    Mem usage    Increment  Occurrences   Line Contents" in out
    assert "data = [0] * n" in out and "total = sum(data)" in out
    # The allocator's figure is exact whatever pages it had kept before.
    run(ip, "%mprun --alloc -f cell_func cell_func(10**6)")
    out = capsys.readouterr().out
    match = re.search(r"(\d+\.\d) MiB\s+(\d+\.\d) MiB\s+1\s+data = \[0\]",
                      out)
    assert match and abs(float(match[1]) - 7.6) < 0.05, out


def mprun_increment(ip, capsys, magic, contents):
    """Runs `%mprun ...` (`magic`); the Increment, in MiB, of the table's
    one-occurrence row whose source is `contents`."""
    capsys.readouterr()
    result = run(ip, magic)
    assert result.error_in_exec is None
    out = capsys.readouterr().out
    match = re.search(r"(-?\d+\.\d) MiB\s+1\s+" + re.escape(contents),
                      out)
    assert match, out
    return float(match[1])


@figures
def test_mprun_shows_a_numpy_array_on_its_line(ip, capsys, line_backend):
    run(ip, "def make_array():\n    a = np.ones(10_000_000)\n"
            "    return a\n")
    increment = mprun_increment(ip, capsys, "%mprun -f make_array "
                                "kept = make_array()", "a = np.ones(")
    assert abs(increment - 76.3) <= 0.02 * 76.3
    run(ip, "del kept")


#: The 7.6 MiB list, plus the pages of a fragmented heap that glibc
#: touches again while it merges free chunks for so large a request (up to
#: 1.9 MiB seen after a long test session).
LIST_AND_HEAP_PAGES = 10.0

BUILD_AND_FREE = ("def build_and_free():\n    for _ in range(5):\n"
                  "        x = [0] * 1000000\n        del x\n")


@figures
def test_mprun_is_not_fooled_by_pages_freed_before(ip, capsys, line_backend):
    # Five 8 MB lists built and freed leave their pages to the C heap; a
    # new list would reuse them without a new resident page, and read 0.0.
    run(ip, BUILD_AND_FREE)
    run(ip, "def first_line():\n    a = [1] * 1000000\n    return a\n")
    run(ip, "build_and_free()")
    increment = mprun_increment(ip, capsys, "%mprun -f first_line "
                                "first_line()", "a = [1]")
    assert 7.3 <= increment <= LIST_AND_HEAP_PAGES, increment


@figures
def test_memit_is_not_fooled_by_pages_freed_before(ip, capsys):
    run(ip, BUILD_AND_FREE)
    run(ip, "build_and_free()")
    capsys.readouterr()
    run(ip, "%memit x = [1] * 1000000")
    _, increment = memit_figures(capsys.readouterr().out)
    assert 7.3 <= increment <= LIST_AND_HEAP_PAGES, increment
    run(ip, "del x")


def test_mprun_several_functions_file_and_result(ip, capsys, tmp_path):
    run(ip, "def f1():\n    return [1] * 10\n\ndef f2():\n    return f1()\n")
    path = tmp_path / "prof.txt"
    capsys.readouterr()
    profiler = ip.run_line_magic(
        "mprun", f"-f f1 -f f2 -T {path} -r --alloc f2()")
    out = capsys.readouterr().out
    assert out.count("Filename:") == 2
    assert f"*** Profile printout saved to text file {path}. " in out
    assert path.read_text().count("Filename:") == 2
    assert "Allocated" in path.read_text()
    assert len(profiler.results) == 2


@pytest.mark.parametrize("where", ["missing/prof.txt", "."])
def test_mprun_unwritable_file_is_a_usage_error_before_running(
        ip, capsys, tmp_path, where):
    # A file in a folder that does not exist, and a folder itself.
    path = tmp_path / where
    run(ip, "def marked():\n    return 1\n")
    ip.user_ns.pop("mprun_ran", None)
    capsys.readouterr()
    with pytest.raises(UsageError, match="cannot write -T file"):
        ip.run_line_magic("mprun", f"-f marked -T {path} mprun_ran = marked()")
    assert "mprun_ran" not in ip.user_ns
    assert "Filename:" not in capsys.readouterr().out
    assert not (tmp_path / "missing").exists()


def test_mprun_precision_out_of_range_is_a_usage_error(ip):
    run(ip, "def marked():\n    return 1\n")
    with pytest.raises(UsageError, match="between 0 and 20"):
        ip.run_line_magic("mprun", "-f marked --precision 1000 marked()")


def test_mprun_errors(ip, capsys):
    with pytest.raises(UsageError, match="could not find function 'nope'"):
        ip.run_line_magic("mprun", "-f nope pass")
    with pytest.raises(UsageError, match="-f"):
        ip.run_line_magic("mprun", "pass")
    with pytest.raises(UsageError, match="not a Python function"):
        ip.run_line_magic("mprun", "-f len pass")
    run(ip, "def boom():\n    x = 1\n    raise ValueError(x)\n")
    result = run(ip, "%mprun -f boom boom()")
    assert isinstance(result.error_in_exec, ValueError)
    assert "raise ValueError(x)" in capsys.readouterr().out
    assert not _core.state()["line_profiling"]


def test_memtop_prints_the_top_allocating_lines(ip, capsys):
    run(ip, "def churn():\n    for _ in range(50):\n"
            "        tmp = bytearray(200_000)\n    return len(tmp)\n")
    capsys.readouterr()
    result = run(ip, "%memtop -n 3 churn()")
    assert result.error_in_exec is None
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "Top 3 lines"
    assert "tmp = bytearray(200_000)" in lines[2]
    assert "At the peak (" in out and "Total allocated size:" in out
    kib = float(re.search(r"#1: .*: (\d+\.\d) KiB", lines[1])[1])
    assert kib >= 50 * 200_000 / 1024
    assert not memlens.is_tracing()


@pytest.mark.parametrize("line", ["-f 0", "-f 0 -k traceback", "-f -1",
                                  "-f 101"])
def test_memtop_frames_out_of_range_is_a_usage_error(ip, line):
    ip.user_ns.pop("memtop_ran", None)
    with pytest.raises(UsageError, match="-f must be between 1 and 100"):
        ip.run_line_magic("memtop", f"{line} memtop_ran = 1")
    assert "memtop_ran" not in ip.user_ns and not memlens.is_tracing()


@pytest.mark.parametrize("value", [str(10**23), str(2**40 + 1), "-1"])
def test_memtop_sample_bytes_out_of_range_is_a_usage_error(ip, value):
    ip.user_ns.pop("memtop_ran", None)
    with pytest.raises(UsageError,
                       match="-s must be between 0 and 1099511627776"):
        ip.run_line_magic("memtop", f"-s {value} memtop_ran = 1")
    assert "memtop_ran" not in ip.user_ns and not memlens.is_tracing()


def test_cell_memtop_with_traceback_key_and_result(ip, capsys):
    result = ip.run_cell_magic(
        "memtop", "-k traceback -n 1 -o",
        "def inner():\n    return bytearray(3 * 2**20)\nkept = inner()\n")
    out = capsys.readouterr().out
    assert "Top 1 tracebacks" in out and '  File "' in out
    assert result.snapshot.top(1, key="traceback")[0].size >= 3 * 2**20
    with pytest.raises(UsageError):
        ip.run_line_magic("memtop", "-k bogus pass")
    with pytest.raises(UsageError):
        ip.run_line_magic("memtop", "")
    run(ip, "%memtop 1/0")
    assert not memlens.is_tracing()


def test_cell_memtop_html_shows_the_flame_graph_page_in_the_output(
        ip, capsys, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda *objs, **k: shown.extend(objs))
    result = ip.run_cell_magic(
        "memtop", "--html -o",
        "def inner():\n    return bytearray(3 * 2**20)\nkept = inner()\n")
    assert "return bytearray(3 * 2**20)" in capsys.readouterr().out
    assert len(shown) == 1
    frame = shown[0]._repr_html_()
    assert frame.startswith("<div><iframe ") and "srcdoc=" in frame
    page = html.unescape(frame.split('srcdoc="', 1)[1].rsplit('"', 1)[0])
    # The page of the peak, with the end below it.
    assert page == result.peak.to_html(end=result.snapshot, title="%memtop")
    assert "return bytearray(3 * 2**20)" in page and "<script" in page
    assert not memlens.is_tracing()


def test_memtop_reports_no_line_of_memlens_itself(ip, capsys):
    package = os.path.dirname(memlens.__file__) + os.sep
    run(ip, "%memtop pass")
    out = capsys.readouterr().out
    assert package not in out
    # From 3.12, once sys.monitoring was used in the process (the line
    # profiler's backend), CPython instruments a fresh code object at its
    # first instruction: about 100 bytes on the cell's line 0, the cell's
    # own. Nothing else may show.
    rows = re.findall(r"^#\d+: (.+):(\d+): ", out, re.MULTILINE)
    assert all(name.startswith("<ipython-input") and line == "0"
               for name, line in rows), out
    if sys.version_info < (3, 12):
        assert out.count("Top 0 lines") == 2, out
    result = ip.run_line_magic(
        "memtop", "-o -n 50 memtop_kept = [bytes(100) for _ in range(10)]")
    out = capsys.readouterr().out
    assert package not in out
    for snapshot in (result.snapshot, result.peak):
        stats = snapshot.statistics(by="allocated")
        assert stats
        assert not [s for s in stats if s.filename.startswith(package)]


def test_memtop_native_is_an_option_checked_with_the_others(ip):
    ip.user_ns.pop("memtop_ran", None)
    for line in ("--native -f 0 memtop_ran = 1",
                 "-f 0 --native memtop_ran = 1"):
        with pytest.raises(UsageError, match="-f must be between 1 and 100"):
            ip.run_line_magic("memtop", line)
    with pytest.raises(UsageError, match="-s must be between"):
        ip.run_cell_magic("memtop", "--native -s -1", "memtop_ran = 1")
    assert "memtop_ran" not in ip.user_ns and not memlens.is_tracing()
    usage = ip.magics_manager.magics["line"]["memtop"].__doc__
    assert "--native" in usage


SIZE = 8 * MiB


def test_memtop_native_shows_a_c_library_malloc_on_its_line(ip, capsys,
                                                           touchmem):
    ip.user_ns["touchmem"] = touchmem
    ip.user_ns["SIZE"] = SIZE
    capsys.readouterr()
    try:
        result = ip.run_line_magic(
            "memtop", "--native -o -n 3 block = touchmem.malloc_touch(SIZE)")
        out = capsys.readouterr().out
        assert result.peak.native and result.snapshot.native
        (row,) = [s for s in result.peak.top(3)
                  if s.line == "block = touchmem.malloc_touch(SIZE)"]
        # Every page of the block was written: all of it is resident.
        assert row.native_size == SIZE and row.resident == row.size
        # The line's Python bytes (the address's int, a namespace that
        # grows) are small beside it.
        assert row.size >= SIZE and row.python_size < 16 * 1024
        assert re.search(r"^RSS rose \d+\.\d KiB from the start to the peak; "
                         r"the rows hold \d+\.\d KiB of it \(\d+%\), "
                         r"untracked -?\d+\.\d KiB$", out, re.M), out
        assert "block = touchmem.malloc_touch(SIZE)" in out
    finally:
        touchmem.free(ip.user_ns.pop("block"))
    # Without --native the same malloc is not traced at all.
    try:
        result = ip.run_cell_magic(
            "memtop", "-o", "block = touchmem.malloc_touch(SIZE)\n")
        assert not result.peak.native
        assert result.peak.total < SIZE
        assert "RSS rose" not in capsys.readouterr().out
    finally:
        touchmem.free(ip.user_ns.pop("block"))
    assert not memlens.is_tracing() and not memlens.tracing_native()


@figures  # the peak is RSS's: a sanitizer's allocator moves RSS its own way
def test_cell_memtop_native_traces_the_cell(ip, capsys, touchmem):
    ip.user_ns["touchmem"] = touchmem
    result = ip.run_cell_magic(
        "memtop", "--native -o",
        f"kept = touchmem.malloc_touch({SIZE})\ntouchmem.free(kept)\n")
    out = capsys.readouterr().out
    (row,) = [s for s in result.peak.top(None)
              if s.line == f"kept = touchmem.malloc_touch({SIZE})"]
    assert row.native_size == SIZE
    # Freed before the end: nothing of it is left in the final snapshot.
    assert not [s for s in result.snapshot.top(None)
                if s.line.startswith("kept = ") and s.native_size]
    assert "RSS rose" in out
    assert not memlens.is_tracing() and not memlens.tracing_native()


def test_memsize_prints_the_deep_size(ip, capsys):
    ip.user_ns["payload"] = [bytes(1000) for _ in range(100)]
    run(ip, "%memsize payload")
    out = capsys.readouterr().out
    size = memlens.asizeof(ip.user_ns["payload"])
    assert out.strip() == f"payload: {size / 2**20:.2f} MiB ({size:,} bytes)"
    with pytest.raises(UsageError, match="not an expression"):
        ip.run_line_magic("memsize", "x = 1")
    result = run(ip, "%memsize undefined_name")
    assert isinstance(result.error_in_exec, NameError)


def test_memsize_of_a_function_leaves_out_the_notebook_globals(ip, capsys):
    run(ip, "big_global = bytes(5 * 2**20)\n"
            "def shout(text, times=3):\n"
            "    return text.upper() * times + str(len(big_global))\n")
    run(ip, "%memsize shout")
    out = capsys.readouterr().out
    shout = ip.user_ns["shout"]
    size = sys.getsizeof(shout) + memlens.asizeof(shout.__defaults__)
    assert out.strip() == f"shout: {size / 2**20:.2f} MiB ({size:,} bytes)"
    assert size < 1000
    del ip.user_ns["big_global"], ip.user_ns["shout"]


def test_memheap_prints_the_census(ip, capsys):
    result = ip.run_line_magic("memheap", "-n 3 -o")
    out = capsys.readouterr().out
    assert out.startswith("Partition of a set of ")
    assert len(result.rows) > 3
    with pytest.raises(UsageError):
        ip.run_line_magic("memheap", "-n -1")


def _collected():
    gc.collect()
    gc.collect()


def _line_held():
    """What the line profiler's engine holds, everywhere it could, once
    garbage is collected."""
    from memlens.lineprof import backends
    from memlens.lineprof.profiler import _ENGINE

    _collected()
    return (_core._line_state()["codes"], len(_ENGINE.registry),
            len(backends._COPIES))


def test_mprun_of_a_function_redefined_2000_times_stays_flat(
        ip, capsys, line_backend):
    cell = ("def cell_work(n):\n"
            "    data = [0] * n\n"
            "    return len(data)\n")

    def once():
        result = ip.run_cell(cell, store_history=False)
        assert result.error_in_exec is None
        ref = weakref.ref(ip.user_ns["cell_work"])
        ip.run_line_magic("mprun", "-f cell_work cell_work(100)")
        return ref

    for _ in range(50):  # warm up
        once()
    ip.user_ns.pop("cell_work")
    _collected()
    before, objects = _line_held(), len(gc.get_objects())
    refs = [once() for _ in range(2000)]
    ip.user_ns.pop("cell_work")
    capsys.readouterr()
    _collected()
    assert sum(ref() is not None for ref in refs) == 0
    assert _line_held() == before
    del refs
    _collected()
    # Each run kept would be a function, its registration, its profiler...
    assert len(gc.get_objects()) - objects < 200
