"""pytest plugin (SPEC 8): memory limits that fail tests, and a report of
the tests with the highest peaks.

Registered through the ``pytest11`` entry point. Importing it loads no C
code and installs nothing: the core is imported the first time a test that
carries a limit marker runs, or when ``--memlens`` asks for the report.

Only the call phase of a test is measured (the test function itself), not
the setup or teardown of its fixtures: a shared fixture is set up by
whichever test needs it first, and counting it would make a test's figure
depend on the order of the tests and, under pytest-xdist, on the worker.
"""

import argparse
import gc
import linecache
import os
import re
from fractions import Fraction
from typing import Callable, NamedTuple, Optional, Tuple, Union

import pytest

from memlens._report import KIB, MIB, mib

#: The units a size may be written in, as pytest-memray reads them: KB,
#: MB, GB, TB and PB are powers of 1024, as are KiB to PiB. Any case:
#: "1mb" is 1 MiB.
UNITS = {
    "B": 1,
    "KB": 2**10,
    "MB": 2**20,
    "GB": 2**30,
    "TB": 2**40,
    "PB": 2**50,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
    "PiB": 2**50,
}

_UNITS_ANY_CASE = {unit.lower(): factor for unit, factor in UNITS.items()}

#: limit_memory traces allocations sampled at one mark per this many bytes
#: on average, to name the lines in its failure message.
LINES_SAMPLE_BYTES = 256 * 1024

#: How many lines a failure message shows.
LINES_SHOWN = 5

#: How many tests the --memlens report shows unless --memlens-top says.
DEFAULT_TOP = 10

MARKERS = ("limit_memory", "limit_allocations", "limit_leaks")

#: The keyword that may give a marker's size instead of its one argument
#: (pytest-memray's name for it).
SIZE_KEYWORDS = {"limit_memory": "limit", "limit_allocations": None,
                 "limit_leaks": "location_limit"}

#: The keywords each marker takes (beside its one size).
MARKER_KEYWORDS = {"limit_memory": ("current_thread_only",),
                   "limit_allocations": ("native",),
                   "limit_leaks": ("filter_fn", "current_thread_only")}

#: What each marker's error messages show as its use.
_MARKER_USE = {
    "limit_memory": ('one size (or limit=size) and current_thread_only='
                     'False, such as @pytest.mark.limit_memory("24 MB")'),
    "limit_allocations": ('one size and native=True or False, such as '
                          '@pytest.mark.limit_allocations("24 MB", '
                          'native=True)'),
    "limit_leaks": ('one size (or location_limit=size), filter_fn= and '
                    'current_thread_only=False, such as '
                    '@pytest.mark.limit_leaks("1 MB", filter_fn=None)'),
}

#: limit_leaks traces this many frames per allocation: its call stacks
#: are as deep as pytest-memray's, so that filter functions which look
#: for a caller far up find it (memlens's maximum).
LEAK_FRAMES = 100

#: How many leaking call stacks, and how many frames of each, a
#: limit_leaks failure shows.
LEAKS_SHOWN = 10
LEAK_FRAMES_SHOWN = 5

_UNIT_LIST = ("B, KB, MB, GB, TB, PB (powers of 1024, any case; also "
              "written KiB, MiB, GiB, TiB, PiB)")
_SIZE = re.compile(
    r"\s*(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[A-Za-z]*)\s*\Z")

# user_properties names: they carry the figures from the process that ran
# the test (an xdist worker) to the one that prints the report.
_PROP_RSS = "memlens_peak_rss"
_PROP_TRACED = "memlens_peak_allocations"
_PROP_RESIDENT = "memlens_peak_resident"

_STATE = pytest.StashKey()
_LIMITS = pytest.StashKey()


