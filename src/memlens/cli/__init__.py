"""The command line: ``memlens run|plot|peak|list|clean|report``, also
``python -m memlens``.

``python -m memlens --line script.py`` is short for ``memlens run --line
script.py``, as ``python -m memory_profiler script.py`` is for its users.
Bad input gets one line, ``memlens: error: ...``, and exit status 2.
"""

import argparse
import builtins
import os
import sys
import threading
import time
import types

from memlens._errors import UsageError
from memlens._report import mib

COMMANDS = ("run", "plot", "peak", "list", "clean", "report")

# Modules only some commands need are imported where they are used:
# memlens run's start-up is part of the time it adds to a program.


def _interval(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1e-6 <= value <= 86400:
        raise argparse.ArgumentTypeError(
            f"must be between 1e-06 and 86400 seconds: {text!r}")
    return value


def _add_run(sub):
    run = sub.add_parser(
        "run", help="run a program, recording its memory to a data file",
        usage="memlens run [options] (script.py | -m MODULE | -c CODE) "
              "[args ...]",
        description="Run a Python program (a script, -m module or -c code) "
                    "sampling its memory in a native thread. Every sample "
                    "is written at once to a data file in memory_profiler's "
                    "mprof format; a summary (peak, when, duration) is "
                    "printed at exit, and on a terminal a live meter shows "
                    "on stderr. `profile` is a builtin: each call of a "
                    "function it decorates is recorded as a FUNC span "
                    "(with --line, also profiled line by line). The "
                    "program's own exit status is returned. Everything "
                    "after the script, -m MODULE or -c CODE is the "
                    "program's, as with python.")
    run.add_argument("-o", "--output", metavar="FILE",
                     help="data file to write (default: "
                          "memlens_YYYYMMDDhhmmss.dat here)")
    run.add_argument("--interval", type=_interval, default=0.01,
                     metavar="S", help="seconds between samples "
                                       "(default 0.01)")
    run.add_argument("--include-children", action="store_true",
                     help="add the memory of child processes (and theirs); "
                          "each gets its own CHLD series")
    run.add_argument("--line", action="store_true",
                     help="line-by-line tables of @profile functions")
    run.add_argument("--alloc", action="store_true",
                     help="with --line: Allocated and Net columns")
    run.add_argument("--precision", type=int, default=1, metavar="P",
                     help="decimals in the line tables (default 1)")
    run.add_argument("--no-meter", action="store_true",
                     help="no live meter, even on a terminal")
    # -m and -c take the rest of the command line: the module's or the
    # code's arguments follow them (-o, --help... are the program's).
    target = run.add_mutually_exclusive_group()
    target.add_argument("-m", dest="module", nargs=argparse.REMAINDER,
                        metavar="MODULE",
                        help="run a library module as a script")
    target.add_argument("-c", dest="code", nargs=argparse.REMAINDER,
                        metavar="CODE",
                        help="run a program passed as a string")
    run.add_argument("program", nargs=argparse.REMAINDER,
                     help="script.py [args ...] (or the module's or code's "
                          "arguments)")


_FILES_HELP = ("data files, or their indexes in `memlens list` (0 the "
               "oldest, -1 the newest); default: the newest")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="memlens",
        description="Exact, fast memory profiling for Python programs.")
    from memlens import __version__

    parser.add_argument("--version", action="version",
                        version=f"memlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_run(sub)

    plot = sub.add_parser(
        "plot", help="plot memory over time (PNG, SVG, PDF or HTML)",
        description="Plot memory over time from data files: the peak "
                    "marked, calls of profiled functions shaded, children "
                    "as lines of their own. Needs matplotlib "
                    "(pip install 'memlens[plot]').")
    plot.add_argument("files", nargs="*", metavar="FILE", help=_FILES_HELP)
    plot.add_argument("-o", "--output", metavar="OUT",
                      help="image to write: .png, .svg, .pdf or .html "
                           "(default: the data file's name with .png)")
    plot.add_argument("--title", metavar="T",
                      help="title (default: the command that ran)")

    peak = sub.add_parser(
        "peak", help="print the peak memory of data files",
        description="Print the peak memory of each data file (and of each "
                    "child process), as mprof peak does.")
    peak.add_argument("files", nargs="*", metavar="FILE", help=_FILES_HELP)

    sub.add_parser(
        "list", help="list the data files here, with indexes",
        description="List the data files in this directory (memlens_*.dat "
                    "and mprof's mprofile_*.dat), oldest first, with the "
                    "indexes the other commands accept.")

    clean = sub.add_parser(
        "clean", help="delete memlens's data files here",
        description="Delete the memlens_*.dat files in this directory "
                    "(mprof's own files are left alone).")
    clean.add_argument("--dry-run", action="store_true",
                       help="only print what would be deleted")

    report = sub.add_parser(
        "report", help="summarise a data file (text or JSON)",
        description="Summarise a data file: samples, duration, memory at "
                    "start, peak and end, the peak's time, calls of "
                    "profiled functions and child processes; or print its "
                    "timeline as CSV.")
    report.add_argument("file", nargs="?", metavar="FILE",
                        help="data file or index (default: the newest)")
    form = report.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true",
                      help="print JSON instead of text")
    form.add_argument("--csv", action="store_true",
                      help="print the timeline as CSV: seconds, MiB, and "
                           "a column per child process")
    return parser


