"""Data files of ``memlens run``, in memory_profiler's mprof format.

One record a line, sizes in MiB, times in epoch seconds::

    CMDLINE <the command that ran>
    MODE <flag> ...                   how descendants were followed:
                                      include-children, multiprocess
    MEM <MiB> <time>                  the process (with its descendants
                                      under --include-children)
    CHLD <pid> <MiB> <time>           one living descendant
    FUNC <name> <MiB> <start> <MiB> <end> [<depth>]
                                      one call of a profiled function

mprof's own files (``mprofile_*.dat``) read the same way; they have no
MODE line (mprof skips lines it does not know, so it reads ours). Without
one, MEM lines count the CHLD lines when these share their times (memlens
writes them so), and nobody knows otherwise (mprof stamps them apart). Time never goes
back: a MEM line's time is not before the previous MEM line's, a CHLD
line's not before the previous one of the same process, and a FUNC line
ends no sooner than it starts. A line that does not parse or breaks that
order is an error naming the file and the line number, except a last line
without its newline, which is what a run killed in mid-write leaves: it is
dropped and the data is marked ``truncated``.

Files are read a line at a time: records() yields them, summarise() keeps
only running figures (``memlens report`` and ``peak``: memory that does not
grow with the number of samples), read() keeps every sample (the plot).
"""

import glob
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from memlens._errors import UsageError

#: What ``memlens list``, ``peak``, ``plot`` and ``report`` look for when
#: no file is named: ours first, then mprof's.
PATTERNS = ("memlens_*.dat", "mprofile_*.dat")

_NUMBER_TEXT = r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_NUMBER = re.compile(_NUMBER_TEXT + r"\Z")
_STAMP = re.compile(r"_(\d{14})(?:-(\d+))?\.dat\Z")


class DataFileError(UsageError):
    """A data file that cannot be read: one line, with the line number."""


@dataclass
class Span:
    """One call of a profiled function (FUNC line)."""

    name: str
    start: float
    end: float
    mem_start: float
    mem_end: float
    depth: int = 0


@dataclass
class Series:
    """Samples of one process: epoch times and MiB."""

    times: List[float] = field(default_factory=list)
    mem: List[float] = field(default_factory=list)

    def peak_index(self):
        return max(range(len(self.mem)), key=self.mem.__getitem__)


@dataclass
class RunData:
    """The content of one data file, every sample kept: for the plot."""

    path: str
    cmdline: Optional[str] = None
    memory: Series = field(default_factory=Series)
    spans: List[Span] = field(default_factory=list)
    children: Dict[str, Series] = field(default_factory=dict)
    truncated: bool = False
    mode: Optional[frozenset] = None  # the MODE line's flags, if any

    @property
    def samples(self):
        return len(self.memory.times)

    @property
    def start_time(self):
        """Epoch seconds of the first sample (or span), None if empty."""
        firsts = self.memory.times[:1] + [s.start for s in self.spans[:1]]
        return min(firsts) if firsts else None

    def children_in_memory(self):
        """Whether the MEM lines count the CHLD series: as the MODE line
        says; without one, True when every CHLD line shares the time of a
        MEM line, as memlens writes them, else None (unknown: mprof stamps
        them apart, with or without -C)."""
        if self.mode is not None:
            return "include-children" in self.mode
        if not self.children:
            return None
        times = set(self.memory.times)
        if all(when in times for series in self.children.values()
               for when in series.times):
            return True
        return None

    def own_memory(self):
        """The process's own Series (MEM less its CHLD lines of the same
        time), when the MEM lines count the children and every CHLD line
        shares the time of a MEM line, as in memlens's files; else None
        (MEM is the process alone, or mprof stamped them apart)."""
        if not self.children or not self.children_in_memory():
            return None
        kids = {}
        for series in self.children.values():
            for when, mem in zip(series.times, series.mem):
                kids[when] = kids.get(when, 0.0) + mem
        if not kids.keys() <= set(self.memory.times):
            return None
        own = Series()
        for when, mem in zip(self.memory.times, self.memory.mem):
            own.times.append(when)
            own.mem.append(max(mem - kids.get(when, 0.0), 0.0))
        return own

    def summary(self):
        """The report as data: see summarise()."""
        totals = Totals(self.path)
        totals.cmdline, totals.truncated = self.cmdline, self.truncated
        totals.mode = self.mode
        for when, mem in zip(self.memory.times, self.memory.mem):
            totals.mem(mem, when)
        for span in self.spans:
            totals.span(span)
        for pid, series in self.children.items():
            for when, mem in zip(series.times, series.mem):
                totals.child(pid, mem, when)
        return totals.summary()