def parse_size(size):
    """Bytes in `size`, a marker's limit: an int (bytes) or a string such
    as "24 MB", "1.5 GiB" or "512kb". As pytest-memray reads it, KB, MB,
    GB, TB and PB are powers of 1024, in any case ("1mb" is 1,048,576
    bytes); KiB, MiB, GiB, TiB and PiB are the same units; B, or no unit,
    is bytes. Fractions of a byte are dropped.

    TypeError for anything but an int or a string, ValueError for a string
    that is not a size or a size below one byte.
    """
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise TypeError(f"a size is an int (bytes) or a string such as "
                        f"'24 MB', not {type(size).__name__}")
    if isinstance(size, int):
        nbytes = size
    else:
        match = _SIZE.match(size)
        if match is None:
            raise ValueError(f"{size!r} is not a size: write a number and a "
                             f"unit, such as '24 MB' (units: {_UNIT_LIST})")
        unit = match["unit"] or "B"
        factor = _UNITS_ANY_CASE.get(unit.lower())
        if factor is None:
            hint = ""
            if unit.upper() in ("K", "M", "G", "T", "P"):
                hint = f" (did you mean {unit.upper() + 'B'!r}?)"
            raise ValueError(f"{size!r}: unknown unit {unit!r}{hint}; the "
                             f"units are {_UNIT_LIST}")
        # Exact: Decimal would round to its context's 28 digits.
        nbytes = int(Fraction(match["number"]) * factor)
    if nbytes < 0:
        raise ValueError(f"{size!r}: a size cannot be negative")
    if nbytes < 1:
        raise ValueError(f"{size!r}: a limit must be at least 1 byte")
    return nbytes


class StackFrame(NamedTuple):
    """One frame of a call stack that leaked, as limit_leaks' filter_fn
    sees it (the attributes of pytest-memray's StackFrame)."""

    function: str
    filename: str
    lineno: int


class Stack(NamedTuple):
    """The call stack of a leak, given to limit_leaks' filter_fn:
    ``frames``, StackFrames most recent first (pytest-memray's Stack;
    Python frames only)."""

    frames: Tuple[StackFrame, ...]


class Limit(NamedTuple):
    """One marker's limit: bytes, the size as written, whether it counts
    native memory too (limit_allocations(..., native=True)), and
    limit_leaks' filter_fn."""

    nbytes: int
    written: Union[int, str]
    native: bool = False
    filter_fn: Optional[Callable[[Stack], object]] = None


def _marker_text(marker):
    args = [repr(a) for a in marker.args]
    args += [f"{k}={v!r}" for k, v in marker.kwargs.items()]
    return f"@pytest.mark.{marker.name}({', '.join(args)})"


def _marker_limit(name, marker):
    """The Limit `marker` asks for; TypeError or ValueError saying what is
    wrong with it."""
    keywords = dict(marker.kwargs)
    sizes = list(marker.args)
    size_keyword = SIZE_KEYWORDS[name]
    if size_keyword in keywords:
        sizes.append(keywords.pop(size_keyword))
    unknown = [key for key in keywords if key not in MARKER_KEYWORDS[name]]
    if unknown:
        raise ValueError(f"unknown keyword {unknown[0]!r}: {name} takes "
                         f"{_MARKER_USE[name]}")
    if len(sizes) != 1:
        example = "1 MB" if name == "limit_leaks" else "24 MB"
        raise ValueError(f"takes one size, such as "
                         f"@pytest.mark.{name}(\"{example}\")")
    native = keywords.get("native", False)
    if not isinstance(native, bool):
        raise TypeError(f"native must be True or False, not {native!r}")
    one_thread = keywords.get("current_thread_only", False)
    if not isinstance(one_thread, bool):
        raise TypeError(f"current_thread_only must be True or False, not "
                        f"{one_thread!r}")
    if one_thread:
        raise ValueError("current_thread_only=True is not supported: "
                         "memlens counts the memory of every thread")
    filter_fn = keywords.get("filter_fn")
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn must be a function that takes a Stack "
                        f"and returns False to ignore its leak, or None, "
                        f"not {filter_fn!r}")
    return Limit(parse_size(sizes[0]), sizes[0], native, filter_fn)


def _item_limits(item):
    """{marker name: Limit} from the closest marker of each name on
    `item`. Every marker found is checked; ValueError with the test, the
    marker and the problem for a malformed one, or for limit_leaks beside
    another limit."""
    limits = {}
    for name in MARKERS:
        for marker in item.iter_markers(name):
            try:
                limit = _marker_limit(name, marker)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{item.nodeid}: {_marker_text(marker)}: "
                                 f"{exc}") from None
            limits.setdefault(name, limit)
    others = [name for name in limits if name != "limit_leaks"]
    if "limit_leaks" in limits and others:
        raise ValueError(
            f"{item.nodeid}: limit_leaks and {others[0]} on one test: "
            f"limit_leaks traces the test its own way (every frame, native "
            f"memory too); put the other limit on a test of its own")
    return limits