# --------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------

def _check_script(path):
    """Raises UsageError unless `path` is a readable Python source."""
    if not os.path.exists(path):
        raise UsageError(f"cannot run {path!r}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"cannot run {path!r}: it is a directory")
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError as exc:
        raise UsageError(f"cannot run {path!r}: {exc.strerror}") from None
    if b"\0" in head:
        raise UsageError(f"cannot run {path!r}: not a Python source file "
                           "(binary content)")


def _exec_as_main(code, **names):
    """Runs `code` as the __main__ module, as Python runs a script:
    pickle (and multiprocessing's spawn) look functions up there. The
    module stays __main__ until the process exits, as it would: the
    program's threads and atexit functions may still need it."""
    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, __spec__=None,
                         __package__=None, **names)
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def _set_path0(entry, replace):
    """Puts `entry` in front of sys.path as python does for its program:
    in place of memlens's own entry when memlens is the interpreter's
    program (`replace`), else in front. Nothing under -I or -P, where
    python puts nothing there either."""
    if sys.flags.isolated or getattr(sys.flags, "safe_path", False):
        return
    if replace and sys.path:
        sys.path[0] = entry
    else:
        sys.path.insert(0, entry)


def _compile_target(args):
    """(label, command line, callable running the program, argv) or
    UsageError. Syntax errors are raised here, before anything runs.
    sys.path[0] becomes what python would set: '' for -c, the current
    directory for -m, the script's own (real) directory for a script."""
    replace = getattr(args, "as_program", False)
    if args.code is not None:
        if not args.code:
            raise UsageError("run: -c needs the code to run")
        text = args.code[0]
        code = compile(text, "<string>", "exec")
        argv = ["-c"] + args.code[1:] + args.program

        def run_code():
            _set_path0("", replace)
            _exec_as_main(code)
        return "-c", ["python", "-c", text] + argv[1:], run_code, argv
    if args.module is not None:
        if not args.module:
            raise UsageError("run: -m needs a module name")
        name = args.module[0]
        argv = [name] + args.module[1:] + args.program

        def run_module():
            import runpy

            _set_path0(os.getcwd(), replace)
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        return f"-m {name}", ["python", "-m"] + argv, run_module, argv
    if not args.program:
        raise UsageError("run: give a script, -m module or -c code")
    path = args.program[0]
    _check_script(path)
    with open(path, "rb") as f:
        source = f.read()
    # __file__ and the code's file name are absolute, as python makes them
    # (sys.argv[0] stays as given).
    full = os.path.abspath(path)
    code = compile(source, full, "exec")
    argv = list(args.program)

    def run_script():
        _set_path0(os.path.dirname(os.path.realpath(path)), replace)
        _exec_as_main(code, __file__=full, __cached__=None)
    return path, ["python"] + argv, run_script, argv


# The lowest number of memlens's own copies of stdout and stderr: above
# the descriptors a program opens, and the range daemonising code closes.
_HIGH_FD = 512


def _identity(fd):
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


