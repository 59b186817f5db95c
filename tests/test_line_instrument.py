"""The line tracer's instrument backend (Python 3.11): profiled functions
run a copy of their code that calls C hooks at each line start."""
import sys
import traceback

import pytest

import memlens
from memlens import _core

pytestmark = pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                                reason="the instrument backend is 3.11's")


@pytest.fixture
def shapes():
    import line_shapes
    return line_shapes


def occurrences(backend, monkeypatch, shapes):
    monkeypatch.setenv("MEMLENS_LINE_BACKEND", backend)
    profiler = memlens.LineProfiler(*shapes.PROFILED)
    with profiler:
        shapes.run_all()
    return {(fp.name, rec.lineno): rec.occurrences
            for fp in profiler.results for rec in fp.lines}


def test_lines_are_counted_as_the_trace_function_counts_them(monkeypatch,
                                                             shapes):
    traced = occurrences("settrace", monkeypatch, shapes)
    instrumented = occurrences("instrument", monkeypatch, shapes)
    assert instrumented == traced
    # Lines the rules for starts, resumptions and jumps have to get right.
    first = {name: getattr(shapes, name).__code__.co_firstlineno
             for name in ("gen", "coro", "closure")}
    assert instrumented[("gen", first["gen"])] == 2  # two generators start
    assert instrumented[("gen", first["gen"] + 4)] == 1  # yield from
    assert instrumented[("coro", first["coro"] + 4)] == 4  # await, 4 turns
    assert instrumented[("closure", first["closure"])] == 1  # has a cell
    loops = shapes.one_line_loops.__code__.co_firstlineno
    assert instrumented[("one_line_loops", loops + 2)] == 7  # for: n + 1
    assert instrumented[("one_line_loops", loops + 3)] == 3  # while: 3 turns


def test_the_function_gets_its_own_code_back(monkeypatch, shapes):
    monkeypatch.setenv("MEMLENS_LINE_BACKEND", "instrument")
    original = shapes.raises.__code__
    profiler = memlens.LineProfiler(shapes.raises)
    with profiler:
        assert shapes.raises.__code__ is not original
        with pytest.raises(RuntimeError):
            shapes.raises(1)
    assert shapes.raises.__code__ is original
    assert _core._line_state()["depth"] == 0


def test_tracebacks_are_unchanged(monkeypatch, shapes):
    monkeypatch.setenv("MEMLENS_LINE_BACKEND", "instrument")

    def where():
        try:
            shapes.raises(1)
        except RuntimeError as exc:
            last = traceback.extract_tb(exc.__traceback__)[-1]
            tb = exc.__traceback__
            while tb.tb_next is not None:
                tb = tb.tb_next
            # The frame itself stands where it raised (post-mortem
            # debuggers show it), not in memlens's handler.
            return (last.name, last.lineno, last.line, last.colno,
                    last.end_colno, tb.tb_frame.f_lineno)

    plain = where()
    profiler = memlens.LineProfiler(shapes.raises)
    with profiler:
        instrumented = where()
    assert instrumented == plain
    assert plain[:3] == ("raises", shapes.raises.__code__.co_firstlineno + 3,
                         'raise RuntimeError("boom")')


def test_a_code_object_is_profiled_through_its_functions(monkeypatch,
                                                         shapes):
    monkeypatch.setenv("MEMLENS_LINE_BACKEND", "instrument")
    profiler = memlens.LineProfiler(shapes.recurse.__code__)
    with profiler:
        shapes.recurse(4)
    counts = {rec.contents.strip(): rec.occurrences
              for rec in profiler.results[0].lines}
    assert counts["if n <= 0:"] == 5
    assert counts["return n + recurse(n - 1)"] == 4


def test_an_interrupt_leaves_no_frame_open(monkeypatch):
    monkeypatch.setenv("MEMLENS_LINE_BACKEND", "instrument")

    def interrupted(n):
        data = [0] * n
        if n:
            raise KeyboardInterrupt
        return data

    profiler = memlens.LineProfiler(interrupted)
    with pytest.raises(KeyboardInterrupt):
        with profiler:
            interrupted(10)
    assert _core._line_state()["depth"] == 0
    with profiler:
        interrupted(0)
    counts = {rec.contents.strip(): rec.occurrences
              for rec in profiler.results[0].lines}
    assert counts["return data"] == 1 and counts["data = [0] * n"] == 2


def test_a_frame_started_before_profiling_is_left_alone(monkeypatch):
    monkeypatch.setenv("MEMLENS_LINE_BACKEND", "instrument")

    def counter():
        i = 0
        while True:
            i += 1
            yield i

    running = counter()
    next(running)  # started with the original code
    profiler = memlens.LineProfiler(counter)
    with profiler:
        next(running)
        fresh = counter()
        next(fresh)
        next(fresh)
    counts = {rec.contents.strip(): rec.occurrences
              for rec in profiler.results[0].lines}
    # Only `fresh` ran the instrumented copy: one start, two turns.
    assert counts["i = 0"] == 1
    assert counts["yield i"] == 2


def test_code_that_cannot_be_instrumented_fails_clearly(monkeypatch, shapes):
    from memlens.lineprof import backends, instrument

    first, second = shapes.conditional, shapes.while_loop
    codes = first.__code__, second.__code__
    real = instrument.instrument

    def refuse_the_second(code):
        if code is codes[1]:
            raise ValueError("no")
        return real(code)

    monkeypatch.setenv("MEMLENS_LINE_BACKEND", "instrument")
    monkeypatch.setattr(instrument, "instrument", refuse_the_second)
    monkeypatch.setattr(backends, "_COPIES", {})
    profiler = memlens.LineProfiler(first, second)
    with pytest.raises(RuntimeError, match="cannot instrument .*settrace"):
        profiler.enable()
    # The first had its code swapped before the second failed: put back.
    assert (first.__code__, second.__code__) == codes
    assert _core._line_state()["begun"] == 0
