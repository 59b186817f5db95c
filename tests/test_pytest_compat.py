"""pytest-memray's markers on memlens (issue 21): sizes read as
pytest-memray reads them (KB, MB, GB as powers of 1024, any case), and its
limit_leaks marker with filter_fn, traced exactly, native memory included.

Written from pytest-memray's documented behaviour; pytest-memray itself is
not needed.
"""
import re
import shutil

import pytest

import memlens._readings  # noqa: F401  (loaded before pytester's runs,
import memlens._tracing  # noqa: F401  which unload what they import)
from memlens import pytest_plugin
from memlens.pytest_plugin import parse_size

MiB = 2**20


def failures(result):
    """{test name: text} of each section of pytest's FAILURES part."""
    out = result.stdout.str().split("short test summary info")[0]
    parts = re.split(r"^_{3,} (\S+) _{3,}$", out, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def line_of(source, text):
    """1-based number of the line of `source` that is `text`, stripped."""
    for number, line in enumerate(source.splitlines(), 1):
        if line.strip() == text:
            return number
    raise AssertionError(f"no line {text!r}")


# --------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("size, nbytes", [
    ("1 MB", 1_048_576),
    ("1MB", 2**20),
    ("1mb", 2**20),
    ("1 Mb", 2**20),
    ("1 mB", 2**20),
    ("24 MB", 24 * 2**20),
    ("100 KB", 102_400),
    ("100kb", 102_400),
    ("2 GB", 2 * 2**30),
    ("1 gb", 2**30),
    ("1 TB", 2**40),
    ("1 PB", 2**50),
    ("1 KiB", 1024),
    ("1 kib", 1024),
    ("3 MiB", 3 * 2**20),
    ("3 MIB", 3 * 2**20),
    ("1 GiB", 2**30),
    ("1.5 MB", 3 * 2**19),
    (".5 MB", 2**19),
    ("+2 KB", 2048),
    ("10 B", 10),
    ("10 b", 10),
    ("  10 KB  ", 10_240),
    ("4096", 4096),
    (4096, 4096),
])
def test_sizes_are_powers_of_1024_in_any_case(size, nbytes):
    assert parse_size(size) == nbytes


@pytest.mark.parametrize("size, message", [
    ("1 M", r"'1 M': unknown unit 'M' \(did you mean 'MB'\?\); the units are "
            r"B, KB, MB, GB, TB, PB \(powers of 1024, any case; also written "
            r"KiB, MiB, GiB, TiB, PiB\)"),
    ("1 k", r"unknown unit 'k' \(did you mean 'KB'\?\)"),
    ("1 EB", r"'1 EB': unknown unit 'EB'; the units are"),
    ("1 MB of memory", r"is not a size"),
    ("1 MBs", r"unknown unit 'MBs'"),
    ("MB", r"'MB' is not a size: write a number and a unit, such as "
           r"'24 MB' \(units: B, KB, MB"),
    ("1e3 KB", "is not a size"),
    ("-1 MB", "cannot be negative"),
])
def test_what_is_not_a_size_is_refused_saying_why(size, message):
    with pytest.raises(ValueError, match=message):
        parse_size(size)


UNIT_LIMITS = """
import pytest


@pytest.mark.limit_allocations("1 MB")
def test_a_million_bytes_fits_in_a_megabyte():
    block = bytearray(1_010_000)


@pytest.mark.limit_allocations("1mb")
def test_lowercase_over():
    block = bytearray(2 * 1024 * 1024)


@pytest.mark.limit_allocations("512 KiB")
def test_kib_over():
    block = bytearray(1024 * 1024)


@pytest.mark.limit_allocations(1000)
def test_bytes_over():
    block = bytearray(5000)
"""


def test_markers_read_megabytes_as_mebibytes_and_say_the_bytes(pytester):
    """1,010,000 bytes are over 10**6 but under 2**20: a limit of "1 MB"
    holds them, as it does under pytest-memray."""
    pytester.makepyfile(test_units=UNIT_LIMITS)
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1, failed=3)
    sections = failures(result)
    assert set(sections) == {"test_lowercase_over", "test_kib_over",
                             "test_bytes_over"}
    assert re.search(r"traced allocations peaked at 2\.\d\d MiB "
                     r"\([\d,]+ bytes\), over the limit of 1mb \(1,048,576 "
                     r"bytes, 1\.00 MiB\)", sections["test_lowercase_over"])
    assert re.search(r"over the limit of 512 KiB \(524,288 bytes, 0\.50 "
                     r"MiB\)", sections["test_kib_over"])
    assert re.search(r"over the limit of 1,000 bytes \(0\.00 MiB\)",
                     sections["test_bytes_over"])