class _Output:
    """memlens's own copy of one of the program's output streams, taken
    before the program runs: the program may close sys.stdout or
    sys.stderr, or their descriptors, and memlens's summary and tables
    must still reach the user. Text goes to a close-on-exec duplicate of
    the stream's descriptor, at a high number, checked before each write
    (or, when the program closed that too, to the stream's own number if
    it still names the same file); to the stream object itself when it
    has no descriptor (an in-process caller's capture)."""

    def __init__(self, stream):
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        self.fd = self.original = None
        try:
            fd = self.original = stream.fileno()
        except (AttributeError, ValueError, OSError):
            return
        import fcntl

        try:
            self.fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)
        except OSError:
            try:
                self.fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            except OSError:
                return
        self.identity = _identity(self.fd)

    def _ours(self, fd=None):
        """Whether `fd` (default: our duplicate) names the file
        duplicated."""
        fd = self.fd if fd is None else fd
        try:
            return fd is not None and _identity(fd) == self.identity
        except OSError:
            return False

    def isatty(self):
        return self._ours() and os.isatty(self.fd)

    def write(self, text):
        try:
            self.stream.flush()  # the program's own text comes first
        except Exception:
            pass
        if self.fd is None:
            try:
                self.stream.write(text)
                self.stream.flush()
            except (AttributeError, ValueError, OSError):
                pass
            return
        if self._ours():
            fd = self.fd
        elif self._ours(self.original):
            fd = self.original
        else:
            return
        data = text.encode(self.encoding, "backslashreplace")
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError:
            pass  # the reader went away (EPIPE): nothing to tell

    def flush(self):
        pass

    def close(self):
        if self._ours():
            os.close(self.fd)
        self.fd = None


def _to_stderr(write):
    """Calls write(stream) with the program's sys.stderr, as python
    would; False when that stream is gone or closed."""
    stream = sys.stderr
    if stream is None:
        return False
    try:
        write(stream)
        stream.flush()
    except (AttributeError, ValueError, OSError):
        return False
    return True


def _exit_status(exc, err):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    if not _to_stderr(lambda stream: print(code, file=stream)):
        err.write(f"{code}\n")
    return 1


def _print_program_error(exc, err):
    """The program's own error, shown as Python would show it, without
    memlens's frames: on the program's stderr, else on memlens's."""
    import traceback

    runpy = sys.modules.get("runpy")
    ours = (__file__, getattr(runpy, "__file__", __file__))
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in ours:
        tb = tb.tb_next

    def show(stream):
        traceback.print_exception(type(exc), exc, tb, file=stream)
    if not _to_stderr(show):
        show(err)


