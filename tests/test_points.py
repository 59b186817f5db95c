"""Memory points (SPEC 6): MEMPOINT, MEMLOGS, MEMPRINT, MEMORY, MEMTRACE.

MEMLOGS is one log per process, so the tests that need a known log (the
IDs given to repeats, what ``import memlens.builtins`` logs, the docs'
session) run in a fresh interpreter.
"""
import copy
import pickle
import re
import subprocess
import sys
from collections import UserList
from pathlib import Path

import pytest

from memlens import points

SESSION_PAGE = Path(__file__).resolve().parent.parent / "docs" / "objects.md"
SESSION_MARKER = "<!-- doctest: memory points session"
MiB = 2**20


def run_fresh(code):
    """Runs `code` in a new interpreter; returns its standard output."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, encoding="utf-8")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_mempoint_returns_none_so_a_prompt_echoes_nothing():
    count = len(points.MEMLOGS)
    assert points.MEMPOINT("returns none") is None
    assert points.MEMPOINT() is None
    assert len(points.MEMLOGS) == count + 2
    assert points.MEMLOGS[-2].ID.startswith("returns none")
    assert points.MEMLOGS[-2].memory > 0


def test_any_object_is_an_id_and_repeats_get_a_number():
    out = run_fresh(
        "from memlens.points import MEMPOINT, MEMLOGS\n"
        "class Named:\n"
        "    def __str__(self):\n"
        "        return 'named'\n"
        "MEMPOINT(); MEMPOINT(); MEMPOINT(None)\n"
        "MEMPOINT(3); MEMPOINT(3); MEMPOINT('3')\n"
        "MEMPOINT(Named()); MEMPOINT(('a', 1))\n"
        "print(MEMLOGS.IDs)\n")
    assert out.strip() == repr(["None", "None-2", "None-3", "3", "3-2",
                                "3-3", "named", "('a', 1)"])


def test_memlogs_is_the_one_memlogslist_a_userlist_shown_as_a_list():
    points.MEMPOINT("shown as a list")
    logs = points.MEMLOGS
    assert type(logs).__name__ == "MemLogsList"
    assert type(logs) is points.MemLogsList
    assert isinstance(logs, UserList)
    assert repr(logs) == repr(list(logs))
    assert repr(logs).startswith("[MemLog(ID=")
    assert repr(logs[-1]) == (f"MemLog(ID='shown as a list', "
                              f"memory={logs[-1].memory})")
    assert points.MemLog._fields == ("ID", "memory")
    with pytest.raises(TypeError, match="one MemLogsList"):
        points.MemLogsList()


def test_old_class_name_memlogs_still_imports():
    from memlens.points import MemLogs

    assert MemLogs is points.MemLogsList
    assert isinstance(points.MEMLOGS, MemLogs)
    for name in points.__all__:
        assert getattr(points, name) is not None


def _iadd(logs):
    logs += [logs[0]]


def _imul(logs):
    logs *= 2


def _set_data(logs):
    logs.data = []


REFUSED = {
    "append": lambda logs: logs.append(logs[0]),
    "extend": lambda logs: logs.extend([logs[0]]),
    "insert": lambda logs: logs.insert(0, logs[0]),
    "remove": lambda logs: logs.remove(logs[0]),
    "pop": lambda logs: logs.pop(),
    "pop(0)": lambda logs: logs.pop(0),
    "clear": lambda logs: logs.clear(),
    "sort": lambda logs: logs.sort(),
    "reverse": lambda logs: logs.reverse(),
    "item assignment": lambda logs: logs.__setitem__(0, logs[0]),
    "slice assignment": lambda logs: logs.__setitem__(slice(0, 1), []),
    "item deletion": lambda logs: logs.__delitem__(0),
    "slice deletion": lambda logs: logs.__delitem__(slice(None)),
    "+": lambda logs: logs + [logs[0]],
    "+ on the right": lambda logs: [logs[0]] + logs,
    "*": lambda logs: logs * 2,
    "* on the right": lambda logs: 2 * logs,
    "+=": _iadd,
    "*=": _imul,
    "assigning .data": _set_data,
}


@pytest.mark.parametrize("change", REFUSED.values(), ids=REFUSED.keys())
def test_memlogs_refuses_every_change_but_mempoint(change):
    points.MEMPOINT("before a refused change")
    logs = points.MEMLOGS
    before = list(logs)
    with pytest.raises(TypeError, match=r"MEMLOGS is read-only: .* not "
                                        r"allowed; add points with MEMPOINT"):
        change(logs)
    assert logs is points.MEMLOGS and list(logs) == before


def test_memlogs_data_is_a_copy_that_cannot_change_the_log():
    points.MEMPOINT("data is a copy")
    count = len(points.MEMLOGS)
    points.MEMLOGS.data.append("not a log")
    points.MEMLOGS.data.clear()
    assert len(points.MEMLOGS) == count
    assert points.MEMLOGS.data == list(points.MEMLOGS)


def test_memlogs_reads_like_a_list():
    points.MEMPOINT("read first")
    points.MEMPOINT("read second")
    logs = points.MEMLOGS
    plain = list(logs)
    first, second = logs[-2], logs[-1]
    assert isinstance(second, points.MemLog) and second.ID == "read second"
    assert type(logs[-2:]) is list and logs[-2:] == [first, second]
    assert len(logs) == len(plain) >= 2
    assert [log for log in logs] == plain
    assert list(reversed(logs)) == plain[::-1]
    assert logs == plain and plain == logs and logs != plain[:-1]
    assert second in logs and ("read second", 0) not in logs
    assert logs.index(second) == len(plain) - 1 and logs.count(first) == 1
    assert logs.IDs[-2:] == ["read first", "read second"]
    assert logs.memories[-2:] == [first.memory, second.memory]
    assert logs.filter(lambda log: log.ID.startswith("read ")) == [first,
                                                                   second]
    assert logs.map(lambda log: log.ID)[-1] == "read second"
    for snapshot in (logs.copy(), copy.copy(logs), copy.deepcopy(logs),
                     pickle.loads(pickle.dumps(logs))):
        assert type(snapshot) is list and snapshot == plain


def test_memory_logs_nothing():
    count = len(points.MEMLOGS)
    assert points.MEMORY() > 0
    assert len(points.MEMLOGS) == count


def test_memprint_shows_index_memory_in_mib_an_arrow_and_the_id():
    # MEMORY() is replaced by a known figure: 2.03 MiB, then 123.456 MiB.
    out = run_fresh(
        "from memlens import points\n"
        "figures = iter([2_128_610] + [int(123.456 * 2**20)] * 10)\n"
        "points.MEMORY = lambda: next(figures)\n"
        "points.MEMPOINT('memlens import')\n"
        "for i in range(10):\n"
        "    points.MEMPOINT('loop')\n"
        "points.MEMPRINT()\n")
    lines = out.splitlines()
    assert lines[0] == " 0    2.03 MB → memlens import"
    assert lines[1] == " 1  123.46 MB → loop"
    assert lines[10] == "10  123.46 MB → loop-10"
    assert len(lines) == 11


def test_memprint_figures_are_the_logged_bytes_over_two_to_the_twenty(
        capsys):
    points.MEMPOINT("printed")
    points.MEMPRINT()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(points.MEMLOGS)
    for i, (line, log) in enumerate(zip(lines, points.MEMLOGS)):
        match = re.fullmatch(r"([ \d]{2,}) ([ \d]{4,}\.\d\d) MB → (.*)", line)
        assert match, line
        assert int(match[1]) == i and match[3] == log.ID
        assert abs(float(match[2]) - log.memory / MiB) <= 0.005


def test_memtrace_records_before_and_after():
    @points.MEMTRACE
    def work():
        return 7

    assert work() == 7
    assert points.MEMLOGS.IDs[-2:] == ["Before work()", "After work()"]
    assert work.__name__ == "work"
    with pytest.raises(TypeError, match="MEMTRACE decorates callables"):
        points.MEMTRACE(3)


def test_import_memlens_builtins_logs_memlens_import_first():
    out = run_fresh(
        "import builtins\n"
        "import memlens.builtins\n"
        "import memlens.builtins\n"
        "from memlens import points\n"
        "for name in ('MEMPOINT', 'MEMLOGS', 'MEMPRINT', 'MEMORY',\n"
        "             'MEMTRACE'):\n"
        "    assert getattr(builtins, name) is getattr(points, name), name\n"
        "MEMPRINT()\n")
    assert re.fullmatch(r" 0 +\d+\.\d\d MB → memlens import\n", out), out


def test_builtins_and_a_ten_million_list(tmp_path):
    script = tmp_path / "points.py"
    script.write_text(
        "import memlens.builtins\n"
        "import builtins\n"
        "assert builtins.MEMLOGS.IDs == ['memlens import']\n"
        "data = list(range(10**7))\n"
        "MEMPOINT('with list')\n"
        "del data\n"
        "MEMPOINT('without')\n"
        "MEMPRINT()\n"
        "big, small = MEMLOGS.memories[1:]\n"
        "print('ratio', big / small)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True,
                         text=True, encoding="utf-8", check=True).stdout
    assert "with list" in out
    ratio = float(out.split("ratio")[1])
    assert ratio > 100


def _docs_session():
    """The docs' memory points session: the fenced block after the
    marker, and the page's line its first line is on."""
    text = SESSION_PAGE.read_text(encoding="utf-8")
    assert SESSION_MARKER in text, "docs/objects.md lost the session's marker"
    after = text[text.index(SESSION_MARKER):]
    match = re.search(r"^```(?:pycon|python)\n(.*?)^```$", after,
                      re.DOTALL | re.MULTILINE)
    assert match, "no fenced block after the session's marker"
    lineno = text[:text.index(SESSION_MARKER) + match.start(1)].count("\n")
    return match[1], lineno


RUN_SESSION = """\
import doctest, sys
text, lineno = sys.stdin.read(), int(sys.argv[1])
test = doctest.DocTestParser().get_doctest(
    text, {"__name__": "__main__"}, "docs memory points session",
    "docs/objects.md", lineno)
runner = doctest.DocTestRunner(
    optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
runner.run(test)
print("examples", len(test.examples), "failed", runner.failures)
"""


def test_docs_memory_points_session_runs_as_written():
    session, lineno = _docs_session()
    done = subprocess.run(
        [sys.executable, "-c", RUN_SESSION, str(lineno)], input=session,
        capture_output=True, text=True, encoding="utf-8")
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1].split()
    assert last[0] == "examples" and int(last[1]) >= 10, done.stdout
    assert last[2:] == ["failed", "0"], done.stdout