# --------------------------------------------------------------------------
# limit_leaks
# --------------------------------------------------------------------------

LEAKS = """
import pytest

KEPT = []


class Cycle:
    def __init__(self, payload):
        self.me = self
        self.payload = payload


def keep(nbytes):
    KEPT.append(bytearray(nbytes))


def cache_it(nbytes):
    keep(nbytes)


@pytest.mark.limit_leaks("1 MB")
def test_keeps_three_megabytes():
    for _ in range(30):
        keep(100_000)
    KEPT.append(bytearray(1_500_000))


@pytest.mark.limit_leaks("1 MB")
def test_frees_what_it_allocates():
    for _ in range(100):
        block = bytearray(500_000)
        rows = [str(i) * 10 for i in range(1000)]
        table = dict.fromkeys(rows)
    del block, rows, table


@pytest.mark.limit_leaks("1 MB")
def test_garbage_cycles_are_not_leaks():
    for _ in range(20):
        Cycle(bytearray(500_000))


@pytest.mark.limit_leaks("1 MB")
def test_the_limit_is_per_call_stack():
    keep(800_000)
    KEPT.append(bytearray(800_000))


@pytest.mark.limit_leaks("1 MB")
def test_own_failure_is_not_checked():
    keep(5_000_000)
    assert False, "the test's own assertion"


@pytest.mark.limit_leaks(location_limit="10 MB", current_thread_only=False)
def test_pytest_memray_keywords():
    keep(5_000_000)
"""


def test_limit_leaks_fails_a_test_that_keeps_what_it_allocated(pytester):
    pytester.makepyfile(test_leaky=LEAKS)
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=4, failed=2)
    sections = failures(result)
    assert set(sections) == {"test_keeps_three_megabytes",
                             "test_own_failure_is_not_checked"}
    text = sections["test_keeps_three_megabytes"]
    source = (pytester.path / "test_leaky.py").read_text()
    keep_line = line_of(source, "KEPT.append(bytearray(nbytes))")
    loop_line = line_of(source, "keep(100_000)")
    own_line = line_of(source, "KEPT.append(bytearray(1_500_000))")
    assert ("limit_leaks: 2 call stacks each still held more than the limit "
            "of 1 MB (1,048,576 bytes, 1.00 MiB) at the test's end, of the "
            "memory allocated during the test (the limit is per call "
            "stack)\n") in text, text
    # Largest first; each stack from the allocating line down to the test.
    match = re.search(
        r"Leaking call stacks, largest first \(Python and native memory "
        r"allocated during the test and alive at its end\):\n"
        r" +2\.86 MiB  test_leaky\.py:(\d+) in keep  \(3,00\d,\d{3} bytes "
        r"in 6\d blocks\)\n"
        r" +KEPT\.append\(bytearray\(nbytes\)\)\n"
        r" +called from test_leaky\.py:(\d+) in test_keeps_three_megabytes\n"
        r" +1\.43 MiB  test_leaky\.py:(\d+) in test_keeps_three_megabytes  "
        r"\(1,50\d,\d{3} bytes in [12] blocks?\)\n"
        r" +KEPT\.append\(bytearray\(1_500_000\)\)\n", text)
    assert match, text
    assert [int(n) for n in match.groups()] == [keep_line, loop_line,
                                                own_line]
    # A test that failed on its own keeps its failure, and is not judged:
    # its traceback holds what it allocated.
    text = sections["test_own_failure_is_not_checked"]
    assert "AssertionError: the test's own assertion" in text
    assert "limit_leaks:" not in text and "memlens" not in text


