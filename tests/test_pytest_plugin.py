"""The pytest plugin (SPEC 8): limit markers, the --memlens report.

Runs that measure RSS run pytest in a fresh subprocess, so that what this
process already holds (and glibc's reuse of its freed pages) cannot move
the figures; runs that only collect, or only trace, run in this process,
under conftest's check that nothing is left installed.
"""
import importlib.metadata
import json
import re
import shutil
import xml.etree.ElementTree as ElementTree
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import memlens
import memlens._readings  # noqa: F401  (loaded before pytester's runs,
import memlens._tracing  # noqa: F401  which unload what they import)
from memlens import pytest_plugin
from memlens._report import mib
from memlens.pytest_plugin import UNITS, parse_size

from conftest import figures

MiB = 2**20


def failures(result):
    """{test name: text} of each section of pytest's FAILURES part."""
    parts = re.split(r"^_{3,} (\S+) _{3,}$", result.stdout.str(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def line_of(source, text):
    """1-based number of the line of `source` that is `text`, stripped."""
    for number, line in enumerate(source.splitlines(), 1):
        if line.strip() == text:
            return number
    raise AssertionError(f"no line {text!r}")


REPORT_ROW = re.compile(
    r"^\s*(?P<rss>\d+\.\d\d) MiB\s+(?:-|(?P<traced>\d+\.\d\d) MiB)\s+"
    r"(?P<test>\S+)(?: \((?P<outcome>\w+)\))?(?P<native> \[native\])?$")


def report_rows(result):
    """(test, RSS MiB, traced MiB or None, outcome) per row of the
    --memlens report, in order; a native=True test's outcome ends in
    " [native]"."""
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines)
                 if re.match(r"=+ memlens: ", line))
    rows = []
    for line in lines[start + 2:]:
        match = REPORT_ROW.match(line)
        if match is None:
            break
        traced = match["traced"]
        rows.append((match["test"], float(match["rss"]),
                     None if traced is None else float(traced),
                     (match["outcome"] or "passed")
                     + (match["native"] or "")))
    return rows


def junit_figures(path):
    """{test name: {property: int}} from a --junitxml file."""
    out = {}
    for case in ElementTree.parse(path).iter("testcase"):
        out[case.get("name")] = {p.get("name"): int(p.get("value"))
                                 for p in case.iter("property")}
    return out


# --------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("size, nbytes", [
    ("24 MB", 24 * 2**20),
    ("24MB", 24 * 2**20),
    ("  10 KB ", 10_240),
    ("1 GB", 2**30),
    ("512 KiB", 512 * 1024),
    ("1.5 MiB", 3 * 2**19),
    ("2 GiB", 2 * 2**30),
    ("0.1 KB", 102),
    ("3 B", 3),
    ("4096", 4096),
    (4096, 4096),
    (".5 KiB", 512),
])
def test_parse_size_reads_units_as_powers_of_1024(size, nbytes):
    assert parse_size(size) == nbytes


@pytest.mark.parametrize("size, error, message", [
    ("lots", ValueError, r"'lots' is not a size: write a number and a "
                         r"unit, such as '24 MB' \(units: B, KB, MB, GB, "
                         r"TB, PB \(powers of 1024, any case; also written "
                         r"KiB, MiB, GiB, TiB, PiB\)\)"),
    ("", ValueError, "is not a size"),
    ("1e6 B", ValueError, "is not a size"),
    ("inf MB", ValueError, "is not a size"),
    ("24 m", ValueError, r"unknown unit 'm' \(did you mean 'MB'\?\)"),
    ("3 EB", ValueError, r"unknown unit 'EB'; the units are B, KB"),
    ("-5 MB", ValueError, "'-5 MB': a size cannot be negative"),
    (-1, ValueError, "-1: a size cannot be negative"),
    (0, ValueError, "0: a limit must be at least 1 byte"),
    ("0 MB", ValueError, "at least 1 byte"),
    ("0.4 B", ValueError, "at least 1 byte"),
    (1.5, TypeError, "an int .bytes. or a string such as '24 MB', not "
                     "float"),
    (True, TypeError, "not bool"),
    (None, TypeError, "not NoneType"),
])
def test_parse_size_refuses_what_is_not_a_size(size, error, message):
    with pytest.raises(error, match=message):
        parse_size(size)