def _join_program_threads():
    """Waits for the program's non-daemon threads, as the interpreter
    would at exit, so that their memory is recorded too."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()


class _Installed:
    """What memlens run puts in place for the program, and takes away
    after it, so that nothing outlives a run of memlens.cli.main called
    in-process: the ``profile`` builtin, the hook that gives it to the
    children of multiprocessing's spawn and forkserver, and the SIGTERM
    handler (installed only where SIGTERM would kill: not when it is
    ignored or handled already, nor outside the main thread)."""

    def __init__(self, run_profile):
        from memlens.cli.spawn import SpawnHook

        self.had_profile = hasattr(builtins, "profile")
        self.saved_profile = getattr(builtins, "profile", None)
        builtins.profile = run_profile
        self.hook = SpawnHook()
        self.hook.install()
        self.handler = None

    def handle_sigterm(self, handler):
        import signal

        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
            self.handler = handler
            signal.signal(signal.SIGTERM, handler)

    def remove(self):
        import signal

        if self.handler is not None:
            if signal.getsignal(signal.SIGTERM) is self.handler:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self.handler = None
        self.hook.uninstall()
        if self.had_profile:
            builtins.profile = self.saved_profile
        else:
            builtins.__dict__.pop("profile", None)


def _run(args):
    from memlens.cli.record import open_output, recorder

    if args.alloc and not args.line:
        raise UsageError("run: --alloc goes with --line")
    try:
        label, cmdline, body, argv = _compile_target(args)
    except SyntaxError as exc:
        import traceback

        traceback.print_exception(type(exc), exc, None)
        return 1
    try:
        path, fd = open_output(args.output)
    except OSError as exc:
        name = exc.filename or args.output
        raise UsageError(f"cannot write the data file {name!r}: "
                           f"{exc.strerror or exc}") from None
    # Taken now, before the program can close its own.
    out, err = _Output(sys.stdout), _Output(sys.stderr)
    try:
        try:
            meter = (not args.no_meter and err.isatty()
                     and os.environ.get("TERM") != "dumb")
            rec = recorder(fd, args.interval, path=os.path.abspath(path),
                           children=args.include_children,
                           meter_fd=err.fd if meter else -1)
        finally:
            os.close(fd)
        return _run_program(args, label, cmdline, body, argv, path, rec,
                            out, err)
    finally:
        out.close()
        err.close()


def _run_program(args, label, cmdline, body, argv, path, rec, out, err):
    """Runs the program under the recorder `rec`; the exit status. The
    tables go to `out`, the summary to `err` (_Output)."""
    import signal
    from shlex import quote

    from memlens._readings import peak
    from memlens.cli.record import RunProfile

    text = " ".join(quote(a) for a in cmdline)
    rec.write(("CMDLINE " + text.replace("\r", " ").replace("\n", "\\n")
               + "\n").encode("utf-8", "surrogateescape"))
    line_profiler = None
    if args.line:
        from memlens.lineprof import LineProfiler

        line_profiler = LineProfiler(alloc=args.alloc)
    run_profile = RunProfile(rec, line_profiler)
    status, error = 0, None
    pid = os.getpid()
    window = peak()
    start = time.monotonic()

    def report(how):
        """Prints the tables and the summary line; `how` the run ended."""
        elapsed = time.monotonic() - start
        run_profile.print_stats(out, args.precision)
        rec.close()
        when = "" if rec.peak_time is None else f" at {rec.peak_time:.2f} s"
        if args.include_children and rec.peak is not None:
            what = (f"peak {mib(rec.peak)} MiB with children{when} (this "
                    f"process {mib(window.peak)} MiB)")
        else:
            what = (f"peak {mib(window.peak)} MiB{when} "
                    f"({mib(window.peak_delta)} MiB above start)")
        lost = (f", {rec.failures} failed reads or writes" if rec.failures
                else "")
        err.write(f"memlens: {label}: {what}, ran {elapsed:.2f} s, {how}; "
                  f"data in {path}{lost}\n")

    def on_sigterm(signum, frame):
        """SIGTERM: the open spans and the summary, then death by the
        signal, as python's own default would die."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if os.getpid() == pid:
            installed.remove()
            run_profile.end_open_spans()
            window.__exit__(None, None, None)
            report("killed by SIGTERM")
            out.close()
            err.close()
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(128 + signal.SIGTERM)  # SIGTERM was blocked

    installed = _Installed(run_profile)
    sys.argv = argv
    try:
        with rec, window:
            try:
                installed.handle_sigterm(on_sigterm)
                body()
                _join_program_threads()
            except SystemExit as exc:
                status = _exit_status(exc, err)
            except KeyboardInterrupt:
                status = 130
            except BaseException as exc:
                status, error = 1, exc
    finally:
        installed.remove()
    if os.getpid() != pid:
        # A child the program forked, leaving through here: the parent
        # reports.
        if error is not None:
            _print_program_error(error, err)
        return status if error is None else 1
    # The meter is cleared now: what follows starts on a clean line.
    if error is not None:
        _print_program_error(error, err)
        error = None
    report(f"exit status {status}")
    return status


# --------------------------------------------------------------------------
# The data-file commands
# --------------------------------------------------------------------------

def _read_all(names, newest=True):
    from memlens.cli import datafile

    return [datafile.read(p) for p in datafile.select(names, newest)]


def _need_samples(path, samples):
    if not samples:
        raise UsageError(f"{path}: no MEM samples in this data file")


def _plot(args):
    from memlens.cli import plot

    if args.output is not None:
        plot.check_output(args.output)
    runs = _read_all(args.files)
    for run in runs:
        _need_samples(run.path, run.samples)
    out = args.output
    if out is None:
        out = os.path.splitext(os.path.basename(runs[0].path))[0] + ".png"
    plot.save(runs, out, args.title)
    print(f"memlens: plot saved to {out}", file=sys.stderr)
    return 0


def _peak(args):
    from memlens.cli import datafile

    # Every file is read before a line is printed: a bad one prints
    # nothing but its error.
    summaries = [datafile.summarise(p) for p in datafile.select(args.files)]
    for s in summaries:
        _need_samples(s["file"], s["samples"])
    for s in summaries:
        print(f"{s['file']}\t{s['peak_mib']:.2f} MiB")
        for child in s["children"]:
            print(f"  child {child['id']}\t{child['peak_mib']:.2f} MiB")
    return 0


def _list(args):
    from memlens.cli import datafile

    for n, path in enumerate(datafile.data_files()):
        print(f"{n} {path} {datafile.started(path)}")
    return 0


def _clean(args):
    from memlens.cli import datafile

    paths = [p for p in datafile.data_files()
             if os.path.basename(p).startswith("memlens_")]
    for path in paths:
        if args.dry_run:
            print(f"would delete {path}")
        else:
            os.remove(path)
            print(f"deleted {path}")
    return 0


def _seconds(s):
    return f"{s:.2f} s"