def _top_type(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a number of tests (0 for all), not {text!r}")
    return value


# --------------------------------------------------------------------------
# Configuration and collection
# --------------------------------------------------------------------------

def pytest_addoption(parser):
    group = parser.getgroup("memlens", "memlens memory measurement")
    group.addoption(
        "--memlens", action="store_true", default=False,
        help="measure the peak RSS of every test (call phase) and print "
             "the tests with the highest peaks at the end")
    group.addoption(
        "--memlens-top", type=_top_type, default=None, metavar="N",
        help=f"how many tests the --memlens report shows (default "
             f"{DEFAULT_TOP}, 0 for all); implies --memlens")


class _State:
    """What one pytest run (one config) asked for and measured."""

    def __init__(self, report, top):
        self.report = report
        self.top = top


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "limit_memory(size): fail the test when its peak RSS rises more "
        "than size (\"24 MB\", \"1.5 GiB\", bytes as an int) above its "
        "start; measured by memlens over the test function")
    config.addinivalue_line(
        "markers",
        "limit_allocations(size, native=False): fail the test when its "
        "traced Python and NumPy allocations peak above size; exact and "
        "deterministic (memlens allocation tracing over the test "
        "function). native=True traces every shared library's malloc "
        "and mmap too and limits the resident bytes at the traced peak")
    config.addinivalue_line(
        "markers",
        "limit_leaks(size, filter_fn=None): fail the test when a call "
        "stack still holds more than size at the test's end of the Python "
        "and native memory it allocated during the test; filter_fn(stack) "
        "returns False to ignore a stack (pytest-memray's marker, traced "
        "exactly by memlens)")
    top = config.getoption("memlens_top")
    report = bool(config.getoption("memlens")) or top is not None
    config.stash[_STATE] = _State(report, DEFAULT_TOP if top is None
                                  else top)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A malformed limit marker makes its collector (the module or class)
    a collection error that names the test, the marker and the problem."""
    outcome = yield
    report = outcome.get_result()
    if not report.passed:
        return
    problems = []
    for node in report.result:
        if isinstance(node, pytest.Item):
            try:
                _item_limits(node)
            except ValueError as exc:
                problems.append(str(exc))
    if problems:
        report.outcome = "failed"
        report.longrepr = "\n".join(problems)
        report.result = []


# --------------------------------------------------------------------------
# Measuring a test
# --------------------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Markers added after collection (a conftest's modifyitems) are checked
    # here: a malformed one errors the test before it runs.
    try:
        item.stash[_LIMITS] = _item_limits(item)
    except ValueError as exc:
        pytest.fail(str(exc), pytrace=False)


class _Meter:
    """The measurements of one test's call: an exact RSS peak window, and
    allocation tracing when a limit needs it."""

    def __init__(self, limits):
        self.limits = limits
        self.window = None
        self.tracing = False
        # Exact tracing gives limit_allocations and limit_leaks their
        # figures; limit_memory alone only needs the lines, which sampling
        # gives cheaply. limit_leaks is never beside another limit.
        allocations = limits.get("limit_allocations")
        self.exact = ("limit_leaks" if "limit_leaks" in limits
                      else "limit_allocations")
        if allocations is not None or "limit_leaks" in limits:
            self.sample_bytes = 0
        elif "limit_memory" in limits:
            self.sample_bytes = LINES_SAMPLE_BYTES
        else:
            self.sample_bytes = None
        self.native = allocations is not None and allocations.native
        # limit_leaks: what the test still held at its end, by call stack
        # (frames, size, count, native size), and those over the limit
        # that filter_fn kept, largest first.
        self.live = None
        self.leaks = None
        self.lines_note = None
        self.peak_rss = None
        # limit_allocations' figure: the traced peak of allocated bytes,
        # or with native=True the resident bytes of the peak snapshot.
        self.traced_peak = None
        self.allocated_peak = None
        self.snapshot = None

    def start(self):
        from memlens import _readings, _tracing

        # Made before tracing starts, so that it is not one of the lines.
        window = _readings.peak()
        if self.sample_bytes is not None:
            if _tracing.is_tracing():
                if self.sample_bytes == 0:
                    raise RuntimeError(
                        f"{self.exact} needs memlens's allocation "
                        f"tracing, and it was already running when the "
                        f"test started (started by a fixture or a plugin)")
                self.lines_note = ("no lines: memlens's allocation tracing "
                                   "was already in use")
            else:
                if self.sample_bytes == 0:
                    # The collector's schedule inside the test then does
                    # not depend on what ran before it.
                    gc.collect()
                if "limit_leaks" in self.limits:
                    _tracing.start_tracing(LEAK_FRAMES, 0, native=True)
                elif self.native:
                    _tracing.start_tracing(1, self.sample_bytes,
                                           native=True)
                else:
                    _tracing.start_tracing(1, self.sample_bytes)
                self.tracing = True
        self.window = window
        window.__enter__()
        if self.tracing:
            _tracing.reset_peak()

    def stop(self, passed=True):
        """Close what start() opened and keep the figures; a limit's
        overrun keeps the snapshot of the traced peak too. limit_leaks
        looks only at a test that `passed`: the traceback of a failure
        holds the test's locals."""
        from memlens import _tracing

        try:
            if self.window is not None and self.window.open:
                self.window.__exit__(None, None, None)
                self.peak_rss = self.window.peak_delta
        finally:
            if self.tracing:
                self.tracing = False
                try:
                    self._read_tracing(_tracing, passed)
                finally:
                    _tracing.stop_tracing()
        if self.live is not None:
            self._find_leaks()

    def _read_tracing(self, tracing, passed):
        if not tracing.is_tracing():
            self.lines_note = "no lines: the test stopped memlens's tracing"
            if self.sample_bytes == 0:
                raise RuntimeError(
                    f"{self.exact} has no figure: the test stopped "
                    f"memlens's allocation tracing")
            return
        if "limit_leaks" in self.limits:
            if passed:
                # Cycles the test left are garbage, not leaks; a full
                # collection also empties the interpreter's free lists.
                gc.collect()
                self.live = tracing._live_stacks()
            return
        peak = tracing.traced_memory()[1]
        if self.native:
            # Resident pages are read when the snapshot is taken: the
            # figure needs it whether or not the test is over its limit.
            self.snapshot = tracing.peak_snapshot()
            self.allocated_peak = peak
            self.traced_peak = self.snapshot.resident
        else:
            if self.sample_bytes == 0:
                self.traced_peak = peak
            if self.overruns():
                self.snapshot = tracing.peak_snapshot()

    def _find_leaks(self):
        """The call stacks over limit_leaks' limit that its filter_fn keeps
        (called with tracing stopped: its own allocations are not the
        test's)."""
        limit = self.limits["limit_leaks"]
        stacks = {}
        for frames, size, count, native in self.live:
            figures = stacks.setdefault(frames, [0, 0, 0])
            figures[0] += size
            figures[1] += count
            figures[2] += size if native else 0
        self.live = None
        leaks = []
        for frames, (size, count, native_size) in stacks.items():
            if size <= limit.nbytes:
                continue
            stack = Stack(tuple(StackFrame(function, filename, lineno)
                                for filename, lineno, function in frames)
                          or (StackFrame("???", "???", 0),))
            if limit.filter_fn is not None:
                try:
                    keep = limit.filter_fn(stack)
                except Exception as exc:
                    raise RuntimeError(
                        f"limit_leaks' filter_fn raised "
                        f"{type(exc).__name__}: {exc}") from exc
                if not keep:
                    continue
            leaks.append((stack, size, count, native_size))
        leaks.sort(key=lambda leak: (-leak[1], leak[0]))
        self.leaks = leaks

    def overruns(self):
        """One sentence per limit exceeded."""
        out = []
        limit = self.limits.get("limit_leaks")
        if limit is not None and self.leaks:
            stacks = (f"{len(self.leaks)} call stacks each" if
                      len(self.leaks) > 1 else "a call stack")
            out.append(
                f"limit_leaks: {stacks} still held more than the limit of "
                f"{_limit_text(limit)} at the test's end, of the memory "
                f"allocated during the test (the limit is per call stack)")
        limit = self.limits.get("limit_memory")
        if limit is not None and self.peak_rss is not None \
                and self.peak_rss > limit[0]:
            source = self.window.source
            how = "" if source == "kernel" else f" (source: {source})"
            out.append(
                f"limit_memory: the peak RSS rose {mib(self.peak_rss)} MiB "
                f"({self.peak_rss:,} bytes) above the test's start{how}, "
                f"over the limit of {_limit_text(limit)}")
        limit = self.limits.get("limit_allocations")
        if limit is not None and self.traced_peak is not None \
                and self.traced_peak > limit[0]:
            if self.native:
                out.append(
                    f"limit_allocations (native): the traced rows held "
                    f"{mib(self.traced_peak)} MiB ({self.traced_peak:,} "
                    f"bytes) resident at their peak ("
                    f"{mib(self.allocated_peak)} MiB allocated), over the "
                    f"limit of {_limit_text(limit)}")
            else:
                out.append(
                    f"limit_allocations: traced allocations peaked at "
                    f"{mib(self.traced_peak)} MiB ({self.traced_peak:,} "
                    f"bytes), over the limit of {_limit_text(limit)}")
        return out

    def message(self, rootpath, test_code=None):
        """The failure text: the overruns, then the top lines (the leaking
        stacks, each down from `test_code`, the test function's code)."""
        out = self.overruns()
        if self.leaks:
            out.append("Leaking call stacks, largest first (Python and "
                       "native memory allocated during the test and alive "
                       "at its end):")
            out.extend(_format_leaks(self.leaks, rootpath, test_code))
        elif self.snapshot is not None and self.native:
            out.append("Top lines resident at the peak of traced "
                       "allocations (Python and native; allocated "
                       "beside):")
            out.extend(_format_lines(self.snapshot, rootpath))
            out.extend(_reconciliation(self.snapshot))
        elif self.snapshot is not None:
            if self.sample_bytes == 0:
                out.append("Top lines alive at the peak of traced "
                           "allocations:")
            else:
                out.append(
                    f"Top lines alive at the peak of traced allocations "
                    f"(sampled, one mark per {self.sample_bytes // 1024} "
                    f"KiB: estimates; RSS also holds memory the tracer does "
                    f"not see):")
            out.extend(_format_lines(self.snapshot, rootpath))
        elif self.lines_note:
            out.append(self.lines_note)
        return "\n".join(out)