_DIGITS = st.text("0123456789", min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(whole=_DIGITS, fraction=st.none() | st.text("0123456789",
                                                  max_size=40),
       unit=st.sampled_from(sorted(UNITS)), blank=st.sampled_from(
           ["", " ", "  ", "\t"]), lower=st.booleans())
def test_parse_size_is_exact_for_every_number_and_unit(whole, fraction,
                                                       unit, blank, lower):
    written = whole if fraction is None else f"{whole}.{fraction}"
    spelt = unit.lower() if lower else unit
    size = f"{blank}{written}{blank}{spelt}{blank}"
    exact = int(Fraction(written) * UNITS[unit])  # fractions of a byte go
    if exact < 1:
        with pytest.raises(ValueError, match="at least 1 byte"):
            parse_size(size)
    else:
        assert parse_size(size) == exact


@settings(max_examples=200, deadline=None)
@given(nbytes=st.integers(min_value=1, max_value=2**53),  # exact floats
       precision=st.integers(min_value=0, max_value=6))
def test_parse_size_reads_back_what_mib_writes(nbytes, precision):
    written = mib(nbytes, precision)
    assume(Fraction(written) * 2**20 >= 1)
    # mib() rounds to `precision` decimals of a MiB.
    assert abs(parse_size(f"{written} MiB") - nbytes) <= (
        Fraction(2**20, 2 * 10**precision) + 1)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_parse_size_of_any_text_is_a_size_or_a_value_error(text):
    try:
        nbytes = parse_size(text)
    except ValueError:
        return
    assert isinstance(nbytes, int) and nbytes >= 1


@settings(max_examples=200, deadline=None)
@given(number=_DIGITS, unit=st.text(st.characters(
    whitelist_categories=["Lu", "Ll"]), min_size=1, max_size=4).filter(
        lambda u: u.lower() not in {unit.lower() for unit in UNITS}))
def test_parse_size_refuses_unknown_units(number, unit):
    with pytest.raises(ValueError):
        parse_size(f"{number} {unit}")


# --------------------------------------------------------------------------
# Registration, and the cost of a plain run
# --------------------------------------------------------------------------

def test_registered_through_the_pytest11_entry_point(pytester):
    entry_points = importlib.metadata.entry_points()
    if hasattr(entry_points, "select"):
        group = entry_points.select(group="pytest11")
    else:  # Python 3.9: a dict of groups
        group = entry_points.get("pytest11", ())
    assert {(e.name, e.value) for e in group} >= {
        ("memlens", "memlens.pytest_plugin")}
    config = pytester.parseconfig()
    assert config.pluginmanager.get_plugin("memlens") is pytest_plugin


NO_C_CONFTEST = """
import json
import sys
import threading

import pytest


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    with open("state.json", "w") as f:
        json.dump({
            "plugin": config.pluginmanager.get_plugin("memlens")
                      is sys.modules.get("memlens.pytest_plugin"),
            "memlens": sorted(name for name in sys.modules
                              if name.startswith("memlens")),
            "threads": threading.active_count(),
            "trace": sys.gettrace() is None and sys.getprofile() is None,
        }, f)
"""

NO_C_TESTS = """
import sys

import numpy as np
import pytest


def test_plain():
    block = np.ones(10**6)
    assert "memlens._core" not in sys.modules
    del block


@pytest.mark.limit_memory("24 MB")
def test_deselected():
    pass
"""


def test_plain_run_loads_no_c_and_installs_nothing(pytester):
    """Without a marker that runs or --memlens, the plugin is registered
    and checks markers, and nothing of memlens's core is loaded."""
    pytester.makeconftest(NO_C_CONFTEST)
    pytester.makepyfile(test_plain=NO_C_TESTS)
    result = pytester.runpytest_subprocess("-k", "not deselected")
    result.assert_outcomes(passed=1, deselected=1)
    state = json.loads((pytester.path / "state.json").read_text())
    assert state == {
        "plugin": True,
        "memlens": ["memlens", "memlens._report", "memlens.pytest_plugin"],
        "threads": 1, "trace": True}


# --------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------

LIMITS = """
import numpy as np
import pytest

MB = 10**6


@pytest.fixture
def held():
    block = np.ones(60 * MB // 8)
    yield block
    del block


@pytest.mark.limit_memory("24 MB")
def test_memory_over():
    block = np.ones(50 * MB // 8)
    del block


@pytest.mark.limit_memory("24 MB")
def test_memory_under():
    block = np.ones(10 * MB // 8)
    del block


@pytest.mark.limit_allocations("10 MB")
def test_allocations_over():
    block = np.ones(50 * MB // 8)
    names = [str(i) for i in range(1000)]
    del block


@pytest.mark.limit_allocations("10 MB")
def test_allocations_under():
    block = np.ones(9 * MB // 8)
    del block


@pytest.mark.limit_memory("24 MB")
@pytest.mark.limit_allocations("1 MB")
def test_fixture_setup_is_not_counted(held):
    assert held.sum() == held.size


@pytest.mark.xfail(strict=True, reason="known to be over")
@pytest.mark.limit_memory("1 MB")
def test_xfail_over():
    block = np.ones(50 * MB // 8)


@pytest.mark.xfail(strict=True, reason="thought to be over")
@pytest.mark.limit_allocations("10 MB")
def test_xfail_under():
    pass


@pytest.mark.limit_memory("1 MB")
def test_own_failure_stands():
    block = np.ones(50 * MB // 8)
    assert block.size == 0, "the test's own assertion"


@pytest.mark.skip(reason="not today")
@pytest.mark.limit_memory("1 MB")
def test_skipped():
    pass


@pytest.mark.limit_allocations("1 MB")
def test_skips_itself():
    block = np.ones(50 * MB // 8)
    pytest.skip("changed its mind")
"""


@figures
def test_limits_fail_with_figure_limit_and_lines(pytester):
    pytester.makepyfile(test_limits=LIMITS)
    result = pytester.runpytest_subprocess("--memlens", "--memlens-top", "0")
    result.assert_outcomes(passed=3, failed=4, skipped=2, xfailed=1)
    sections = failures(result)

    # 50 MB under a 24 MB limit: the exact RSS rise, the limit, the line.
    text = sections["test_memory_over"]
    match = re.search(
        r"limit_memory: the peak RSS rose (\d+\.\d\d) MiB \(([\d,]+) bytes\) "
        r"above the test's start, over the limit of 24 MB \(25,165,824 "
        r"bytes, 24.00 MiB\)", text)
    assert match, text
    # 47.68 MiB; the kernel's RSS counters may lag by a few pages.
    assert 46.5 <= float(match[1]) <= 52, text
    line = line_of((pytester.path / "test_limits.py").read_text(),
                   "block = np.ones(50 * MB // 8)")
    lines = re.search(r"Top lines alive at the peak of traced allocations "
                      r"\(sampled.*\):\n\s+(\d+\.\d\d) MiB  "
                      r"test_limits.py:(\d+)\n\s+(.*)\n", text)
    assert lines, text
    # Sampled: the line's figure is an estimate of its 47.68 MiB.
    assert 40 <= float(lines[1]) <= 56, text
    assert int(lines[2]) == line
    assert lines[3] == "block = np.ones(50 * MB // 8)"

    # limit_allocations: the exact traced peak and the exact lines.
    text = sections["test_allocations_over"]
    match = re.search(
        r"limit_allocations: traced allocations peaked at 47\.\d\d MiB "
        r"\(([\d,]+) bytes\), over the limit of 10 MB \(10,485,760 bytes, "
        r"10.00 MiB\)", text)
    assert match, text
    traced = int(match[1].replace(",", ""))
    assert 50_000_000 < traced < 50_000_000 + 256 * 1024, text
    assert re.search(r"Top lines alive at the peak of traced allocations:\n"
                     r"\s+47\.68 MiB  test_limits\.py:(\d+)\n"
                     r"\s+block = np.ones\(50 \* MB // 8\)\n", text), text
    assert "sampled" not in text

    # A test's own failure stands, with the overrun shown next to it.
    text = sections["test_own_failure_stands"]
    assert "AssertionError: the test's own assertion" in text
    assert re.search(r"-+ Captured memlens call -+\nlimit_memory: the peak "
                     r"RSS rose \d+\.\d\d MiB", text), text
    assert "[XPASS(strict)] thought to be over" in result.stdout.str()

    rows = {test.split("::")[-1]: (rss, traced, outcome)
            for test, rss, traced, outcome in report_rows(result)}
    assert set(rows) == {
        "test_memory_over", "test_memory_under", "test_allocations_over",
        "test_allocations_under", "test_fixture_setup_is_not_counted",
        "test_xfail_over", "test_xfail_under", "test_own_failure_stands",
        "test_skips_itself"}
    assert rows["test_memory_over"][2] == "failed"
    assert rows["test_xfail_over"][2] == "xfailed"
    assert rows["test_skips_itself"][2] == "skipped"
    assert rows["test_memory_under"][:2] == (
        pytest.approx(9.54, abs=1.5), None)
    assert 8.5 <= rows["test_allocations_under"][1] <= 8.6
    assert 47.68 <= rows["test_allocations_over"][1] <= 47.93
    # The fixture's 60 MB were set up before the measured call.
    assert rows["test_fixture_setup_is_not_counted"][0] < 10
    assert rows["test_fixture_setup_is_not_counted"][1] < 0.1


# --------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------

REPEATED = """
import numpy as np
import pytest


class Node:
    def __init__(self, i):
        self.me = self  # a cycle: the collector frees it, not del
        self.name = f"node{i}"


@pytest.mark.limit_allocations("200 MB")
@pytest.mark.parametrize("round", range(4))
def test_mixed(round):
    kept = [Node(i) for i in range(20_000)]
    array = np.ones(10**6)
    garbage = [[Node(i)] for i in range(50_000)]
    del garbage
    table = {str(i): i for i in range(10_000)}
"""

BEFORE = """
class Cycle:
    def __init__(self):
        self.me = self


def test_leaves_garbage_behind():
    junk = [[Cycle()] for _ in range(7_777)]
    del junk


def test_keeps_some():
    global kept
    kept = [Cycle() for _ in range(333)]
"""


def test_limit_allocations_gives_the_same_figure_on_repeated_runs(pytester):
    pytester.makepyfile(test_repeated=REPEATED, test_before=BEFORE)
    figures = []
    for args in (["test_repeated.py"], ["test_repeated.py"],
                 ["test_before.py", "test_repeated.py"]):
        result = pytester.runpytest_subprocess(*args, "--junitxml=out.xml")
        result.assert_outcomes(passed=2 * len(args) + 2)
        found = junit_figures(pytester.path / "out.xml")
        figures.append([found[f"test_mixed[{i}]"]["memlens_peak_allocations"]
                        for i in range(4)])
    # The same run twice: the same figures, to the byte.
    assert figures[0] == figures[1]
    # After the first round (which also fills caches Python keeps), every
    # round gives the same figure, whatever ran before in the session.
    later = {f for run in figures for f in run[1:]}
    assert len(later) == 1, figures
    (figure,) = later
    # 20,000 Nodes and their names, an 8 MB array, a 10,000-key dict.
    assert 8_000_000 + 20_000 * 100 < figure < 40_000_000
    assert abs(figures[2][0] - figure) < 16 * 1024


# --------------------------------------------------------------------------
# The report, and pytest-xdist
# --------------------------------------------------------------------------

SPREAD = """
import numpy as np
import pytest

MB = 10**6


@pytest.mark.parametrize("size", [5, 45, 80])
def test_holds(size):
    block = np.ones(size * MB // 8)
    assert block.sum() == block.size


@pytest.mark.limit_memory("24 MB")
def test_over_on_a_worker():
    block = np.ones(50 * MB // 8)


@pytest.mark.limit_allocations("10 MB")
def test_allocations_on_a_worker():
    block = np.ones(5 * MB // 8)
"""


@figures
def test_xdist_workers_measure_their_tests_and_the_report_shows_them(
        pytester):
    pytester.makepyfile(test_spread=SPREAD)
    result = pytester.runpytest_subprocess("-n", "2", "-v", "--memlens-top",
                                           "3")
    result.assert_outcomes(passed=4, failed=1)
    out = result.stdout.str()
    assert re.search(r"\[gw0\] .*PASSED", out) and re.search(
        r"\[gw1\] .*PASSED", out), out
    text = failures(result)["test_over_on_a_worker"]
    assert re.search(r"limit_memory: the peak RSS rose 4[789]\.\d\d MiB",
                     text), text
    # Printed once, by the controller, from the figures the workers sent.
    assert len(re.findall(r"=+ memlens: ", out)) == 1
    assert "memlens: the 3 highest peaks of 5 tests measured" in out
    rows = report_rows(result)
    assert [row[0] for row in rows] == [
        "test_spread.py::test_holds[80]",
        "test_spread.py::test_over_on_a_worker",
        "test_spread.py::test_holds[45]"]
    assert [row[3] for row in rows] == ["passed", "failed", "passed"]
    for (test, rss, traced, outcome), megabytes in zip(rows, (80, 50, 45)):
        assert megabytes * 1e6 / MiB - 1 <= rss <= megabytes * 1e6 / MiB + 3
        assert traced is None


# --------------------------------------------------------------------------
# Bad markers and options
# --------------------------------------------------------------------------

MALFORMED = """
import pytest


@pytest.mark.limit_memory("lots")
def test_lots():
    pass


@pytest.mark.limit_allocations("-5 MB")
def test_negative():
    pass


@pytest.mark.limit_memory(0)
def test_zero():
    pass


@pytest.mark.limit_memory("24 m")
def test_unit_prefix():
    pass


@pytest.mark.limit_allocations("1 MB", "2 MB")
def test_two_sizes():
    pass


@pytest.mark.limit_memory(size="1 MB")
def test_keyword():
    pass


@pytest.mark.limit_memory(1.5)
def test_float():
    pass


@pytest.mark.parametrize("n", [1, pytest.param(2, marks=[
    pytest.mark.limit_memory("much")])])
def test_param(n):
    pass


def test_fine():
    pass
"""

GROUP = """
import pytest


class TestGroup:
    pytestmark = pytest.mark.limit_allocations("")

    def test_in_group(self):
        pass


def test_outside():
    pass
"""


def test_malformed_markers_are_collection_errors(pytester):
    pytester.makepyfile(test_malformed=MALFORMED, test_group=GROUP)
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([
        "*ERROR collecting test_group.py*",
        "test_group.py::TestGroup::test_in_group: "
        "@pytest.mark.limit_allocations(''): '' is not a size*",
        "*ERROR collecting test_malformed.py*",
        "test_malformed.py::test_lots: @pytest.mark.limit_memory('lots'): "
        "'lots' is not a size: write a number and a unit, such as '24 MB' "
        "(units: B, KB, MB, GB, TB, PB (powers of 1024, any case; also "
        "written KiB, MiB, GiB, TiB, PiB))",
        "test_malformed.py::test_negative: "
        "@pytest.mark.limit_allocations('-5 MB'): '-5 MB': a size cannot be "
        "negative",
        "test_malformed.py::test_zero: @pytest.mark.limit_memory(0): 0: a "
        "limit must be at least 1 byte",
        "test_malformed.py::test_unit_prefix: @pytest.mark.limit_memory('24 "
        "m'): '24 m': unknown unit 'm' (did you mean 'MB'?); the units are "
        "B, KB, MB, GB, TB, PB (powers of 1024, any case; also written KiB, "
        "MiB, GiB, TiB, PiB)",
        "test_malformed.py::test_two_sizes: "
        "@pytest.mark.limit_allocations('1 MB', '2 MB'): takes one size, "
        "such as @pytest.mark.limit_allocations(\"24 MB\")",
        "test_malformed.py::test_keyword: "
        "@pytest.mark.limit_memory(size='1 MB'): unknown keyword 'size': "
        "limit_memory takes one size (or limit=size) and "
        "current_thread_only=False, such as "
        "@pytest.mark.limit_memory(\"24 MB\")",
        "test_malformed.py::test_float: @pytest.mark.limit_memory(1.5): a "
        "size is an int (bytes) or a string such as '24 MB', not float",
        "test_malformed.py::test_param[[]2]: "
        "@pytest.mark.limit_memory('much'): 'much' is not a size*",
        # the reason after " - " is left out by some pytest versions
        "ERROR test_group.py::TestGroup*",
        "ERROR test_malformed.py*",
        "*Interrupted: 2 errors during collection*",
    ])
    # The class's module collected its other test.
    assert "collected 1 item / 2 errors" in result.stdout.str()
    assert "test_fine" not in result.stdout.str().split("ERRORS")[1]


NATIVE_KEYWORD = """
import pytest


@pytest.mark.limit_allocations("1 MB", nativ=True)
def test_misspelt():
    pass


@pytest.mark.limit_allocations("1 MB", native="yes")
def test_not_a_bool():
    pass


@pytest.mark.limit_allocations("1 MB", native=1)
def test_an_int():
    pass


@pytest.mark.limit_allocations(native=True)
def test_no_size():
    pass


@pytest.mark.limit_memory("1 MB", native=True)
def test_memory_takes_no_native():
    pass
"""


def test_limit_allocations_takes_native_and_no_other_keyword(pytester):
    pytester.makepyfile(test_keywords=NATIVE_KEYWORD)
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR collecting test_keywords.py*",
        "test_keywords.py::test_misspelt: "
        "@pytest.mark.limit_allocations('1 MB', nativ=True): unknown "
        "keyword 'nativ': limit_allocations takes one size and native=True "
        "or False, such as @pytest.mark.limit_allocations(\"24 MB\", "
        "native=True)",
        "test_keywords.py::test_not_a_bool: "
        "@pytest.mark.limit_allocations('1 MB', native='yes'): native must "
        "be True or False, not 'yes'",
        "test_keywords.py::test_an_int: "
        "@pytest.mark.limit_allocations('1 MB', native=1): native must be "
        "True or False, not 1",
        "test_keywords.py::test_no_size: "
        "@pytest.mark.limit_allocations(native=True): takes one size, such "
        "as @pytest.mark.limit_allocations(\"24 MB\")",
        "test_keywords.py::test_memory_takes_no_native: "
        "@pytest.mark.limit_memory('1 MB', native=True): unknown keyword "
        "'native': limit_memory takes one size (or limit=size) and "
        "current_thread_only=False, such as "
        "@pytest.mark.limit_memory(\"24 MB\")",
    ])


