"""IPython and Jupyter magics (SPEC 3): ``%load_ext memlens``.

Loading registers the magics and installs nothing else. ``%memlens on``
adds two event callbacks (pre_run_cell / post_run_cell) that open and close
an exact peak window around every cell: no thread, no polling. ``%memit``
measures a statement with the same windows. The measuring is the C core's;
this module parses arguments and formats.

This module imports IPython; memlens imports it only from
``load_ipython_extension``.
"""

import gc
import html
import math
import resource
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Optional

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from memlens import _core
from memlens._readings import peak as _peak_window
from memlens._report import MIB, html_table, kib, mib

__all__ = ["load_ipython_extension", "unload_ipython_extension",
           "CellMeasurement", "CellHistory", "MemitResult", "MemlensMagics"]

#: How many cells the watcher remembers.
HISTORY = 1000


# --------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class CellMeasurement:
    """One cell seen by the watcher. Sizes in bytes, times in seconds.

    ``peak`` is how far the cell's exact peak rose above both its start and
    its end: the transient memory the cell needed (0 for a cell that only
    frees). ``delta`` is the RSS change.
    """

    execution_count: Optional[int]
    delta: int
    peak: int
    elapsed: float
    rss_start: int
    rss_end: int
    peak_rss: int
    source: str

    def to_dict(self):
        return asdict(self)

    def __str__(self):
        count = "?" if self.execution_count is None else self.execution_count
        return (f"In [{count}] used {mib(self.delta)} MiB RAM in "
                f"{self.elapsed:.2f} s, peaked {mib(self.peak)} MiB above "
                f"start and end, total RAM usage {mib(self.rss_end)} MiB")


class CellHistory(list):
    """The watcher's measurements, oldest first (a plain list copy)."""

    HEADER = ("In", "used (MiB)", "peaked (MiB)", "time (s)", "total (MiB)")

    def _rows(self):
        return [(m.execution_count, mib(m.delta), mib(m.peak),
                 f"{m.elapsed:.2f}", mib(m.rss_end)) for m in self]

    def to_dict(self):
        return [m.to_dict() for m in self]

    def __str__(self):
        lines = ["{:>6} {:>12} {:>13} {:>9} {:>12}".format(*self.HEADER)]
        lines += ["{:>6} {:>12} {:>13} {:>9} {:>12}".format(*row)
                  for row in self._rows()]
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))

    def _repr_html_(self):
        return html_table(self.HEADER, self._rows())


class MemitResult:
    """What ``%memit -o`` returns; memory_profiler's names, in MiB.

    ``peaks`` and ``increments`` hold one figure per repeat; ``peak`` and
    ``increment`` are their maxima (what the printed line shows).

    memory_profiler's own attributes mean what they mean there:
    ``mem_usage`` is the list of the runs' peaks (the same figures as
    ``peaks``), ``baseline`` the memory just before the first run (with
    ``-c``, its living children's too, as the peaks count them),
    ``interval`` and ``timeout`` the ``-i`` and ``-t`` given (``timeout``
    None without ``-t``), and ``include_children`` whether ``-c`` was.
    """

    def __init__(self, peaks, baselines, include_children, interval=0.1,
                 timeout=None):
        self.peaks = [p / MIB for p in peaks]
        self.increments = [(p - b) / MIB for p, b in zip(peaks, baselines)]
        self.baseline = baselines[0] / MIB
        self.include_children = include_children
        self.interval = interval
        self.timeout = timeout

    @property
    def mem_usage(self):
        """memory_profiler's name for the runs' peaks (MiB)."""
        return self.peaks

    @property
    def peak(self):
        return max(self.peaks)

    @property
    def increment(self):
        return max(self.increments)

    @property
    def repeat(self):
        return len(self.peaks)

    def to_dict(self):
        return {"peak": self.peak, "increment": self.increment,
                "peaks": list(self.peaks),
                "increments": list(self.increments),
                "baseline": self.baseline, "interval": self.interval,
                "timeout": self.timeout,
                "include_children": self.include_children, "unit": "MiB"}

    def __str__(self):
        return (f"peak memory: {self.peak:.2f} MiB, "
                f"increment: {self.increment:.2f} MiB")

    def __repr__(self):
        return f"<MemitResult : {self}>"

    def _repr_pretty_(self, p, cycle):
        p.text(f"<MemitResult : {self}>")

    def _repr_html_(self):
        rows = [(i + 1, f"{pk:.2f}", f"{inc:.2f}")
                for i, (pk, inc) in enumerate(zip(self.peaks,
                                                  self.increments))]
        return (f"<p><b>{html.escape(str(self))}</b></p>"
                + html_table(("run", "peak memory (MiB)",
                               "increment (MiB)"), rows))