def _limit_text(limit):
    nbytes, written = limit.nbytes, limit.written
    if isinstance(written, int):
        return f"{nbytes:,} bytes ({mib(nbytes)} MiB)"
    return f"{written.strip()} ({nbytes:,} bytes, {mib(nbytes)} MiB)"


def _where(filename, rootpath):
    """`filename` relative to the rootdir when it is under it."""
    if os.path.isabs(filename):
        relative = os.path.relpath(filename, rootpath)
        if not relative.startswith(os.pardir):
            return relative
    return filename


def _format_leaks(leaks, rootpath, test_code):
    """Up to LEAKS_SHOWN leaking stacks: the bytes, the line that
    allocated (with its source), and the calls that led there from the
    test function, at most LEAK_FRAMES_SHOWN frames."""
    out = []
    for stack, size, count, native_size in leaks[:LEAKS_SHOWN]:
        blocks = "block" if count == 1 else "blocks"
        native = f", {native_size:,} native" if native_size else ""
        first = True
        for frame in stack.frames[:LEAK_FRAMES_SHOWN]:
            where = (f"{_where(frame.filename, rootpath)}:{frame.lineno} in "
                     f"{frame.function}")
            if first:
                out.append(f"  {size / MIB:>10.2f} MiB  {where}  ({size:,} "
                           f"bytes in {count:,} {blocks}{native})")
                line = linecache.getline(frame.filename,
                                         frame.lineno).strip()
                if line:
                    out.append(f"  {'':>14}  {line}")
                first = False
            else:
                out.append(f"  {'':>14}  called from {where}")
            if test_code is not None and (
                    frame.filename, frame.function) == test_code:
                break
    rest = leaks[LEAKS_SHOWN:]
    if rest:
        noun = "stack" if len(rest) == 1 else "stacks"
        out.append(f"  {sum(leak[1] for leak in rest) / MIB:>10.2f} MiB  "
                   f"{len(rest)} other call {noun} over the limit")
    return out