NATIVE_FALSE = """
import pytest


@pytest.mark.limit_allocations("1 KB", native=False)
def test_python_over():
    kept = [bytes(1000) for _ in range(100)]


@pytest.mark.limit_allocations("10 MB", native=False)
def test_python_under():
    kept = [bytes(1000) for _ in range(100)]
"""


def test_limit_allocations_native_false_is_the_plain_limit(pytester):
    pytester.makepyfile(test_flag_off=NATIVE_FALSE)
    result = pytester.runpytest_inprocess("--memlens")
    result.assert_outcomes(passed=1, failed=1)
    text = failures(result)["test_python_over"]
    assert re.search(r"^limit_allocations: traced allocations peaked at "
                     r"0\.\d\d MiB \(\d{3},\d{3} bytes\), over the limit of "
                     r"1 KB", text, re.M), text
    assert "Top lines alive at the peak of traced allocations:\n" in text
    assert "(native)" not in text
    rows = {test.split("::")[-1]: outcome
            for test, _, traced, outcome in report_rows(result)}
    assert rows == {"test_python_over": "failed",
                    "test_python_under": "passed"}


NATIVE_LIMITS = """
import pytest

import touchmem

SIZE = 40 * 2**20


@pytest.fixture(autouse=True)
def blocks():
    held = []
    yield held
    for address in held:
        touchmem.free(address)


@pytest.mark.limit_allocations("10 MB", native=True)
def test_native_over(blocks):
    block = touchmem.malloc_touch(SIZE)
    blocks.append(block)


@pytest.mark.limit_allocations("60 MB", native=True)
def test_native_under(blocks):
    block = touchmem.malloc_touch(SIZE)
    blocks.append(block)


@pytest.mark.limit_allocations("10 MB")
def test_python_only_does_not_see_malloc(blocks):
    block = touchmem.malloc_touch(SIZE)
    blocks.append(block)
"""