# --------------------------------------------------------------------------
# The per-cell watcher
# --------------------------------------------------------------------------

class CellWatcher:
    """Opens an exact peak window before each cell, closes it after."""

    def __init__(self, shell, stream=None):
        self.shell = shell
        self.stream = stream
        self.history = deque(maxlen=HISTORY)
        self.enabled = False
        self._window = None
        self._t0 = 0.0

    def start(self):
        if not self.enabled:
            self.shell.events.register("pre_run_cell", self.pre_run_cell)
            self.shell.events.register("post_run_cell", self.post_run_cell)
            self.enabled = True

    def stop(self):
        if self.enabled:
            self.shell.events.unregister("pre_run_cell", self.pre_run_cell)
            self.shell.events.unregister("post_run_cell", self.post_run_cell)
            self.enabled = False
        self._close_window()

    def _close_window(self):
        window, self._window = self._window, None
        if window is not None and window.open:
            window.__exit__(None, None, None)
        return window

    def pre_run_cell(self, info=None):
        self._close_window()
        window = _peak_window()
        window.__enter__()
        self._window = window
        self._t0 = time.perf_counter()

    def post_run_cell(self, result=None):
        elapsed = time.perf_counter() - self._t0
        window = self._close_window()
        if window is None:
            return  # the cell that turned the watcher on
        count = getattr(result, "execution_count", None)
        above = window.peak - max(window.start, window.end)
        m = CellMeasurement(
            execution_count=count, delta=window.delta, peak=max(0, above),
            elapsed=elapsed, rss_start=window.start, rss_end=window.end,
            peak_rss=window.peak, source=window.source)
        self.history.append(m)
        print(m, file=self.stream or sys.stdout, flush=True)

    def status(self):
        state = "on" if self.enabled else "off"
        text = f"memlens watcher: {state}, {len(self.history)} cell(s) measured"
        if self.history:
            text += f"; last: {self.history[-1]}"
        return text


# --------------------------------------------------------------------------
# The magics
# --------------------------------------------------------------------------

def _statement(args, cell, shell, magic_name):
    """The code a magic runs: the line's statement, then the cell (through
    IPython's transformations); UsageError when there is none."""
    source = " ".join(args.statement)
    if cell is not None:
        source = source + "\n" + shell.transform_cell(cell)
    if not source.strip():
        raise UsageError(f"%{magic_name}: no statement to run")
    return source


def _parse(magic, line):
    """parse_argstring, with the usage text added to every UsageError."""
    try:
        return parse_argstring(magic, line)
    except UsageError as exc:
        usage = magic.parser.format_usage().strip()
        raise UsageError(f"{exc}\n{usage}") from None


def _check_range(magic, flag, value, low, high):
    """UsageError unless low <= value <= high, in one wording for every
    magic's option."""
    if not low <= value <= high:
        raise UsageError(f"%{magic}: {flag} must be between {low} and "
                         f"{high}")


def _explained(peak):
    """How much of the RSS rise a native peak snapshot's rows explain."""
    if peak.rss_rise is None:
        return "RSS was not read: nothing to reconcile"
    share = "" if peak.explained is None else f" ({peak.explained:.0%})"
    return (f"RSS rose {kib(peak.rss_rise)} KiB from the start to the "
            f"peak; the rows hold {kib(peak.resident)} KiB of it{share}, "
            f"untracked {kib(peak.untracked)} KiB")


def _show_page(page):
    """Shows a self-contained HTML page in the cell's output, in a frame
    of its own so that its script and styles meet none of the notebook's;
    a terminal gets the object's text instead."""
    from IPython.display import HTML, display

    display(HTML("<div><iframe style='width:100%;height:720px;border:0' "
                 f"srcdoc=\"{html.escape(page, quote=True)}\"></iframe>"
                 "</div>"))