def _format_lines(snapshot, rootpath):
    """The largest lines of `snapshot`, at most LINES_SHOWN, leaving out
    those under 1% of its total (pytest's own few bytes, mostly). Those of
    a native snapshot are by resident bytes, their allocated bytes (and
    the native part of them) beside."""
    native = getattr(snapshot, "native", False)
    if native:
        stats = snapshot.top(limit=None, by="resident")
        figure = (lambda s: s.resident)
    else:
        stats = snapshot.top(limit=None)
        figure = (lambda s: s.size)
    total = sum(figure(s) for s in stats)
    if total <= 0:
        return ["  (no traced allocation was alive at the peak)"]
    if total >= MIB:
        unit, scale, digits = "MiB", MIB, 2
    else:
        unit, scale, digits = "KiB", KIB, 1
    shown = [s for s in stats[:LINES_SHOWN] if figure(s) * 100 >= total]
    shown = shown or stats[:1]
    out = []
    for stat in shown:
        where = _where(stat.filename, rootpath)
        beside = ""
        if native:
            beside = (f"  ({stat.size / scale:.{digits}f} {unit} "
                      f"allocated, {stat.native_size / scale:.{digits}f} "
                      f"{unit} of it native)")
        out.append(f"  {figure(stat) / scale:>10.{digits}f} {unit}  "
                   f"{where}:{stat.lineno}{beside}")
        if stat.line:
            out.append(f"  {'':>14}  {stat.line}")
    rest = stats[len(shown):]
    if rest:
        noun = "line" if len(rest) == 1 else "lines"
        out.append(f"  {sum(figure(s) for s in rest) / scale:>10.{digits}f}"
                   f" {unit}  {len(rest)} other {noun}")
    return out