@figures
def test_limit_allocations_native_counts_resident_native_bytes(
        pytester, touchmem_path):
    shutil.copy(touchmem_path, pytester.path)
    pytester.makepyfile(test_native=NATIVE_LIMITS)
    result = pytester.runpytest_subprocess("--memlens", "--junitxml=out.xml")
    result.assert_outcomes(passed=2, failed=1)
    text = failures(result)["test_native_over"]
    match = re.search(
        r"^limit_allocations \(native\): the traced rows held (\d+\.\d\d) "
        r"MiB \(([\d,]+) bytes\) resident at their peak \((\d+\.\d\d) MiB "
        r"allocated\), over the limit of 10 MB \(10,485,760 bytes, 10.00 "
        r"MiB\)$", text, re.M)
    assert match, text
    # Every page of the 40 MiB block was written: all resident.
    assert 40 <= float(match[1]) <= 41, text
    assert 40 <= float(match[3]) <= 41, text
    line = line_of((pytester.path / "test_native.py").read_text(),
                   "block = touchmem.malloc_touch(SIZE)")
    lines = re.search(
        r"Top lines resident at the peak of traced allocations \(Python and "
        r"native; allocated beside\):\n\s+(\d+\.\d\d) MiB  "
        r"test_native.py:(\d+)  \((\d+\.\d\d) MiB allocated, "
        r"(\d+\.\d\d) MiB of it native\)\n\s+(.*)\n", text)
    assert lines, text
    assert float(lines[1]) == float(lines[3]) == float(lines[4]) == 40.0
    assert int(lines[2]) == line
    assert lines[5] == "block = touchmem.malloc_touch(SIZE)"
    explained = re.search(
        r"^RSS rose (\d+\.\d\d) MiB from the test's start to the peak: the "
        r"rows hold (\d+\.\d\d) MiB of it \((\d+)%\), untracked "
        r"(-?\d+\.\d\d) MiB$", text, re.M)
    assert explained, text
    # RSS may also give back a little of what it held at the start.
    assert 39 <= float(explained[1]) <= 48, text
    assert int(explained[3]) >= 85, text

    rows = {test.split("::")[-1]: (traced, outcome)
            for test, _, traced, outcome in report_rows(result)}
    assert rows["test_native_over"] == (pytest.approx(40, abs=1),
                                        "failed [native]")
    assert rows["test_native_under"] == (pytest.approx(40, abs=1),
                                         "passed [native]")
    # Without native=True the block is not traced at all.
    assert rows["test_python_only_does_not_see_malloc"][0] < 1
    found = junit_figures(pytester.path / "out.xml")
    assert 40 * MiB <= found["test_native_under"][
        "memlens_peak_resident"] <= 41 * MiB
    assert "memlens_peak_allocations" not in found["test_native_under"]


