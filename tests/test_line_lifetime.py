"""The line profiler holds what it profiles only while a profiler does:
LineProfiler, @profile and %mprun let go of functions, code objects,
instrumented copies and figures when the user drops them."""
import gc
import io
import sys
import weakref

import pytest

import memlens
from memlens import _core
from memlens.lineprof import backends
from memlens.lineprof.profiler import _ENGINE

from conftest import MiB, figures

BIG = 50 * MiB


class Big(bytearray):
    """A bytearray that a weak reference can watch."""


def make_closure(nbytes):
    big = Big(nbytes)
    big[::4096] = b"\1" * len(range(0, nbytes, 4096))  # resident pages

    def use_big():
        n = len(big)
        return n

    return use_big, weakref.ref(big)


def collected():
    gc.collect()
    gc.collect()


def held():
    """What the engine holds, in every place it could hold it, once
    garbage (of earlier tests too) is collected."""
    collected()
    return (_core._line_state()["codes"], len(_ENGINE.registry),
            len(backends._COPIES))


def rss():
    collected()
    _core._trim_heap()
    return _core.rss()


@pytest.mark.parametrize("how", ["with", "wrapper", "decorator"])
def test_dropped_closure_and_profiler_free_what_they_held(line_backend, how):
    before = held()
    refs = []
    for _ in range(4):
        func, big = make_closure(BIG)
        if how == "with":
            profiler = memlens.LineProfiler(func)
            with profiler:
                assert func() == BIG
            assert profiler.results[0].lines
        elif how == "wrapper":
            profiler = memlens.LineProfiler()
            assert profiler(func)() == BIG
            assert profiler.results[0].lines
        else:
            profiler = memlens.profile(func, stream=io.StringIO())
            assert profiler() == BIG
        refs += [weakref.ref(func), big]
        del func, profiler
    collected()
    assert [ref() for ref in refs] == [None] * len(refs)
    assert held() == before


@figures
def test_dropped_closures_give_their_memory_back(line_backend):
    rss0 = rss()
    for _ in range(4):
        func, _big = make_closure(BIG)
        profiler = memlens.LineProfiler(func)
        with profiler:
            func()
        del func, profiler
    # Four 50 MiB closures kept would be 200 MiB.
    assert rss() - rss0 < BIG / 2


def test_a_living_profiler_keeps_its_closure_not_a_dropped_ones(
        line_backend):
    """Two closures of one def share their code object: the profiler that
    goes takes its closure with it, the one that stays keeps profiling."""
    before = held()
    first, first_big = make_closure(MiB)
    second, second_big = make_closure(MiB)
    assert first.__code__ is second.__code__
    gone = memlens.LineProfiler(first)
    stays = memlens.LineProfiler(second)
    with gone:
        first()
    del gone, first
    collected()
    assert first_big() is None and second_big() is not None
    assert held()[:2] == (before[0] + 1, before[1] + 1)
    stays.clear()  # figures are per code object: `gone` counted there
    with stays:
        second()
    lines = {rec.contents.strip(): rec.occurrences
             for rec in stays.results[0].lines}
    assert lines["n = len(big)"] == 1
    del stays
    collected()
    assert second_big() is not None  # still ours
    assert held() == before


def test_one_profiler_with_two_closures_of_one_def_profiles_both(
        line_backend):
    first, _ = make_closure(4096)
    second, _ = make_closure(4096)
    profiler = memlens.LineProfiler(first, second)
    with profiler:
        first()
        second()
    [fp] = profiler.results
    lines = {rec.contents.strip(): rec.occurrences for rec in fp.lines}
    assert lines["n = len(big)"] == 2


def test_a_kept_function_gets_its_own_code_back_when_its_profiler_goes(
        line_backend):
    """Dropped while another profiler runs: the function is no longer
    traced, and (3.11's instrument backend) runs its own code again."""
    func, _ = make_closure(4096)
    code = func.__code__

    def other():
        return 1

    keep = memlens.LineProfiler(other)
    gone = memlens.LineProfiler(func)
    with keep:
        backend = _ENGINE.backend
        func()
        del gone
        collected()
        assert func.__code__ is code
        if line_backend == "instrument":
            assert id(code) not in backend.swapped
        if line_backend == "monitoring":
            assert id(code) not in backend.codes
            assert sys.monitoring.get_local_events(backend.tool, code) == 0
        assert id(code) not in _ENGINE.registry
        func()
        other()
    assert [fp.first_line for fp in keep.results] == [
        other.__code__.co_firstlineno]


