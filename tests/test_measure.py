"""measure(): context manager and decorator (SPEC 2)."""
import asyncio
import inspect
import io
import re

import pytest

import memlens
from memlens._peak import HISTORY

from conftest import MiB, figures, spike

LINE = re.compile(
    r"^(?:(?P<label>.+): )?used (?P<used>-?\d+\.\d\d) MiB RAM \(peaked "
    r"(?P<peak>-?\d+\.\d\d) MiB above start\) in \d+\.\d\d s, total RAM "
    r"usage (?P<total>\d+\.\d\d) MiB$")


def test_context_manager_fills_the_measurement():
    with memlens.measure("block") as m:
        assert not m.done and str(m) == "block: measuring"
        data = [bytes(1000) for _ in range(10_000)]
    assert m.done and m.label == "block"
    assert m.delta == m.rss_end - m.rss_start
    assert m.peak_delta == m.peak - m.rss_start >= 0
    assert m.elapsed > 0 and m.cpu >= 0
    assert m.allocated >= 10_000 * 1000
    assert set(m.to_dict()) >= {"label", "rss_start", "rss_end", "delta",
                                "peak", "peak_delta", "elapsed", "cpu",
                                "allocated", "freed"}
    del data


@figures
def test_measure_peak_is_exact():
    with memlens.measure() as m:
        spike(300 * MiB)
    assert abs(m.peak_delta - 300 * MiB) < 0.03 * 300 * MiB
    assert abs(m.delta) < 5 * MiB


def test_allocated_and_freed_come_from_the_hooks():
    with memlens.measure() as m:
        block = bytes(20 * MiB)
        del block
    assert 20 * MiB <= m.allocated < 21 * MiB
    assert 20 * MiB <= m.freed < 21 * MiB


def test_report_prints_the_spec_line(capsys):
    with memlens.measure("load_digits", report=True):
        spike(50 * MiB)
    out = capsys.readouterr().out.strip()
    match = LINE.match(out)
    assert match, out
    assert match["label"] == "load_digits"


def test_report_without_label_and_to_a_stream_and_a_path(tmp_path):
    stream = io.StringIO()
    with memlens.measure(report=True, file=stream):
        pass
    line = stream.getvalue().strip()
    assert LINE.match(line) and line.startswith("used ")
    path = tmp_path / "log.txt"
    for _ in range(2):
        with memlens.measure("x", report=True, file=path):
            pass
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(LINE.match(x) for x in lines)


def test_never_prints_minus_zero():
    from memlens._report import mib

    assert mib(-1) == "0.00" and mib(-MiB) == "-1.00" and mib(0) == "0.00"


def test_exception_passes_through_unchanged_and_measurement_completes():
    error = ValueError("boom")
    with pytest.raises(ValueError) as info:
        with memlens.measure() as m:
            raise error
    assert info.value is error and m.done


def test_second_exit_is_a_runtime_error_and_keeps_the_first_result():
    block = memlens.measure("once")
    m = block.__enter__()
    assert block.__exit__(None, None, None) is False
    assert m.done
    first = m.to_dict()
    with pytest.raises(RuntimeError, match="exited more times"):
        block.__exit__(None, None, None)
    assert m.to_dict() == first
    with block as again:  # still usable afterwards
        pass
    assert again.done and again is not m


def test_bare_decorator_keeps_name_doc_signature_and_history():
    @memlens.measure
    def build(n, *, fill=0):
        """Builds a list."""
        return [fill] * n

    assert build.__name__ == "build" and build.__doc__ == "Builds a list."
    assert str(inspect.signature(build)) == "(n, *, fill=0)"
    assert build(10) == [0] * 10
    assert build(10**6)
    assert len(build.measurements) == 2
    newest = build.measurements[-1]
    assert newest.label.endswith("build")
    assert newest.allocated >= 8 * 10**6 > build.measurements[0].allocated


@pytest.mark.parametrize("make", [
    lambda: memlens.measure(),
    lambda: memlens.measure("named"),
    lambda: memlens.measure(report=False),
])
def test_decorator_with_arguments(make):
    @make()
    def f():
        return 42

    assert f() == 42 and len(f.measurements) == 1 and f.measurements[0].done


def test_decorated_function_reports(capsys):
    @memlens.measure(report=True)
    def work():
        return 1

    work()
    line = capsys.readouterr().out.strip()
    assert LINE.match(line) and line.startswith(work.__qualname__)


def test_history_is_bounded_newest_last():
    @memlens.measure
    def f(n):
        return bytes(n)

    for i in range(HISTORY + 20):
        f(1000 * i)
    assert len(f.measurements) == HISTORY
    last = f.measurements[-1]
    assert last.allocated >= 1000 * (HISTORY + 19)


def test_decorated_function_that_raises_is_measured():
    @memlens.measure
    def fail():
        raise KeyError("k")

    with pytest.raises(KeyError):
        fail()
    assert len(fail.measurements) == 1 and fail.measurements[0].done


def test_decorated_coroutine_is_measured_across_awaits():
    @memlens.measure
    async def work():
        await asyncio.sleep(0.01)
        return bytes(MiB)

    assert len(asyncio.run(work())) == MiB
    assert work.measurements[0].elapsed >= 0.01
    assert work.measurements[0].allocated >= MiB


@figures
def test_nested_measurements():
    with memlens.measure() as outer:
        spike(200 * MiB)
        with memlens.measure() as inner:
            spike(100 * MiB)
    assert abs(inner.peak_delta - 100 * MiB) < 3 * MiB
    assert abs(outer.peak_delta - 200 * MiB) < 6 * MiB
    assert outer.allocated >= inner.allocated


def test_recursive_decorated_function():
    @memlens.measure
    def depth(n):
        return 0 if n == 0 else 1 + depth(n - 1)

    assert depth(5) == 5
    assert len(depth.measurements) == 6


def test_bad_arguments():
    with pytest.raises(TypeError, match="label"):
        memlens.measure(123)
    with pytest.raises(TypeError, match="file"):
        memlens.measure(file=42)
    with pytest.raises(TypeError, match="callables"):
        memlens.measure("x")(42)