def test_marker_added_after_collection_errors_the_test(pytester):
    pytester.makeconftest("""
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.limit_memory("soon"))
""")
    pytester.makepyfile(test_late="def test_late():\n    pass\n")
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_late*",
        "test_late.py::test_late: @pytest.mark.limit_memory('soon'): 'soon' "
        "is not a size*",
    ])


def test_memlens_top_must_be_a_count(pytester):
    result = pytester.runpytest_inprocess("--memlens-top", "many")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*argument --memlens-top: expected a number of tests (0 for all), "
        "not 'many'"])


# --------------------------------------------------------------------------
# Tracing in use elsewhere
# --------------------------------------------------------------------------

CONFLICTS = """
import memlens
import pytest


@pytest.fixture
def traced():
    memlens.start_tracing()
    yield
    memlens.stop_tracing()


@pytest.mark.limit_allocations("10 MB")
def test_allocations_need_the_tracer(traced):
    pass


@pytest.mark.limit_memory("10 MB")
def test_memory_does_without_lines(traced):
    pass


@pytest.mark.limit_allocations("10 MB")
def test_stops_the_tracer():
    memlens.stop_tracing()


@pytest.mark.limit_allocations("1 KB")
def test_over_and_leaves_no_tracing():
    kept = [bytes(1000) for _ in range(100)]
"""


def test_tracing_in_use_elsewhere_is_reported_not_crashed(pytester):
    """In this process: conftest's fixture then checks that the plugin
    left no hook, window or tracing behind."""
    pytester.makepyfile(test_conflicts=CONFLICTS)
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1, failed=3)
    sections = failures(result)
    assert ("memlens could not measure the test: limit_allocations needs "
            "memlens's allocation tracing, and it was already running when "
            "the test started") in sections[
                "test_allocations_need_the_tracer"]
    assert ("memlens could not measure the test: limit_allocations has no "
            "figure: the test stopped memlens's allocation tracing"
            ) in sections["test_stops_the_tracer"]
    text = sections["test_over_and_leaves_no_tracing"]
    assert re.search(r"traced allocations peaked at 0\.\d\d MiB "
                     r"\(\d{3},\d{3} bytes\), over the limit of 1 KB "
                     r"\(1,024 bytes, 0.00 MiB\)", text), text
    assert re.search(r"\d+\.\d KiB  test_conflicts.py:\d+\n\s+kept = ",
                     text), text
    assert not memlens.is_tracing()