FILTERS = """
import pytest

from memlens.pytest_plugin import Stack, StackFrame

KEPT = []
SEEN = []


def keep(nbytes):
    KEPT.append(bytearray(nbytes))


def cache_it(nbytes):
    keep(nbytes)


def not_from_cache(stack):
    SEEN.append(stack)
    return not any(frame.function == "cache_it" for frame in stack.frames)


def report_everything(stack):
    return True


def broken(stack):
    raise KeyError("no such frame")


@pytest.mark.limit_leaks("1 MB", filter_fn=not_from_cache)
def test_cached_leak_is_ignored():
    cache_it(3_000_000)


@pytest.mark.limit_leaks("1 MB", filter_fn=not_from_cache)
def test_other_leak_is_reported():
    cache_it(3_000_000)
    keep(2_000_000)


@pytest.mark.limit_leaks("1 MB", filter_fn=report_everything)
def test_filter_that_keeps_everything():
    keep(2_000_000)


@pytest.mark.limit_leaks("1 MB", filter_fn=broken)
def test_broken_filter():
    keep(2_000_000)


def test_filter_saw_stacks_of_frames():
    # Called once per stack over the limit, with pytest-memray's shape.
    assert len(SEEN) == 3
    stack = SEEN[0]
    assert isinstance(stack, Stack)
    assert all(isinstance(frame, StackFrame) for frame in stack.frames)
    names = [frame.function for frame in stack.frames]
    assert names[:3] == ["keep", "cache_it", "test_cached_leak_is_ignored"]
    top = stack.frames[0]
    assert top.filename == __file__ and isinstance(top.lineno, int)
    # The whole stack, down to pytest's own frames.
    assert len(stack.frames) > 10
"""


def test_filter_fn_ignores_the_stacks_it_returns_false_for(pytester):
    pytester.makepyfile(test_filters=FILTERS)
    result = pytester.runpytest_inprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=3)
    sections = failures(result)
    assert set(sections) == {"test_other_leak_is_reported",
                             "test_filter_that_keeps_everything",
                             "test_broken_filter"}
    text = sections["test_other_leak_is_reported"]
    assert "limit_leaks: a call stack still held more" in text
    assert re.search(r"1\.91 MiB  test_filters\.py:\d+ in keep  .*\n.*\n"
                     r" +called from test_filters\.py:\d+ in "
                     r"test_other_leak_is_reported\n", text), text
    assert "cache_it" not in text
    assert ("memlens could not measure the test: limit_leaks' filter_fn "
            "raised KeyError: 'no such frame'") in sections[
                "test_broken_filter"]


NATIVE_LEAKS = """
import pytest

import touchmem

SIZE = 8 * 2**20
HELD = []


@pytest.mark.limit_leaks("1 MB")
def test_keeps_a_malloc():
    HELD.append(touchmem.malloc_touch(SIZE))


@pytest.mark.limit_leaks("1 MB")
def test_frees_its_malloc():
    touchmem.free(touchmem.malloc_touch(SIZE))


def test_free_what_was_kept():
    for address in HELD:
        touchmem.free(address)
"""


def test_limit_leaks_catches_a_c_library_malloc_kept(pytester,
                                                     touchmem_path):
    shutil.copy(touchmem_path, pytester.path)
    pytester.makepyfile(test_native_leaks=NATIVE_LEAKS)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    text = failures(result)["test_keeps_a_malloc"]
    line = line_of((pytester.path / "test_native_leaks.py").read_text(),
                   "HELD.append(touchmem.malloc_touch(SIZE))")
    assert re.search(
        rf"^ +8\.00 MiB  test_native_leaks\.py:{line} in "
        rf"test_keeps_a_malloc  \(8,388,\d{{3}} bytes in \d blocks?, "
        rf"8,388,608 native\)$", text, re.M), text


def test_limit_leaks_is_not_checked_without_tracing_it_owns(pytester):
    """As limit_allocations: tracing already running is said, not
    crashed into, and nothing is left installed."""
    pytester.makepyfile(test_taken="""
import memlens
import pytest


@pytest.fixture
def traced():
    memlens.start_tracing()
    yield
    memlens.stop_tracing()


@pytest.mark.limit_leaks("1 MB")
def test_tracing_taken(traced):
    pass


@pytest.mark.limit_leaks("1 MB")
def test_stops_the_tracer():
    memlens.stop_tracing()
""")
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(failed=2)
    sections = failures(result)
    assert ("memlens could not measure the test: limit_leaks needs "
            "memlens's allocation tracing, and it was already running when "
            "the test started") in sections["test_tracing_taken"]
    assert ("memlens could not measure the test: limit_leaks has no figure: "
            "the test stopped memlens's allocation tracing"
            ) in sections["test_stops_the_tracer"]
    assert not memlens.is_tracing()


