"""memory_profiler's line-profile API on memlens: the ``profile`` builtin
of ``memlens run --line`` (decorator, context manager, enable_by_count),
``profile(func, stream=, precision=, backend=)``, ``show_results``,
``LogFile``, and the functions and comprehensions defined inside a
profiled function, whose lines show in its table."""
import io
import logging
import os
import re
import subprocess
import sys
import textwrap

import pytest

import memlens

from conftest import MEMLENS, MiB

SIZE = 100_000
HAS_COMPREHENSION_CODE = sys.version_info < (3, 12)  # PEP 709


def run(*args, cwd):
    return subprocess.run(list(args), capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=os.environ)


def tables(text):
    """{function name: {line text (stripped): (mem, increment,
    occurrences), or None where the line did not run}} of printed
    tables."""
    found = {}
    for block in re.split(r"(?m)^Filename: ", text)[1:]:
        rows = {}
        header = block.splitlines()[2]
        for line in block.splitlines()[4:]:
            m = re.match(r"^\s+\d+\s+(-?\d+\.\d+) MiB\s+(-?\d+\.\d+) MiB"
                         r"(?:\s+-?\d+\.\d+ MiB\s+-?\d+\.\d+ MiB)?\s+(\d+)"
                         r"   (.*)$", line)
            if m:
                rows[m[4].strip()] = (float(m[1]), float(m[2]), int(m[3]))
            elif line.strip():
                rows[re.sub(r"^\s+\d+\s+", "", line).strip()] = None
        name = next(re.match(r"(?:async )?def (\w+)", line)[1]
                    for line in rows if line.startswith(("def ", "async ")))
        rows["header"] = header
        found[name] = rows
    return found


def allocated(profiler, index=0):
    """{line text (stripped): bytes allocated} of one table (alloc=True);
    lines that several rows share add up."""
    out = {}
    for rec in profiler.results[index].lines:
        key = rec.contents.strip()
        out[key] = out.get(key, 0) + (rec.allocated or 0)
    return out


def occurrences(profiler, index=0):
    return {rec.contents.strip(): rec.occurrences
            for rec in profiler.results[index].lines}


# --------------------------------------------------------------------------
# The profile builtin of memlens run --line
# --------------------------------------------------------------------------

BUILTIN_SCRIPT = """
def by_block(n):
    kept = bytearray(n)
    return len(kept)

def by_count(n):
    kept = bytearray(n)
    return len(kept)

@profile
def plain(n):
    kept = bytearray(n)
    return len(kept)

@profile()
def called(n):
    kept = bytearray(n)
    return len(kept)

profile.add_function(by_block)
profile.add_function(by_count)
by_block(10)  # the profile is off: not counted
with profile:
    by_block(10)
    by_block(10)
profile.enable_by_count()
profile.enable_by_count()
by_count(10)
profile.disable_by_count()
by_count(10)
profile.disable_by_count()
profile.disable_by_count()  # one too many: nothing, as memory_profiler
by_count(10)  # off again
plain(10)
called(10)
print("program done")
"""


