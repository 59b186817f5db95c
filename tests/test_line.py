"""Line-by-line memory profile (SPEC 4): @profile and LineProfiler."""
import asyncio
import io
import re
import sys
import threading

import numpy as np
import pytest

import memlens
from memlens import _core

from conftest import MiB, figures

HEADER = "Line #    Mem usage    Increment  Occurrences   Line Contents"


def table(profiler):
    out = io.StringIO()
    profiler.print_stats(stream=out)
    return out.getvalue()


def rows(profiler, index=0):
    """{source line text (stripped): LineRecord} of one profiled function."""
    return {rec.contents.strip(): rec for rec in profiler.results[index].lines}


def known_sizes():
    a = [1] * (10 ** 6)
    b = [2] * (2 * 10 ** 7)
    del b
    return a


KNOWN_SIZES = """
import memlens

def known_sizes():
    a = [1] * (10 ** 6)
    b = [2] * (2 * 10 ** 7)
    del b
    return a

profiler = memlens.LineProfiler(known_sizes)
with profiler:
    known_sizes()
profiler.print_stats()
"""


@figures
def test_known_sizes_in_memory_profilers_layout(line_backend, tmp_path):
    # A fresh interpreter: what RSS a list costs depends on the pages the
    # allocator kept from earlier work, and this checks the known figures.
    import os
    import subprocess

    path = tmp_path / "known.py"
    path.write_text(KNOWN_SIZES)
    text = subprocess.run([sys.executable, str(path)], capture_output=True,
                          text=True, check=True, env=os.environ).stdout
    lines = text.splitlines()
    assert lines[0] == f"Filename: {path}"
    assert lines[1] == ""
    assert lines[2] == HEADER
    assert lines[3] == "=" * len(HEADER)
    assert text.endswith("\n\n")
    assert "-0.0 MiB" not in text

    def increment(source):
        line = next(x for x in lines if x.endswith(source))
        return float(re.findall(r"(-?\d+\.\d) MiB", line)[1])

    assert abs(increment("a = [1] * (10 ** 6)") - 7.6) <= 0.3
    assert abs(increment("b = [2] * (2 * 10 ** 7)") - 152.6) <= 2
    assert abs(increment("del b") + 152.6) <= 2
    assert abs(increment("def known_sizes():")) < 1  # not the whole RSS
    row = re.compile(r"^\s+\d+\s+\d+\.\d MiB\s+-?\d+\.\d MiB\s+\d+   ")
    body = [x for x in lines[4:] if "MiB" in x]
    assert len(body) == 5 and all(row.match(x) for x in body)


def test_first_line_and_record_fields(line_backend):
    profiler = memlens.LineProfiler(known_sizes)
    with profiler:
        known_sizes()
    text = table(profiler)
    assert text.splitlines()[0] == f"Filename: {__file__}"
    assert "-0.0 MiB" not in text
    first = profiler.results[0].lines[0]
    assert first.lineno == known_sizes.__code__.co_firstlineno
    assert first.occurrences == 1
    assert abs(first.increment) < MiB  # its own change, not the whole RSS
    assert rows(profiler)["del b"].occurrences == 1


def grows():
    keep = []
    for i in range(300):
        keep.append(bytearray(b"x") * 100_000)
    return keep


@figures
def test_memory_that_only_grows_never_shows_a_negative_increment(line_backend):
    profiler = memlens.LineProfiler(grows)
    with profiler:
        grows()
    r = rows(profiler)
    assert r["for i in range(300):"].occurrences == 301
    assert r["keep.append(bytearray(b\"x\") * 100_000)"].occurrences == 300
    for rec in profiler.results[0].lines:
        assert rec.increment is None or rec.increment >= 0, rec


def temporary():
    s = np.ones(5 * 10**7).sum()
    return s


@figures
def test_alloc_columns_count_a_numpy_temporary(line_backend):
    profiler = memlens.LineProfiler(temporary, alloc=True)
    with profiler:
        temporary()
    rec = rows(profiler)["s = np.ones(5 * 10**7).sum()"]
    assert rec.allocated >= 380 * 10**6
    assert abs(rec.net) < MiB
    assert abs(rec.increment) < 5 * MiB
    text = table(profiler)
    assert "Allocated          Net  Occurrences" in text