# --------------------------------------------------------------------------
# Bad markers, registration
# --------------------------------------------------------------------------

MALFORMED = """
import pytest


@pytest.mark.limit_leaks("lots")
def test_not_a_size():
    pass


@pytest.mark.limit_leaks()
def test_no_size():
    pass


@pytest.mark.limit_leaks("1 MB", location_limit="2 MB")
def test_two_sizes():
    pass


@pytest.mark.limit_leaks("1 MB", filter_fn="frames")
def test_filter_not_callable():
    pass


@pytest.mark.limit_leaks("1 MB", filter=len)
def test_unknown_keyword():
    pass


@pytest.mark.limit_leaks("1 MB", current_thread_only=True)
def test_one_thread():
    pass


@pytest.mark.limit_memory("1 MB", current_thread_only=1)
def test_one_thread_not_bool():
    pass


@pytest.mark.limit_leaks("1 MB")
@pytest.mark.limit_allocations("1 MB")
def test_two_limits():
    pass


@pytest.mark.limit_memory(limit="24 MB")
def test_fine_memray_keyword():
    pass
"""


def test_malformed_limit_leaks_markers_are_collection_errors(pytester):
    pytester.makepyfile(test_malformed=MALFORMED)
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    use = ("limit_leaks takes one size (or location_limit=size), filter_fn= "
           "and current_thread_only=False, such as "
           "@pytest.mark.limit_leaks(\"1 MB\", filter_fn=None)")
    result.stdout.fnmatch_lines([
        "*ERROR collecting test_malformed.py*",
        "test_malformed.py::test_not_a_size: "
        "@pytest.mark.limit_leaks('lots'): 'lots' is not a size: write a "
        "number and a unit, such as '24 MB' (units: B, KB, MB, GB, TB, PB "
        "(powers of 1024, any case; also written KiB, MiB, GiB, TiB, PiB))",
        "test_malformed.py::test_no_size: @pytest.mark.limit_leaks(): takes "
        "one size, such as @pytest.mark.limit_leaks(\"1 MB\")",
        "test_malformed.py::test_two_sizes: "
        "@pytest.mark.limit_leaks('1 MB', location_limit='2 MB'): takes one "
        "size, such as @pytest.mark.limit_leaks(\"1 MB\")",
        "test_malformed.py::test_filter_not_callable: "
        "@pytest.mark.limit_leaks('1 MB', filter_fn='frames'): filter_fn "
        "must be a function that takes a Stack and returns False to ignore "
        "its leak, or None, not 'frames'",
        "test_malformed.py::test_unknown_keyword: "
        "@pytest.mark.limit_leaks('1 MB', filter=<built-in function len>): "
        f"unknown keyword 'filter': {use}",
        "test_malformed.py::test_one_thread: "
        "@pytest.mark.limit_leaks('1 MB', current_thread_only=True): "
        "current_thread_only=True is not supported: memlens counts the "
        "memory of every thread",
        "test_malformed.py::test_one_thread_not_bool: "
        "@pytest.mark.limit_memory('1 MB', current_thread_only=1): "
        "current_thread_only must be True or False, not 1",
        "test_malformed.py::test_two_limits: limit_leaks and "
        "limit_allocations on one test: limit_leaks traces the test its own "
        "way (every frame, native memory too); put the other limit on a "
        "test of its own",
    ])
    assert "test_fine_memray_keyword" not in result.stdout.str()


def test_limit_leaks_is_a_registered_marker(pytester):
    pytester.makepyfile(test_strict="""
import pytest


@pytest.mark.limit_leaks("64 KB")
def test_nothing_kept():
    total = sum(len(str(i)) for i in range(10_000))
""")
    result = pytester.runpytest_inprocess("--strict-markers")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines([
        "@pytest.mark.limit_leaks(size, filter_fn=None): fail the test when "
        "a call stack still holds more than size*"])


def test_stack_and_frames_have_pytest_memrays_attributes():
    frame = pytest_plugin.StackFrame("keep", "/src/app.py", 12)
    stack = pytest_plugin.Stack((frame,))
    assert (stack.frames[0].function, stack.frames[0].filename,
            stack.frames[0].lineno) == ("keep", "/src/app.py", 12)