def test_redefining_and_profiling_2000_times_stays_flat(line_backend):
    """As a notebook user does: a new function each time, profiled once."""
    source = ("def work(n):\n"
              "    data = [0] * n\n"
              "    return len(data)\n")

    def once():
        namespace = {}
        exec(compile(source, "<cell>", "exec"), namespace)
        work = namespace["work"]
        profiler = memlens.LineProfiler(work)
        with profiler:
            work(100)
        assert profiler.results[0].lines
        return weakref.ref(work)

    for _ in range(50):  # warm up
        once()
    collected()
    before, objects = held(), len(gc.get_objects())
    refs = [once() for _ in range(2000)]
    collected()
    assert sum(ref() is not None for ref in refs) == 0
    assert held() == before
    del refs
    collected()
    # Each run kept would be a function, its globals, a registration...
    assert len(gc.get_objects()) - objects < 200


def test_enabling_works_on_living_profilers_only(line_backend, monkeypatch):
    """After 500 profilers came and went, enabling one hands its backend
    one code object, not 501."""
    started = []
    choose = backends.choose

    def counting_choose(*args):
        backend = choose(*args)
        start = backend.start

        def counting_start(functions):
            functions = list(functions)
            started.append(len(functions))
            return start(functions)

        backend.start = counting_start
        return backend

    monkeypatch.setattr(backends, "choose", counting_choose)
    before = held()
    for i in range(500):
        namespace = {}
        exec(f"def f{i}():\n    return {i}\n", namespace)
        profiler = memlens.LineProfiler(namespace[f"f{i}"])
        with profiler:
            namespace[f"f{i}"]()
    del profiler
    collected()
    assert held() == before

    def last():
        return 0

    started.clear()
    profiler = memlens.LineProfiler(last)
    with profiler:
        last()
        assert held()[:2] == (before[0] + 1, before[1] + 1)
    assert started == [before[1] + 1]


def test_a_profiler_dropped_while_its_function_runs(line_backend):
    """The frame of a code unregistered in the middle of its run is
    dropped from the tracer's stack, even when the same code object is
    registered again at once (same address, new entry): following it would
    write the figures of an entry that is gone. The profilers around it
    count on."""
    holder = {}
    dropped = []

    def inner():
        x = [0] * 10
        return len(x)

    def victim():
        a = 1
        # The last reference to the victim's profiler goes, and another
        # registers it again, with no line event of it in between.
        holder.pop("first"); holder["again"] = memlens.LineProfiler(victim)  # noqa: E702,E501
        dropped.append(_core._line_state()["dropped_frames"])
        b = inner()
        return a + b

    def outer():
        c = victim()
        return c

    before = held()
    keep = memlens.LineProfiler(outer, inner)
    holder["first"] = memlens.LineProfiler(victim)
    dropped.append(_core._line_state()["dropped_frames"])
    with keep:
        assert outer() == 11
        assert _core._line_state()["depth"] == 0
    assert dropped[1] - dropped[0] == 1
    outer_fp, inner_fp = keep.results
    hits = {rec.contents.strip(): rec.occurrences for rec in outer_fp.lines}
    assert hits["c = victim()"] == 1 and hits["return c"] == 1
    hits = {rec.contents.strip(): rec.occurrences for rec in inner_fp.lines}
    assert hits["x = [0] * 10"] == 1
    del keep
    holder.clear()
    collected()
    assert held() == before


def test_profiled_function_lets_go_of_nothing_while_its_profiler_lives(
        line_backend):
    namespace = {"big": Big(4096)}
    exec("def func():\n    return len(big)\n", namespace)
    func, big = namespace.pop("func"), weakref.ref(namespace["big"])
    del namespace  # the function's globals now
    code_ref = weakref.ref(func.__code__)
    profiler = memlens.LineProfiler(func)
    del func
    collected()
    assert big() is not None and code_ref() is not None
    with profiler:
        profiler.functions[0]()
    assert profiler.results[0].lines
    del profiler
    collected()
    assert big() is None and code_ref() is None