class Totals:
    """Running figures of one data file, fed record by record: what
    ``memlens report`` and ``peak`` print. They take the same memory
    whatever the number of samples (the spans are kept: the report lists
    them)."""

    def __init__(self, path):
        self.path = path
        self.cmdline = None
        self.truncated = False
        self.mode = None
        self.samples = 0
        self.first = None       # (time, MiB) of the first MEM line
        self.last = None        # and of the last
        self.peak = None        # (MiB, time), the first of the highest
        self.first_span = None  # start of the first FUNC line
        self.functions = {}     # name: [calls, seconds, [Span, ...]]
        self.children = {}      # pid: [samples, peak, when, first, last]

    def mem(self, mem, when):
        if self.first is None:
            self.first = (when, mem)
        self.last = (when, mem)
        self.samples += 1
        if self.peak is None or mem > self.peak[0]:
            self.peak = (mem, when)

    def child(self, pid, mem, when):
        kid = self.children.get(pid)
        if kid is None:
            self.children[pid] = [1, mem, when, when, when]
            return
        kid[0] += 1
        if mem > kid[1]:
            kid[1], kid[2] = mem, when
        kid[4] = when

    def span(self, span):
        if self.first_span is None:
            self.first_span = span.start
        f = self.functions.setdefault(span.name, [0, 0.0, []])
        f[0] += 1
        f[1] += span.end - span.start
        f[2].append(span)

    def add(self, record):
        """Takes one record of records()."""
        kind = record[0]
        if kind == "MEM":
            self.mem(record[1], record[2])
        elif kind == "CHLD":
            self.child(*record[1:])
        elif kind == "FUNC":
            self.span(record[1])
        elif kind == "CMDLINE":
            self.cmdline = record[1]
        elif kind == "MODE":
            self.mode = record[1]
        else:
            self.truncated = True

    @property
    def start_time(self):
        """Epoch seconds of the first sample (or span), None if empty."""
        firsts = [t for t in (self.first and self.first[0],
                              self.first_span) if t is not None]
        return min(firsts) if firsts else None

    def summary(self):
        t0 = self.start_time or 0.0
        out = {"file": self.path, "command": self.cmdline,
               "samples": self.samples, "truncated": self.truncated,
               "start_time": self.start_time}
        if self.samples:
            out.update(
                duration_s=round(self.last[0] - t0, 6),
                start_mib=self.first[1], peak_mib=self.peak[0],
                peak_time_s=round(self.peak[1] - t0, 6),
                end_mib=self.last[1])
        else:
            out.update(duration_s=0.0, start_mib=None, peak_mib=None,
                       peak_time_s=None, end_mib=None)
        out["functions"] = [
            {"name": name, "calls": calls, "total_s": round(total, 6),
             "spans": [{"start_s": round(s.start - t0, 6),
                        "end_s": round(s.end - t0, 6),
                        "start_mib": s.mem_start, "end_mib": s.mem_end,
                        "depth": s.depth} for s in spans]}
            for name, (calls, total, spans) in self.functions.items()]
        out["children"] = [
            {"id": pid, "samples": n, "peak_mib": peak,
             "peak_time_s": round(when - t0, 6),
             "first_s": round(first - t0, 6),
             "last_s": round(last - t0, 6)}
            for pid, (n, peak, when, first, last) in self.children.items()]
        return out


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

_FORMS = {
    "MEM": "MEM <MiB> <time>",
    "CHLD": "CHLD <pid> <MiB> <time>",
    "FUNC": "FUNC <name> <MiB> <start> <MiB> <end> [<depth>]",
    "MODE": "MODE <flag> ...",
}

# Nearly every line of a file: read without decoding it, one match.
_MEM_LINE = re.compile(
    rb"MEM (%s) (%s)\r*\n?\Z" % ((_NUMBER_TEXT.encode(),) * 2))