def _children_peak_since(rusage_before):
    """RSS of living descendants now, or of the largest child waited for
    since `rusage_before` if that was larger (bytes)."""
    living, _ = _core.children_rss()
    waited = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if waited > rusage_before:
        living = max(living, waited)
    return living


@magics_class
class MemlensMagics(Magics):
    """%memlens, %memit, %mprun, %memtop, %memsize and %memheap."""

    def __init__(self, shell):
        super().__init__(shell)
        self.watcher = CellWatcher(shell)

    # ---- %memlens ----------------------------------------------------

    @magic_arguments()
    @argument("action", nargs="?", default="status",
              help="on: measure every cell; off: stop; status: say which; "
                   "history: the measured cells as a table")
    @line_magic
    def memlens(self, line=""):
        """Per-cell memory watcher: %memlens on|off|status|history."""
        try:
            args = _parse(self.memlens, line)
        except UsageError as exc:
            print(exc)
            return None
        action = args.action
        if action == "on":
            self.watcher.start()
            print("memlens watcher: on")
        elif action == "off":
            self.watcher.stop()
            print("memlens watcher: off")
        elif action == "status":
            print(self.watcher.status())
        elif action == "history":
            return CellHistory(self.watcher.history)
        else:
            print(f"%memlens: unknown action {action!r}\n"
                  + self.memlens.parser.format_help())
        return None

    # ---- %memit ------------------------------------------------------

    @magic_arguments()
    @argument("-r", dest="repeat", type=int, default=1, metavar="R",
              help="run the statement R times and report the largest peak")
    @argument("-t", dest="timeout", type=float, default=None, metavar="T",
              help="stop repeating once T seconds have passed (the first "
                   "run always completes)")
    @argument("-i", dest="interval", type=float, default=0.1, metavar="I",
              help="accepted for memory_profiler compatibility; the exact "
                   "peak needs no sampling interval")
    @argument("-c", dest="include_children", action="store_true",
              help="add the memory of child processes")
    @argument("-o", dest="return_result", action="store_true",
              help="return a MemitResult")
    @argument("-q", dest="quiet", action="store_true",
              help="print nothing")
    @argument("--gc", dest="collect", action="store_true",
              help="run a garbage collection before each run")
    @argument("statement", nargs="*", help="the code to measure")
    @line_cell_magic
    def memit(self, line="", cell=None):
        """Measure the peak memory of a statement, exactly.

        Prints ``peak memory: X MiB, increment: Y MiB`` as memory_profiler
        does: X is the highest RSS reached while the statement ran, Y how
        far that is above the RSS just before it. No child process is
        started, nothing sleeps, and nothing is collected unless --gc asks.

        With %%memit the cell's body is measured, and the statement on the
        magic's line, if any, is setup (the %%timeit convention): it runs
        first, in the user's namespace, unmeasured, and once only, before
        the first of the -r runs (as memory_profiler's %%memit does). A
        setup that raises shows its traceback, and nothing is measured.
        Options come before the setup statement on the line.
        """
        __tracebackhide__ = True
        args = _parse(self.memit, line)
        if args.repeat < 1:
            raise UsageError("%memit: -r needs a positive number of runs")
        # nan and inf are refused too: nan compares false with everything,
        # and "no timeout" is what leaving -t out means.
        if args.timeout is not None and not (
                math.isfinite(args.timeout) and args.timeout > 0):
            raise UsageError("%memit: -t needs a finite positive number of "
                             "seconds")
        if not (math.isfinite(args.interval) and args.interval > 0):
            raise UsageError("%memit: -i needs a finite positive interval")
        setup = None
        if cell is None:
            source = _statement(args, None, self.shell, "memit")
        else:
            line_source = " ".join(args.statement)
            if line_source.strip():
                setup = self._compile(self.shell.transform_cell(line_source))
            source = self.shell.transform_cell(cell)
            if not source.strip():
                raise UsageError("%%memit: the cell has no statement to "
                                 "measure")
        code = self._compile(source)
        if setup is not None:
            exec(setup, self.shell.user_ns)
        result = self._run(code, args)
        if not args.quiet:
            print(result)
        return result if args.return_result else None

    def _compile(self, source):
        """Compiles `source`, keeping it for tracebacks."""
        compiler = self.shell.compile
        cache = getattr(compiler, "cache", None)
        filename = cache(source) if cache is not None else "<memit>"
        return compile(source, filename, "exec", dont_inherit=True)

    def _run(self, code, args):
        __tracebackhide__ = True
        ns = self.shell.user_ns
        peaks, baselines = [], []
        deadline = None
        if args.timeout is not None:
            deadline = time.perf_counter() + args.timeout
        for _ in range(args.repeat):
            if args.collect:
                gc.collect()
            # Pages the heap kept from earlier work would be reused without
            # raising RSS: the figures must not depend on what ran before.
            _core._trim_heap()
            waited = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            before = _core.children_rss()[0] if args.include_children else 0
            with _peak_window() as window:
                exec(code, ns)
            top = window.peak
            base = window.start
            if args.include_children:
                top += _children_peak_since(waited * 1024)
                base += before
            peaks.append(top)
            baselines.append(base)
            if deadline is not None and time.perf_counter() >= deadline:
                break
        return MemitResult(peaks, baselines, args.include_children,
                           interval=args.interval, timeout=args.timeout)


    # ---- %mprun -------------------------------------------------------

    @magic_arguments()
    @argument("-f", dest="functions", action="append", required=True,
              metavar="FUNC", help="a function to profile (repeat -f for "
                                   "more)")
    @argument("-T", dest="filename", metavar="FILE",
              help="also save the tables to FILE")
    @argument("-c", dest="include_children", action="store_true",
              help="add the memory of child processes (reads every line)")
    @argument("-r", dest="return_result", action="store_true",
              help="return the LineProfiler")
    @argument("--alloc", action="store_true",
              help="add the Allocated and Net columns (allocator hooks)")
    @argument("--precision", type=int, default=1, metavar="P",
              help="decimals of the MiB figures")
    @argument("statement", nargs="*", help="the code to run")
    @line_cell_magic
    def mprun(self, line="", cell=None):
        """Line-by-line memory of the functions named by -f while the
        statement runs; the tables are printed in the cell."""
        __tracebackhide__ = True
        from memlens.lineprof.profiler import MAX_PRECISION, LineProfiler

        args = _parse(self.mprun, line)
        _check_range("mprun", "--precision", args.precision, 0,
                     MAX_PRECISION)
        functions = []
        for name in args.functions:
            try:
                functions.append(eval(name, self.shell.user_ns))
            except Exception as exc:
                raise UsageError(
                    f"%mprun: could not find function {name!r} "
                    f"({type(exc).__name__}: {exc})") from None
        try:
            profiler = LineProfiler(*functions, alloc=args.alloc,
                                    include_children=args.include_children)
        except TypeError as exc:
            raise UsageError(f"%mprun: {exc}") from None
        code = self._compile(_statement(args, cell, self.shell, "mprun"))
        if args.filename:
            # Found out now, not after the statement has run: opening for
            # append creates the file but changes nothing in one that is
            # there (it is written in full below).
            try:
                with open(args.filename, "a", encoding="utf-8"):
                    pass
            except OSError as exc:
                raise UsageError(
                    f"%mprun: cannot write -T file {args.filename!r}: "
                    f"{exc.strerror or exc}") from None
        try:
            with profiler:
                exec(code, self.shell.user_ns)
        finally:
            text = "".join(fp.format(args.precision)
                           for fp in profiler.results)
            print(text, end="")
            if args.filename:
                with open(args.filename, "w", encoding="utf-8") as f:
                    f.write(text)
                print(f"\n*** Profile printout saved to text file "
                      f"{args.filename}. ")
        return profiler if args.return_result else None


    # ---- %memtop ------------------------------------------------------

    @magic_arguments()
    @argument("-n", dest="limit", type=int, default=10, metavar="N",
              help="how many rows (default 10)")
    @argument("-k", dest="key", default="lineno",
              choices=("lineno", "filename", "traceback"),
              help="group by line (default), file or traceback")
    @argument("-f", dest="nframes", type=int, default=None, metavar="F",
              help="frames per traceback (default 1; 10 with -k "
                   "traceback)")
    @argument("-s", dest="sample_bytes", type=int, default=0, metavar="B",
              help="sample one allocation per B bytes (default: every one)")
    @argument("-o", dest="return_result", action="store_true",
              help="return the tracing object (.snapshot, .peak)")
    @argument("--native", action="store_true",
              help="trace every shared library's malloc and anonymous mmap "
                   "too; the peak is shown in resident bytes, with how much "
                   "of the RSS rise it explains")
    @argument("--html", action="store_true",
              help="also show the flame graph page of the peak and the end "
                   "(Snapshot.to_html) in the cell's output")
    @argument("statement", nargs="*", help="the code to run")
    @line_cell_magic
    def memtop(self, line="", cell=None):
        """Run the code with allocation tracing; print the lines that
        handed out the most memory, and those that held the most at the
        peak. With --native, C libraries' memory (malloc and anonymous
        mmap in every loaded shared object) is traced too, each block on
        the Python line that caused it."""
        __tracebackhide__ = True
        from memlens._tracing import (MAX_FRAMES, MAX_SAMPLE_BYTES,
                                      is_tracing, tracing)

        args = _parse(self.memtop, line)
        if args.limit < 0:
            raise UsageError("%memtop: -n must not be negative")
        _check_range("memtop", "-s", args.sample_bytes, 0, MAX_SAMPLE_BYTES)
        nframes = args.nframes
        if nframes is None:
            nframes = 10 if args.key == "traceback" else 1
        _check_range("memtop", "-f", nframes, 1, MAX_FRAMES)
        if is_tracing():
            raise UsageError("%memtop: memlens is already tracing "
                             "(stop_tracing() first)")
        code = self._compile(_statement(args, cell, self.shell, "memtop"))
        if args.native:
            run = tracing(nframes=nframes, sample_bytes=args.sample_bytes,
                          native=True)
        else:
            run = tracing(nframes=nframes, sample_bytes=args.sample_bytes)
        try:
            with run:
                exec(code, self.shell.user_ns)
        finally:
            if run.peak is not None:
                print(run.snapshot.format(args.limit, args.key,
                                          by="allocated"))
                print(f"\nAt the peak ({kib(run.traced[1])} KiB "
                      "traced):")
                print(run.peak.format(args.limit, args.key))
                if args.native:
                    print(_explained(run.peak))
                if args.html:
                    _show_page(run.peak.to_html(end=run.snapshot,
                                                title="%memtop"))
        return run if args.return_result else None


    # ---- %memsize -----------------------------------------------------

    @magic_arguments()
    @argument("-l", dest="limit", type=int, default=None, metavar="L",
              help="count objects L references away, follow no further")
    @argument("expression", nargs="+", help="the value to size")
    @line_magic
    def memsize(self, line=""):
        """Deep size of a value: everything it holds, each object once."""
        __tracebackhide__ = True
        from memlens._sizeof import asizeof

        args = _parse(self.memsize, line)
        if args.limit is not None and args.limit < 0:
            raise UsageError("%memsize: -l must not be negative")
        expression = " ".join(args.expression)
        value = eval(self._compile_eval(expression), self.shell.user_ns)
        size = asizeof(value, limit=args.limit)
        print(f"{expression}: {mib(size)} MiB ({size:,} bytes)")
        return None

    # ---- %memheap -----------------------------------------------------

    @magic_arguments()
    @argument("-n", dest="limit", type=int, default=20, metavar="N",
              help="how many kinds to show (default 20)")
    @argument("-o", dest="return_result", action="store_true",
              help="return the HeapCensus")
    @line_magic
    def memheap(self, line=""):
        """A census of every live object, by kind (heapy's layout)."""
        from memlens._census import heap

        args = _parse(self.memheap, line)
        if args.limit < 0:
            raise UsageError("%memheap: -n must not be negative")
        census = heap()
        print(census.format(limit=args.limit))
        return census if args.return_result else None

    def _compile_eval(self, expression):
        try:
            return compile(expression, "<memsize>", "eval")
        except SyntaxError as exc:
            raise UsageError(f"%memsize: not an expression: {exc}") from None


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

_LOADED = {}


def load_ipython_extension(ip):
    """Register the magics. Nothing else is installed until asked."""
    if ip in _LOADED:
        return
    magics = MemlensMagics(ip)
    ip.register_magics(magics)
    _LOADED[ip] = magics


def unload_ipython_extension(ip):
    """Stop the watcher and remove every magic that loading registered."""
    magics = _LOADED.pop(ip, None)
    if magics is None:
        return
    magics.watcher.stop()
    table = ip.magics_manager.magics
    for kind, names in magics.magics.items():
        for name in names:
            table[kind].pop(name, None)
    ip.magics_manager.registry.pop(type(magics).__name__, None)