def _report_text(s):
    lines = [f"{s['file']}: {s['command'] or '(no command line)'}"]
    n = s["samples"]
    if n:
        every = (f" (one every {s['duration_s'] / (n - 1) * 1e3:.1f} ms)"
                 if n > 1 else "")
        lines.append(f"  samples    {n} over {_seconds(s['duration_s'])}"
                     f"{every}")
        lines.append(f"  memory     start {s['start_mib']:.2f} MiB, peak "
                     f"{s['peak_mib']:.2f} MiB at "
                     f"{_seconds(s['peak_time_s'])}, end "
                     f"{s['end_mib']:.2f} MiB")
    else:
        lines.append("  samples    none")
    if s["truncated"]:
        lines.append("  note       the last line was cut short (the run "
                     "was killed while writing it)")
    if s["functions"]:
        lines.append("  functions")
        for f in s["functions"]:
            lines.append(f"    {f['name']}: {f['calls']} call"
                         f"{'' if f['calls'] == 1 else 's'}, "
                         f"{_seconds(f['total_s'])} in all")
            for sp in f["spans"][:10]:
                when = f"{sp['start_s']:.2f} - {sp['end_s']:.2f} s"
                lines.append(f"      {when:<20} {sp['start_mib']:9.2f} -> "
                             f"{sp['end_mib']:9.2f} MiB"
                             + (f"  (depth {sp['depth']})"
                                if sp["depth"] else ""))
            if len(f["spans"]) > 10:
                lines.append(f"      ... {len(f['spans']) - 10} more")
    if s["children"]:
        lines.append("  children")
        for c in s["children"]:
            lines.append(f"    {c['id']}: peak {c['peak_mib']:.2f} MiB at "
                         f"{_seconds(c['peak_time_s'])}, seen "
                         f"{c['first_s']:.2f} - {c['last_s']:.2f} s "
                         f"({c['samples']} samples)")
    return "\n".join(lines)


def _report_csv(path):
    """The samples as CSV rows, printed as the file is read: seconds since
    the first, MiB, and a column per child, filled from the child's CHLD
    line of the same time written next to the MEM line (before the next
    MEM line), as memlens writes them; empty where there is none."""
    import csv

    from memlens.cli import datafile

    # A first pass finds the columns and checks the whole file, so that a
    # bad file prints its error and no rows.
    summary = datafile.summarise(path)
    t0 = summary["start_time"] or 0.0
    kids = [c["id"] for c in summary["children"]]
    column = {pid: i for i, pid in enumerate(kids, 2)}
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["time_s", "memory_mib"] + [f"child_{pid}_mib"
                                             for pid in kids])
    row, row_time = None, None
    near = {}  # pid: (time, MiB) of its CHLD lines since the last MEM line
    for record in datafile.records(path):
        kind = record[0]
        if kind == "CHLD":
            _, pid, mem, when = record
            if pid in column:
                near[pid] = (when, mem)
                if when == row_time:
                    row[column[pid]] = f"{mem:.6f}"
        elif kind == "MEM":
            if row is not None:
                out.writerow(row)
            _, mem, row_time = record
            row = [f"{row_time - t0:.6f}", f"{mem:.6f}"] + [""] * len(kids)
            for pid, (when, mem) in near.items():
                if when == row_time:
                    row[column[pid]] = f"{mem:.6f}"
            near.clear()
    if row is not None:
        out.writerow(row)


def _report(args):
    from memlens.cli import datafile

    path, = datafile.select([args.file] if args.file is not None else [])
    if args.csv:
        _report_csv(path)
        return 0
    summary = datafile.summarise(path)
    if args.json:
        import json

        print(json.dumps(summary, indent=2))
    else:
        print(_report_text(summary))
    return 0


_ACTIONS = {"run": _run, "plot": _plot, "peak": _peak, "list": _list,
            "clean": _clean, "report": _report}


def main(argv=None):
    argv_given = argv
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS + ("-h", "--help", "--version"):
        argv.insert(0, "run")  # python -m memlens [--line] script.py
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and args.precision < 0:
        parser.error("--precision must not be negative")
    args.as_program = argv_given is None  # sys.path[0] is memlens's
    try:
        return _ACTIONS[args.command](args)
    except UsageError as exc:
        print(f"memlens: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `memlens report | head`: the reader left; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except OSError as exc:
        # Files of ours: a plot or a data file we could not write or
        # delete (the program's own errors never get here).
        where = f" {exc.filename!r}" if exc.filename else ""
        print(f"memlens: error:{where} {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main_exit():
    """Console-script entry point."""
    sys.exit(main())