@pytest.mark.valgrind
def test_alloc_columns_count_python_objects(line_backend):
    def build():
        data = [str(i) for i in range(10_000)]
        return data

    profiler = memlens.LineProfiler(build, alloc=True)
    with profiler:
        build()
    rec = rows(profiler)["data = [str(i) for i in range(10_000)]"]
    assert rec.allocated >= 10_000 * 40
    assert rec.net > 0


def passthrough(func):
    """A decorator that only calls: what a call through a wrapper costs."""
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)
    return wrapper


def test_alloc_columns_leave_out_the_profilers_own_glue(line_backend):
    # A profiled function calling another one: switching the profile on
    # and off around the call allocates, and that is not the caller's. The
    # call costs what a call through a plain decorator costs (under a trace
    # function, settrace, each Python call makes a frame object; the
    # profiler's wrapper holds a few more cells than the plain one's).
    profiler = memlens.LineProfiler(alloc=True)
    out = io.StringIO()

    @passthrough
    def plain():
        return None

    @profiler
    def callee():
        return None

    @memlens.profile(alloc=True, stream=out)
    def printing():
        return None

    @profiler
    def caller():
        value = plain()
        value = callee()
        value = printing()
        return value

    caller()
    assert out.getvalue().count("Filename:") == 1
    lines = rows(profiler, 1)
    base = lines["value = plain()"].allocated
    allowed = base + (128 if line_backend == "settrace" else 0)
    assert lines["value = callee()"].allocated <= allowed
    assert lines["value = printing()"].allocated <= allowed


class Thing:
    def method(self, n):
        x = [0] * n
        return len(x)

    @staticmethod
    def static(n):
        return n + 1

    @classmethod
    def klass(cls, n):
        return n + 2


def test_methods(line_backend):
    profiler = memlens.LineProfiler(Thing.method, Thing.static, Thing.klass)
    with profiler:
        Thing().method(10)
        Thing.static(1)
        Thing.klass(1)
    results = profiler.results
    assert [r.name.split(".")[-1] for r in results] == ["method", "static",
                                                       "klass"]
    assert rows(profiler, 0)["x = [0] * n"].occurrences == 1
    assert rows(profiler, 1)["return n + 1"].occurrences == 1
    assert rows(profiler, 2)["return n + 2"].occurrences == 1


def chain(n):
    block = bytearray(b"x") * (4 * MiB)
    if n == 0:
        return [block]
    return chain(n - 1) + [block]


@figures
def test_recursion_counts_each_occurrence_once_without_double_counting(
        line_backend):
    profiler = memlens.LineProfiler(chain)
    with profiler:
        start = memlens.rss()
        kept = chain(4)
        grown = memlens.rss() - start
    r = rows(profiler)
    assert r['block = bytearray(b"x") * (4 * MiB)'].occurrences == 5
    assert r["if n == 0:"].occurrences == 5
    assert r["return chain(n - 1) + [block]"].occurrences == 4
    total = sum(rec.increment or 0 for rec in profiler.results[0].lines)
    assert abs(total - grown) < 2 * MiB  # every byte attributed once
    # The blocks are the only sizeable allocations (how much of them is
    # new RSS depends on what the allocator kept from earlier tests).
    assert abs(r['block = bytearray(b"x") * (4 * MiB)'].increment
               - grown) < 2 * MiB
    del kept


def gen(n):
    for i in range(n):
        item = [i] * 1000
        yield item


async def coro():
    await asyncio.sleep(0)
    data = [0] * 1000
    await asyncio.sleep(0)
    return len(data)


@pytest.mark.valgrind
def test_generators_are_attributed_per_resumption(line_backend):
    profiler = memlens.LineProfiler(gen)
    with profiler:
        assert len(list(gen(3))) == 3
    r = rows(profiler)
    assert r["item = [i] * 1000"].occurrences == 3
    assert r["yield item"].occurrences == 3


def consumer():
    kept = []
    while True:
        kept.append([0] * ((yield len(kept)) or 0))


def test_what_a_generator_does_after_resuming_is_its_lines(line_backend):
    profiler = memlens.LineProfiler(consumer, alloc=True)
    with profiler:
        g = consumer()
        next(g)
        for _ in range(3):
            g.send(10 ** 6)  # the list is made after the yield returns
        g.close()
    r = rows(profiler)["kept.append([0] * ((yield len(kept)) or 0))"]
    assert r.allocated >= 3 * 8 * 10 ** 6
    assert r.occurrences == 4  # counted as it starts, not as it resumes