_CHLD_LINE = re.compile(
    rb"CHLD ([0-9]+) (%s) (%s)\r*\n?\Z" % ((_NUMBER_TEXT.encode(),) * 2))
_BIGGEST = sys.float_info.max


class _BadLine(Exception):
    pass


def _number(text, negative=False):
    if not _NUMBER.match(text):
        raise _BadLine
    value = float(text)
    if not math.isfinite(value) or (value < 0 and not negative):
        raise _BadLine
    return value


def _parse_line(text):
    """The record of one line; _BadLine or DataFileError text."""
    kind, _, rest = text.partition(" ")
    if kind == "CMDLINE":
        return ("CMDLINE", rest)
    fields = rest.split(" ")
    if kind == "MODE":
        # Flags this reader does not know are kept, not refused: a later
        # memlens may add some.
        if not all(fields):
            raise _BadLine
        return ("MODE", frozenset(fields))
    if kind == "MEM":
        if len(fields) != 2:
            raise _BadLine
        return ("MEM", _number(fields[0]), _number(fields[1]))
    if kind == "CHLD":
        if len(fields) != 3 or not fields[0]:
            raise _BadLine
        return ("CHLD", fields[0], _number(fields[1]), _number(fields[2]))
    if kind == "FUNC":
        if len(fields) not in (5, 6) or not fields[0]:
            raise _BadLine
        depth = 0
        if len(fields) == 6:
            if not (fields[5].isascii() and fields[5].isdigit()):
                raise _BadLine
            depth = int(fields[5])
        mem0, start, mem1, end = (_number(f) for f in fields[1:5])
        if end < start:
            raise DataFileError(f"FUNC {fields[0][:40]!r} ends ({end!r}) "
                                f"before it starts ({start!r})")
        return ("FUNC", Span(fields[0], start, end, mem0, mem1, depth))
    if not text:
        raise DataFileError("empty line")
    raise DataFileError(f"unknown record {kind[:20]!r}: expected "
                        "CMDLINE, MODE, MEM, CHLD or FUNC")


def _decode(data):
    """The text of one line (bytes with or without its newline)."""
    if b"\0" in data:
        raise DataFileError("binary data, not a data file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataFileError("not text (invalid UTF-8)") from None
    if text.endswith("\n"):
        text = text[:-1]
    return text.rstrip("\r")


def records(path):
    """Yields the records of data file `path` one by one, in the file's
    order, reading it a line at a time:

        ("CMDLINE", text)
        ("MODE", frozenset of flags)
        ("MEM", MiB, time)
        ("CHLD", pid, MiB, time)      pid as written (a string)
        ("FUNC", Span)
        ("CUT",)                      last, when the final line was cut

    DataFileError naming the file (and the line) when it cannot be read:
    a line that does not parse, a MEM time before the previous MEM line's,
    a CHLD time before the previous one of the same process, a FUNC
    ending before it starts."""
    if os.path.isdir(path):
        raise DataFileError(f"{path}: is a directory, not a data file")
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read: "
                            f"{exc.strerror or exc}") from None
    with f:
        try:
            yield from _records(path, f)
        except OSError as exc:
            raise DataFileError(f"{path}: cannot read: "
                                f"{exc.strerror or exc}") from None


def _records(path, f):
    mem_line, chld_line = _MEM_LINE.match, _CHLD_LINE.match
    last_mem = 0.0
    last_child = {}
    lineno = 0
    for data in f:
        lineno += 1
        # The lines memlens writes, when in order, take the short way.
        found = mem_line(data)
        if found is not None:
            mem, when = float(found[1]), float(found[2])
            if 0.0 <= mem <= _BIGGEST and last_mem <= when <= _BIGGEST:
                last_mem = when
                yield ("MEM", mem, when)
                continue
        found = chld_line(data)
        if found is not None:
            pid = found[1].decode("ascii")
            mem, when = float(found[2]), float(found[3])
            if (0.0 <= mem <= _BIGGEST
                    and last_child.get(pid, 0.0) <= when <= _BIGGEST):
                last_child[pid] = when
                yield ("CHLD", pid, mem, when)
                continue
        try:
            text = _decode(data)
            try:
                record = _parse_line(text)
            except _BadLine:
                kind = text.partition(" ")[0]
                raise DataFileError(f"bad {kind} line {text[:60]!r}: "
                                    f"expected '{_FORMS[kind]}'") from None
            kind = record[0]
            if kind == "MEM":
                _in_order("MEM", record[2], last_mem)
                last_mem = record[2]
            elif kind == "CHLD":
                pid, when = record[1], record[3]
                _in_order(f"CHLD {pid[:20]}", when,
                          last_child.get(pid, 0.0))
                last_child[pid] = when
        except DataFileError as exc:
            if lineno > 1 and not data.endswith(b"\n"):
                # A write cut short by a kill: the data before it stands.
                yield ("CUT",)
                return
            raise DataFileError(f"{path}:{lineno}: {exc}") from None
        yield record


