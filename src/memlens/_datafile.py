"""Data files of ``memlens run``, in memory_profiler's mprof format.

One record a line, sizes in MiB, times in epoch seconds::

    CMDLINE <the command that ran>
    MEM <MiB> <time>                  the process (with its descendants
                                      under --include-children)
    CHLD <pid> <MiB> <time>           one living descendant
    FUNC <name> <MiB> <start> <MiB> <end> [<depth>]
                                      one call of a profiled function

mprof's own files (``mprofile_*.dat``) read the same way. A line that does
not parse is an error naming the file and the line number, except a last
line without its newline, which is what a run killed in mid-write leaves:
it is dropped and the data is marked ``truncated``.
"""

import glob
import math
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from memlens._errors import UsageError

#: What ``memlens list``, ``peak``, ``plot`` and ``report`` look for when
#: no file is named: ours first, then mprof's.
PATTERNS = ("memlens_*.dat", "mprofile_*.dat")

_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\Z")
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
    """The content of one data file."""

    path: str
    cmdline: Optional[str] = None
    memory: Series = field(default_factory=Series)
    spans: List[Span] = field(default_factory=list)
    children: Dict[str, Series] = field(default_factory=dict)
    truncated: bool = False

    @property
    def samples(self):
        return len(self.memory.times)

    @property
    def start_time(self):
        """Epoch seconds of the first sample (or span), None if empty."""
        firsts = self.memory.times[:1] + [s.start for s in self.spans[:1]]
        return min(firsts) if firsts else None

    def own_memory(self):
        """The process's own Series (MEM less its CHLD lines of the same
        time), when every CHLD line shares the time of a MEM line, as in
        memlens's files; else None (mprof stamps them apart)."""
        if not self.children:
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
        """The report as data (MiB, seconds since the first sample)."""
        mem = self.memory
        t0 = self.start_time or 0.0
        out = {"file": self.path, "command": self.cmdline,
               "samples": self.samples, "truncated": self.truncated,
               "start_time": self.start_time}
        if mem.times:
            top = mem.peak_index()
            out.update(
                duration_s=round(mem.times[-1] - t0, 6),
                start_mib=mem.mem[0], peak_mib=mem.mem[top],
                peak_time_s=round(mem.times[top] - t0, 6),
                end_mib=mem.mem[-1])
        else:
            out.update(duration_s=0.0, start_mib=None, peak_mib=None,
                       peak_time_s=None, end_mib=None)
        functions = {}
        for s in self.spans:
            f = functions.setdefault(s.name, {"name": s.name, "calls": 0,
                                              "total_s": 0.0, "spans": []})
            f["calls"] += 1
            f["total_s"] += s.end - s.start
            f["spans"].append({
                "start_s": round(s.start - t0, 6),
                "end_s": round(s.end - t0, 6),
                "start_mib": s.mem_start, "end_mib": s.mem_end,
                "depth": s.depth})
        for f in functions.values():
            f["total_s"] = round(f["total_s"], 6)
        out["functions"] = list(functions.values())
        out["children"] = []
        for pid, series in self.children.items():
            top = series.peak_index()
            out["children"].append({
                "id": pid, "samples": len(series.times),
                "peak_mib": series.mem[top],
                "peak_time_s": round(series.times[top] - t0, 6),
                "first_s": round(series.times[0] - t0, 6),
                "last_s": round(series.times[-1] - t0, 6)})
        return out


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

_FORMS = {
    "MEM": "MEM <MiB> <time>",
    "CHLD": "CHLD <pid> <MiB> <time>",
    "FUNC": "FUNC <name> <MiB> <start> <MiB> <end> [<depth>]",
}


class _BadLine(Exception):
    pass


def _number(text, negative=False):
    if not _NUMBER.match(text):
        raise _BadLine
    value = float(text)
    if not math.isfinite(value) or (value < 0 and not negative):
        raise _BadLine
    return value


def _parse_line(run, text):
    """Adds one line's record to `run`; _BadLine or DataFileError text."""
    kind, _, rest = text.partition(" ")
    if kind == "CMDLINE":
        run.cmdline = rest
        return
    fields = rest.split(" ")
    if kind == "MEM":
        if len(fields) != 2:
            raise _BadLine
        run.memory.mem.append(_number(fields[0]))
        run.memory.times.append(_number(fields[1]))
    elif kind == "CHLD":
        if len(fields) != 3 or not fields[0]:
            raise _BadLine
        series = run.children.setdefault(fields[0], Series())
        mem, when = _number(fields[1]), _number(fields[2])
        series.mem.append(mem)
        series.times.append(when)
    elif kind == "FUNC":
        if len(fields) not in (5, 6) or not fields[0]:
            raise _BadLine
        depth = 0
        if len(fields) == 6:
            if not fields[5].isdigit():
                raise _BadLine
            depth = int(fields[5])
        mem0, start, mem1, end = (_number(f) for f in fields[1:5])
        run.spans.append(Span(fields[0], start, end, mem0, mem1, depth))
    elif not text:
        raise DataFileError("empty line")
    else:
        raise DataFileError(f"unknown record {kind[:20]!r}: expected "
                            "CMDLINE, MEM, CHLD or FUNC")


def read(path):
    """The RunData of data file `path`; DataFileError naming the file (and
    the line) when it cannot be read."""
    if os.path.isdir(path):
        raise DataFileError(f"{path}: is a directory, not a data file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read: "
                            f"{exc.strerror or exc}") from None
    run = RunData(path)
    lines = raw.split(b"\n")
    last = len(lines)
    if lines[-1] == b"":
        lines.pop()  # the final newline
        last = None
    for lineno, data in enumerate(lines, 1):
        try:
            if b"\0" in data:
                raise DataFileError("binary data, not a data file")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise DataFileError("not text (invalid UTF-8)") from None
            try:
                _parse_line(run, text.rstrip("\r"))
            except _BadLine:
                kind = text.partition(" ")[0]
                raise DataFileError(f"bad {kind} line {text[:60]!r}: "
                                    f"expected '{_FORMS[kind]}'") from None
        except DataFileError as exc:
            if lineno == last and lineno > 1:
                # A write cut short by a kill: the data before it stands.
                run.truncated = True
                break
            raise DataFileError(f"{path}:{lineno}: {exc}") from None
    return run


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