def test_coroutines(line_backend):
    profiler = memlens.LineProfiler(coro)
    with profiler:
        assert asyncio.run(coro()) == 1000
    r = rows(profiler)
    assert r["data = [0] * 1000"].occurrences == 1
    assert r["return len(data)"].occurrences == 1


def test_profile_decorator_on_generator_and_coroutine(line_backend):
    out = io.StringIO()
    g = memlens.profile(stream=out)(gen)
    assert len(list(g(2))) == 2
    c = memlens.profile(stream=out)(coro)
    assert asyncio.run(c()) == 1000
    text = out.getvalue()
    assert text.count("Filename:") == 2
    assert "yield item" in text and "return len(data)" in text


def test_function_that_raises_prints_and_propagates(line_backend):
    out = io.StringIO()

    @memlens.profile(stream=out)
    def fails():
        x = [1] * 100
        raise KeyError(len(x))

    with pytest.raises(KeyError):
        fails()
    text = out.getvalue()
    assert "raise KeyError(len(x))" in text and HEADER in text
    assert re.search(r"\s1   \s+x = \[1\] \* 100", text)


def test_two_threads_running_the_same_profiled_function(line_backend):
    def work(n):
        total = 0
        for i in range(n):
            total += i
        return total

    profiler = memlens.LineProfiler()
    wrapped = profiler(work)
    threads = [threading.Thread(target=wrapped, args=(1000,))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r = rows(profiler)
    assert r["total += i"].occurrences == 2000
    assert r["return total"].occurrences == 2


def test_a_line_event_never_lets_another_thread_run(line_backend):
    """With child processes' memory counted, each line reads /proc: with
    the GIL held throughout, a thread waiting for it gets nothing in the
    middle of a profiled function (no switch interval elapses)."""
    ready, go = threading.Event(), threading.Event()
    ran = []

    def waiter():
        ready.set()
        go.wait()
        ran.append(True)

    def busy():
        # The waiter now wants the GIL: it gets it only if we let go.
        go.set()
        total = 0
        for i in range(300):
            total += i
        return list(ran)

    thread = threading.Thread(target=waiter)
    interval = sys.getswitchinterval()
    profiler = memlens.LineProfiler(busy, include_children=True)
    sys.setswitchinterval(1000)
    try:
        thread.start()
        ready.wait()
        with profiler:
            seen = busy()
    finally:
        sys.setswitchinterval(interval)
        go.set()
        thread.join()
    assert seen == []
    hits = {rec.contents.strip(): rec.occurrences
            for rec in profiler.results[0].lines}
    assert hits["total += i"] == 300


def inner():
    big = bytearray(b"x") * (40 * MiB)
    return big


def outer():
    data = inner()
    n = len(data)
    return n


@figures
def test_nested_profiled_functions_do_not_count_twice(line_backend):
    out = io.StringIO()
    p_outer = memlens.profile(stream=out)(outer)
    original = inner
    globals()["inner"] = memlens.profile(stream=out)(original)
    try:
        p_outer()
    finally:
        globals()["inner"] = original
    text = out.getvalue()
    assert text.count("Filename:") == 2
    inner_line = re.search(r"(-?\d+\.\d) MiB\s+1\s+big = bytearray", text)
    outer_line = re.search(r"(-?\d+\.\d) MiB\s+1\s+data = inner\(\)", text)
    assert abs(float(inner_line[1]) - 40) < 1.5
    assert abs(float(outer_line[1])) < 1.5


def test_trace_function_installed_before_is_kept(line_backend):
    seen = []

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "traced_elsewhere":
            seen.append(event)
        return None

    def traced_elsewhere():
        return 1

    def profiled():
        return traced_elsewhere()

    sys.settrace(tracer)
    try:
        profiler = memlens.LineProfiler(profiled)
        with profiler:
            profiled()
        assert sys.gettrace() is tracer
        traced_elsewhere()
    finally:
        sys.settrace(None)
    assert seen, "the earlier trace function stopped working"
    assert rows(profiler)["return traced_elsewhere()"].occurrences == 1


def test_nothing_is_left_installed(line_backend):
    code = known_sizes.__code__
    profiler = memlens.LineProfiler(known_sizes)
    with profiler:
        known_sizes()
    assert known_sizes.__code__ is code
    state = _core.state()
    assert not state["line_profiling"] and not state["hooks_installed"]
    assert sys.gettrace() is None


def test_decorator_forms_and_precision(line_backend):
    out = io.StringIO()

    @memlens.profile
    def plain():
        return 1

    @memlens.profile()
    def empty_call():
        return 2

    @memlens.profile(precision=3, stream=out)
    def precise():
        return 3

    assert plain.__name__ == "plain"
    assert (empty_call(), precise()) == (2, 3)
    assert re.search(r"\d+\.\d{3} MiB", out.getvalue())


def test_recursive_decorated_function_prints_once_per_outermost_call():
    out = io.StringIO()

    @memlens.profile(stream=out)
    def depth(n):
        return 0 if n == 0 else 1 + depth(n - 1)

    depth(3)
    assert out.getvalue().count("Filename:") == 1


def test_results_as_data(line_backend):
    profiler = memlens.LineProfiler(known_sizes)
    with profiler:
        known_sizes()
    data = profiler.results[0].to_dict()
    assert data["filename"] == __file__ and data["name"] == "known_sizes"
    assert any(line["occurrences"] for line in data["lines"])
    assert "<table" in profiler.results[0]._repr_html_()


def test_bad_input():
    with pytest.raises(TypeError, match="not a Python function"):
        memlens.LineProfiler(len)
    with pytest.raises(TypeError, match="decorates functions"):
        memlens.profile(42)
    with pytest.raises(ValueError, match="precision"):
        memlens.profile(precision=-1)(known_sizes)
    with pytest.raises(ValueError, match="precision must be between 0 and 20"):
        memlens.profile(precision=1000)(known_sizes)
    with pytest.raises(TypeError, match="precision must be an int"):
        memlens.profile(precision=1.5)(known_sizes)
    with pytest.raises(TypeError, match="stream must have a write"):
        memlens.profile(stream=1)(known_sizes)
    with pytest.raises(TypeError, match="stream must have a write"):
        memlens.profile(known_sizes, stream="out.txt")
    with pytest.raises(RuntimeError, match="without enable"):
        memlens.LineProfiler().disable()


def test_backend_override_fails_loudly(monkeypatch):
    from memlens.lineprof import backends

    monkeypatch.setenv("MEMLENS_LINE_BACKEND", "bogus")
    with pytest.raises(ValueError, match="MEMLENS_LINE_BACKEND"):
        backends.choose()
    monkeypatch.setenv("MEMLENS_LINE_BACKEND", "monitoring")
    if sys.version_info < (3, 12):
        with pytest.raises(RuntimeError, match="3.12"):
            backends.choose()
    else:
        assert backends.choose().name == "monitoring"
    monkeypatch.setenv("MEMLENS_LINE_BACKEND", "instrument")
    if sys.version_info[:2] != (3, 11):
        with pytest.raises(RuntimeError, match="3.11"):
            backends.choose()
    else:
        assert backends.choose().name == "instrument"
    monkeypatch.delenv("MEMLENS_LINE_BACKEND")
    expected = ("monitoring" if sys.version_info >= (3, 12) else
                "instrument" if sys.version_info >= (3, 11) else "settrace")
    assert backends.choose().name == expected


def test_equal_code_objects_are_different_functions(line_backend):
    source = "def twin(n):\n    return [0] * n\n"
    first, second = {}, {}
    exec(compile(source, "twins.py", "exec"), first)
    exec(compile(source, "twins.py", "exec"), second)
    assert first["twin"].__code__ == second["twin"].__code__
    p1 = memlens.LineProfiler(first["twin"])
    with p1:
        for _ in range(7):
            first["twin"](3)
    p2 = memlens.LineProfiler(second["twin"])
    with p2:
        second["twin"](3)
    hits = [r.occurrences for r in p2.results[0].lines if r.occurrences]
    assert max(hits) == 1
    assert max(r.occurrences for r in p1.results[0].lines) == 7


def test_mismatched_line_end_is_refused():
    _core._line_begin(True)
    try:
        with pytest.raises(RuntimeError):
            _core._line_end(False)
    finally:
        _core._line_end(True)


def down(n):
    return down(n + 1)


def test_recursion_to_the_limit_leaves_a_usable_state(line_backend):
    profiler = memlens.LineProfiler(down, known_sizes)
    with pytest.raises(RecursionError):
        with profiler:
            down(0)
    with profiler:
        known_sizes()
    assert _core._line_state()["depth"] == 0
    assert rows(profiler, 1)["del b"].occurrences == 1