def _in_order(what, when, before):
    if when < before:
        raise DataFileError(f"time goes backwards: {what} at {when!r} "
                            f"after {before!r}")


def summarise(path):
    """The report of data file `path` as data (MiB, seconds since the
    first sample), read in one pass in memory that does not grow with the
    number of samples; DataFileError as records()."""
    totals = Totals(path)
    add = totals.add
    for record in records(path):
        add(record)
    return totals.summary()


def read(path):
    """The RunData of data file `path`, every sample kept; DataFileError
    as records()."""
    run = RunData(path)
    times, mem = run.memory.times, run.memory.mem
    for record in records(path):
        kind = record[0]
        if kind == "MEM":
            mem.append(record[1])
            times.append(record[2])
        elif kind == "CHLD":
            series = run.children.setdefault(record[1], Series())
            series.mem.append(record[2])
            series.times.append(record[3])
        elif kind == "FUNC":
            run.spans.append(record[1])
        elif kind == "CMDLINE":
            run.cmdline = record[1]
        elif kind == "MODE":
            run.mode = record[1]
        else:
            run.truncated = True
    return run


def lines(run):
    """The text lines of RunData `run`, as read() would read them back:
    CMDLINE, its MEM samples, then its FUNC spans."""
    from memlens._report import MIB, mib

    if run.cmdline is not None:
        yield f"CMDLINE {run.cmdline}\n"
    for mem, when in zip(run.memory.mem, run.memory.times):
        yield f"MEM {mib(mem * MIB, 6)} {when:.6f}\n"
    for s in run.spans:
        yield (f"FUNC {s.name} {mib(s.mem_start * MIB, 6)} {s.start:.6f} "
               f"{mib(s.mem_end * MIB, 6)} {s.end:.6f} {s.depth}\n")


# --------------------------------------------------------------------------
# Finding files
# --------------------------------------------------------------------------

def _order(path):
    """Sort key: the start time in the name, then the -N of a second run
    started in the same second, then the name."""
    m = _STAMP.search(os.path.basename(path))
    if m is None:
        return ("", 0, path)
    return (m.group(1), int(m.group(2) or 1), path)


def data_files():
    """The data files in the current directory, oldest first."""
    found = {p for pattern in PATTERNS for p in glob.glob(pattern)}
    return sorted((p for p in found if os.path.isfile(p)), key=_order)


def select(names, newest=True):
    """Paths for the command-line arguments `names`: a path, or an index
    into the list of data files (0 the oldest, -1 the newest), as with
    mprof. No names: the newest file (or all, if not `newest`)."""
    files = data_files()
    if not names:
        if not files:
            raise DataFileError("no data file here (memlens_*.dat or "
                                "mprofile_*.dat); run `memlens run` first "
                                "or name one")
        return [files[-1]] if newest else files
    chosen = []
    for name in names:
        if not os.path.exists(name):
            try:
                name = files[int(name)]
            except ValueError:
                raise DataFileError(f"{name}: no such data file") from None
            except IndexError:
                raise DataFileError(
                    f"{name}: no data file with that index (there are "
                    f"{len(files)})") from None
        if name not in chosen:
            chosen.append(name)
    return chosen


def started(path):
    """'HH:MM:SS DD/MM/YYYY' from the name of a data file, else from its
    modification time."""
    m = _STAMP.search(os.path.basename(path))
    if m is not None:
        s = m.group(1)
        return f"{s[8:10]}:{s[10:12]}:{s[12:14]} {s[6:8]}/{s[4:6]}/{s[:4]}"
    import time

    return time.strftime("%H:%M:%S %d/%m/%Y",
                         time.localtime(os.path.getmtime(path)))