@pytest.mark.parametrize("prefix", [["run", "--line"], ["--line"]])
def test_builtin_decorates_and_switches_on_as_memory_profilers(tmp_path,
                                                              prefix):
    script = tmp_path / "prog.py"
    script.write_text(BUILTIN_SCRIPT)
    result = run(*MEMLENS, *prefix, str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "program done" in result.stdout
    found = tables(result.stdout)
    assert list(found) == ["plain", "called", "by_block", "by_count"]
    assert found["by_block"]["kept = bytearray(n)"][2] == 2
    assert found["by_count"]["kept = bytearray(n)"][2] == 2
    assert found["plain"]["return len(kept)"][2] == 1
    assert found["called"]["return len(kept)"][2] == 1
    # Each call of a decorated function is a FUNC span too.
    data = next(tmp_path.glob("memlens_*.dat")).read_text()
    assert "FUNC __main__.plain " in data and "FUNC __main__.called " in data


def test_builtin_without_line_takes_the_same_calls(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(BUILTIN_SCRIPT)
    result = run(*MEMLENS, "run", str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "program done" in result.stdout
    assert "Filename:" not in result.stdout
    data = next(tmp_path.glob("memlens_*.dat")).read_text()
    assert "FUNC __main__.plain " in data


def test_builtin_options_per_function(tmp_path):
    script = tmp_path / "prog.py"
    log = tmp_path / "own.txt"
    script.write_text(textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                            format="LOGGED %(name)s: %(message)s")
        from memlens import LogFile

        own = open({str(log)!r}, "w")

        @profile(precision=3, backend="tracemalloc")
        def exact(n):
            kept = bytearray(n)
            return len(kept)

        @profile(stream=own, backend="psutil")
        def to_file(n):
            return len(bytearray(n))

        @profile(stream=LogFile("memory_profile_log"))
        def logged(n):
            return len(bytearray(n))

        try:
            profile(exact, backend="no such backend")
        except KeyError:
            print("KeyError for an unknown backend")
        exact(10); to_file(10); logged(10)
        """))
    result = run(*MEMLENS, "run", "--line", str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "KeyError for an unknown backend" in out
    exact = tables(out)["exact"]
    assert "Allocated          Net" in exact["header"]
    assert re.search(r"\d+\.\d{3} MiB\s+\d+\.\d{3} MiB",
                     out.partition("def exact(n):")[2])
    text = log.read_text()
    assert list(tables(text)) == ["to_file"]
    assert "Allocated" not in text
    assert "def to_file(n):" not in out
    logged = [line for line in out.splitlines()
              if line.startswith("LOGGED memory_profile_log: ")]
    assert any("return len(bytearray(n))" in line for line in logged)
    assert any("Filename: " in line for line in logged)


def test_builtin_tables_with_show_results(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        from memlens import show_results

        @profile
        def work(n):
            return len(bytearray(n))

        work(10)
        show_results(profile, precision=2)
        print("shown")
        """))
    result = run(*MEMLENS, "--line", str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown, _, at_exit = result.stdout.partition("shown")
    assert re.search(r"\d+\.\d\d MiB\s+\d+\.\d\d MiB\s+1   ", shown)
    assert "def work(n):" in at_exit


def test_builtin_refuses_bad_options():
    from memlens.lineprof.builtin import ProfileBuiltin

    builtin = ProfileBuiltin(line=False)

    def f():
        pass

    with pytest.raises(KeyError):
        builtin(f, backend="nope")
    with pytest.raises(ValueError):
        builtin(f, precision=-1)
    with pytest.raises(TypeError):
        builtin(f, stream=object())
    with pytest.raises(TypeError):
        builtin(42)
    with pytest.raises(TypeError):
        builtin.add_function(42)
    assert builtin(f) is f  # no spans, no line: the function itself


def test_builtin_in_process_profiles_and_leaves_nothing(line_backend):
    from memlens.lineprof.builtin import ProfileBuiltin

    def helper(n):
        kept = bytearray(n)
        return len(kept)

    builtin = ProfileBuiltin(line=True, alloc=True)
    builtin.add_function(helper)
    with builtin as entered:
        assert entered is builtin
        helper(SIZE)
    helper(SIZE)  # off
    out = io.StringIO()
    builtin.print_stats(out)
    counted = tables(out.getvalue())["helper"]
    assert counted["kept = bytearray(n)"][2] == 1


# --------------------------------------------------------------------------
# profile(func, stream=, precision=, backend=), LineProfiler(backend=)
# --------------------------------------------------------------------------

def grow(n):
    kept = bytearray(n)
    return len(kept)


def test_profile_backend_tracemalloc_gives_the_exact_columns(line_backend):
    out = io.StringIO()
    memlens.profile(grow, out, 2, "tracemalloc")(SIZE)
    text = out.getvalue()
    assert "Allocated          Net" in text
    row = next(line for line in text.splitlines()
               if line.endswith("kept = bytearray(n)"))
    figures = [float(x) for x in re.findall(r"(-?\d+\.\d\d) MiB", row)]
    assert len(figures) == 4
    assert figures[2] >= SIZE / MiB - 0.01  # Allocated: the bytearray


@pytest.mark.parametrize("backend",
                         ["psutil", "psutil_pss", "psutil_uss", "posix"])
def test_profile_rss_backends_give_the_rss_columns(backend):
    out = io.StringIO()
    memlens.profile(stream=out, backend=backend)(grow)(SIZE)
    text = out.getvalue()
    assert "Mem usage    Increment  Occurrences" in text
    assert "Allocated" not in text


def test_profile_unknown_backend_raises_keyerror_as_memory_profiler():
    with pytest.raises(KeyError, match="psutil"):
        memlens.profile(grow, backend="psutill")
    with pytest.raises(KeyError):
        memlens.profile(backend="nope")
    with pytest.raises(KeyError):
        memlens.LineProfiler(backend="nope")
    assert memlens.LineProfiler(backend="tracemalloc").alloc
    assert not memlens.LineProfiler(backend="psutil").alloc


# --------------------------------------------------------------------------
# show_results and LogFile
# --------------------------------------------------------------------------

def test_show_results_and_logfile_are_top_level_names():
    assert "show_results" in memlens.__all__
    assert "LogFile" in memlens.__all__
    assert memlens.show_results.__module__ == "memlens.lineprof.profiler"


def keeps(n):
    kept = bytearray(n)
    nothing = None
    return kept, nothing


def test_show_results_prints_the_profilers_tables(line_backend):
    profiler = memlens.LineProfiler(keeps)
    with profiler:
        keeps(10)
    out = io.StringIO()
    memlens.show_results(profiler, stream=out, precision=3)
    assert out.getvalue() == profiler.results[0].format(3)
    assert re.search(r"\d+\.\d{3} MiB", out.getvalue())


def test_logfile_logs_each_line_of_the_tables(line_backend, caplog):
    caplog.set_level(logging.INFO, logger="memory_profile_log")
    memlens.profile(keeps, stream=memlens.LogFile("memory_profile_log"))(10)
    records = [r for r in caplog.records if r.name == "memory_profile_log"]
    assert all(r.levelno == logging.INFO for r in records)
    messages = [r.getMessage() for r in records]
    assert messages[0].startswith("Filename: ")
    assert messages[1].startswith("Line #")
    assert set(messages[2].strip()) == {"="}
    assert any(m.rstrip().endswith("kept = bytearray(n)") for m in messages)
    assert any(m.rstrip().endswith("nothing = None") for m in messages)


@pytest.mark.skipif(bool(os.environ.get("MEMLENS_SANITIZED")),
                    reason="RSS figures are meaningless under a sanitizer")
def test_logfile_report_increment_flag_logs_rows_that_grew(line_backend,
                                                          caplog):
    caplog.set_level(logging.INFO)
    memlens.profile(keeps, stream=memlens.LogFile(
        reportIncrementFlag=True))(64 * MiB)
    messages = [r.getMessage() for r in caplog.records
                if r.name == "root"]
    assert messages[0].startswith("Filename: ")
    assert messages[1].startswith("Line #")
    assert any(m.rstrip().endswith("kept = bytearray(n)") for m in messages)
    assert not any("nothing = None" in m for m in messages)
    assert not any(set(m.strip()) == {"="} for m in messages)


def test_logfile_flag_filter_reads_the_increment_column(caplog):
    caplog.set_level(logging.INFO, logger="flagged")
    log = memlens.LogFile("flagged", reportIncrementFlag=True)
    log.write("     3     10.0 MiB      2.5 MiB           1   a = f()\n")
    log.write("     4     10.0 MiB      0.0 MiB           1   b = g()\n")
    log.write("     5     10.0 MiB     -1.0 MiB           1   del a\n")
    log.write("     6                                          s = 'MiB'\n")
    log.write("\n")
    log.write("custom", level=logging.WARNING)
    log.flush()
    assert [(r.levelno, r.getMessage().split()[0]) for r in caplog.records
            ] == [(logging.INFO, "3")]


# --------------------------------------------------------------------------
# Functions and comprehensions defined inside a profiled function
# --------------------------------------------------------------------------

def with_nested(n):
    def inner(k):
        block = bytearray(k)
        return block
    made = lambda: bytearray(SIZE)  # noqa: E731
    kept = [inner(SIZE) for _ in range(n)]
    kept.append(made())
    return kept


def test_nested_function_and_lambda_lines_show_in_the_outer_table(
        line_backend):
    profiler = memlens.LineProfiler(with_nested, alloc=True)
    with profiler:
        with_nested(5)
    assert len(profiler.results) == 1  # no table of their own
    fp = profiler.results[0]
    code = with_nested.__code__
    assert fp.first_line == code.co_firstlineno
    assert fp.last_line >= code.co_firstlineno + 7
    got = allocated(profiler)
    assert got["block = bytearray(k)"] >= 5 * SIZE
    assert got["made = lambda: bytearray(SIZE)  # noqa: E731"] >= SIZE
    assert got["kept = [inner(SIZE) for _ in range(n)]"] < SIZE
    counts = occurrences(profiler)
    assert counts["block = bytearray(k)"] == 5
    assert counts["return block"] == 5
    assert counts["def inner(k):"] == 1 + 5  # made once, called 5 times


def comprehensions(n):
    blocks = [
        bytearray(SIZE)
        for _ in range(n)
    ]
    total = sum(
        len(bytearray(SIZE))
        for _ in range(n)
    )
    sizes = {
        i: len(bytearray(SIZE))
        for i in range(n)
    }
    return blocks, total, sizes


def test_comprehension_bodies_show_their_own_lines(line_backend):
    profiler = memlens.LineProfiler(comprehensions, alloc=True)
    with profiler:
        comprehensions(4)
    got = allocated(profiler)
    counts = occurrences(profiler)
    # A generator expression has its own code object on every version;
    # list and dict comprehensions before 3.12, and from 3.12 their lines
    # are the function's own.
    for body in ("bytearray(SIZE)", "len(bytearray(SIZE))",
                 "i: len(bytearray(SIZE))"):
        assert got[body] >= 4 * SIZE, body
        assert counts[body] >= 4, body
    for head in ("blocks = [", "total = sum(", "sizes = {"):
        assert got[head] < SIZE, head


def test_nested_code_is_registered_with_its_function_and_let_go(
        line_backend):
    from memlens import _core

    import gc

    gc.collect()
    before = _core._line_state()["codes"]
    profiler = memlens.LineProfiler(with_nested)
    inner_codes = 2 + HAS_COMPREHENSION_CODE  # inner, lambda, listcomp
    assert _core._line_state()["codes"] == before + 1 + inner_codes
    with profiler:
        with_nested(1)
    del profiler
    gc.collect()
    assert _core._line_state()["codes"] == before


def test_function_defined_inside_keeps_its_own_code_after(line_backend):
    profiler = memlens.LineProfiler(with_nested)
    original = with_nested.__code__
    with profiler:
        with_nested(1)
    assert with_nested.__code__ is original
    # A closure made while profiling, added on its own afterwards, is the
    # function defined inside: no second table.
    made = []

    def outer():
        def inner():
            return bytearray(SIZE)
        made.append(inner)
        return inner()

    profiler = memlens.LineProfiler(outer)
    with profiler:
        outer()
    profiler.add_function(made[0])
    assert len(profiler.results) == 1
    with profiler:
        made[0]()
    assert occurrences(profiler)["return bytearray(SIZE)"] == 2


@pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                    reason="the instrument backend is 3.11's")
def test_instrument_counts_a_first_line_on_the_def_line_as_tracing(
        monkeypatch):
    def count(backend):
        monkeypatch.setenv("MEMLENS_LINE_BACKEND", backend)
        one_line = eval("lambda: [0] * 10")  # body on the def line
        profiler = memlens.LineProfiler(one_line)
        with profiler:
            one_line()
            one_line()
        return [(rec.lineno, rec.occurrences)
                for rec in profiler.results[0].lines]

    assert count("instrument") == count("settrace")


def test_nested_lines_through_the_command_line(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        @profile
        def outer(n):
            def inner(k):
                return bytearray(k)
            return [len(inner(k))
                    for k in range(n)]

        outer(3)
        """))
    result = run(*MEMLENS, "--line", str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = tables(result.stdout)
    assert list(found) == ["outer"]
    rows = found["outer"]
    assert rows["return bytearray(k)"][2] == 3
    if HAS_COMPREHENSION_CODE:
        assert rows["for k in range(n)]"] is not None