def _reconciliation(snapshot):
    """How much of the RSS rise a native snapshot's rows explain: one
    line, or none when RSS was not read."""
    rise = snapshot.rss_rise
    if rise is None:
        return []
    if snapshot.explained is None:
        share = ""
    else:
        share = f" ({snapshot.explained:.0%})"
    return [f"RSS rose {mib(rise)} MiB from the test's start to the peak: "
            f"the rows hold {mib(snapshot.resident)} MiB of it{share}, "
            f"untracked {mib(snapshot.untracked)} MiB"]


def _test_code(item):
    """(filename, function name) of the test function's code, or None."""
    code = getattr(getattr(item, "obj", None), "__code__", None)
    if code is None:
        return None
    return code.co_filename, code.co_name


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item):
    """Measures the call: trylast makes this the innermost wrapper, so as
    little as possible of pytest's own work falls inside."""
    state = item.config.stash[_STATE]
    limits = item.stash.get(_LIMITS, None)
    if limits is None:
        limits = _item_limits(item)
    if not limits and not state.report:
        yield
        return
    meter = _Meter(limits)
    problem = None
    try:
        meter.start()
    except Exception as exc:
        problem = exc
    outcome = yield
    try:
        meter.stop(passed=outcome.excinfo is None)
    except Exception as exc:
        problem = problem or exc
    if meter.peak_rss is not None:
        item.user_properties.append((_PROP_RSS, meter.peak_rss))
    if meter.traced_peak is not None:
        name = _PROP_RESIDENT if meter.native else _PROP_TRACED
        item.user_properties.append((name, meter.traced_peak))
    message = None
    if problem is not None:
        message = f"memlens could not measure the test: {problem}"
    elif meter.overruns():
        message = meter.message(item.config.rootpath, _test_code(item))
    if message is None:
        return
    if outcome.excinfo is None:
        outcome.force_exception(pytest.fail.Exception(message,
                                                      pytrace=False))
    else:
        # The test's own failure (or skip, or xfail) stands; the overrun is
        # shown with it.
        item.add_report_section("call", "memlens", message)


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------

@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    state = config.stash.get(_STATE, None)
    if state is None or not state.report or hasattr(config, "workerinput"):
        return
    # The figures ride on the call reports (user_properties), so that
    # those coming back from pytest-xdist workers carry them too.
    rows = []
    for category, reports in terminalreporter.stats.items():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            props = dict(getattr(report, "user_properties", ()))
            if _PROP_RSS in props:
                native = _PROP_RESIDENT in props
                traced = props[_PROP_RESIDENT] if native else props.get(
                    _PROP_TRACED)
                rows.append((props[_PROP_RSS], traced, report.nodeid,
                             category, native))
    rows.sort(key=lambda row: (-row[0], row[2]))
    shown = rows if state.top == 0 else rows[:state.top]
    tr = terminalreporter
    if not rows:
        tr.write_sep("=", "memlens: no test was measured")
        return
    tests = f"{len(rows)} test" + ("s" if len(rows) != 1 else "")
    if len(shown) == len(rows):
        title = f"memlens: {tests} measured, highest peak first"
    else:
        title = (f"memlens: the {len(shown)} highest peaks of {tests} "
                 f"measured")
    tr.write_sep("=", title)
    tr.write_line(f"{'peak RSS':>14}  {'allocations':>14}  test")
    for rss, traced, nodeid, category, native in shown:
        traced_text = "-" if traced is None else f"{mib(traced)} MiB"
        note = "" if category == "passed" else f" ({category})"
        if native:
            note += " [native]"
        tr.write_line(f"{mib(rss) + ' MiB':>14}  {traced_text:>14}  "
                      f"{nodeid}{note}")
    tr.write_line("peak RSS: how far RSS rose above the test's start; "
                  "allocations: the peak of traced allocations "
                  "(limit_allocations tests; [native]: native=True, the "
                  "bytes resident at that peak). The test function only, "
                  "not its fixtures.")
