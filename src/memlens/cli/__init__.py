"""The command line: ``memlens run|plot|peak|list|clean|report|flamegraph``,
also ``python -m memlens``.

``python -m memlens --line script.py`` is short for ``memlens run --line
script.py``, as ``python -m memory_profiler script.py`` is for its users.
Bad input gets one line, ``memlens: error: ...``, and exit status 2.
"""

import os
import sys

from memlens._errors import UsageError

COMMANDS = ("run", "plot", "peak", "list", "clean", "report", "flamegraph")

# Modules only some commands need are imported where they are used:
# memlens run's start-up is part of the time it adds to a program, and the
# children of multiprocessing's spawn import this package (cli.spawn).


def _interval(text):
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1e-6 <= value <= 86400:
        raise argparse.ArgumentTypeError(
            f"must be between 1e-06 and 86400 seconds: {text!r}")
    return value


def _add_run(sub):
    import argparse

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
                    "program's own exit status is returned (as mprof "
                    "run's --exit-code does). mprof's -C, -M, -T and -E "
                    "mean what they mean to mprof run. Everything "
                    "after the script, -m MODULE or -c CODE is the "
                    "program's, as with python.")
    run.add_argument("-o", "--output", metavar="FILE",
                     help="data file to write (default: "
                          "memlens_YYYYMMDDhhmmss.dat here)")
    run.add_argument("-T", "--interval", type=_interval, default=0.01,
                     metavar="S", help="seconds between samples "
                                       "(default 0.01)")
    run.add_argument("-C", "--include-children", action="store_true",
                     help="add the memory of child processes (and theirs) "
                          "to MEM; each also gets its own CHLD series")
    run.add_argument("-M", "--multiprocess", action="store_true",
                     help="a CHLD series for each child process (and "
                          "theirs), MEM staying this process's own "
                          "unless -C is given too")
    run.add_argument("-E", "--exit-code", action="store_true",
                     help="return the program's exit status (mprof's "
                          "flag; memlens always does)")
    run.add_argument("--timestamp", action="store_true",
                     help="record each call of a @profile function as a "
                          "FUNC line (memory_profiler's flag; memlens "
                          "always does)")
    run.add_argument("--line", action="store_true",
                     help="line-by-line tables of @profile functions")
    run.add_argument("--alloc", action="store_true",
                     help="with --line: Allocated and Net columns")
    run.add_argument("--precision", type=int, default=1, metavar="P",
                     help="decimals in the line tables (default 1)")
    run.add_argument("--no-meter", action="store_true",
                     help="no live meter, even on a terminal")
    trace = run.add_argument_group(
        "tracing", "With --trace, what was alive at the peak of traced "
                   "memory and at the end is saved beside the data file "
                   "(FILE.trace), kept up to date as the program runs, and "
                   "the top lines at the peak are printed at exit.")
    trace.add_argument("--trace", action="store_true",
                       help="trace allocations: the peak and end snapshots")
    trace.add_argument("--native", action="store_true",
                       help="with --trace: also what C code allocates "
                            "(malloc, mmap)")
    trace.add_argument("--frames", type=int, default=None, metavar="N",
                       help="with --trace: frames kept per traceback "
                            "(default 10, at most 100)")
    trace.add_argument("--sample-bytes", type=int, default=None,
                       metavar="N",
                       help="with --trace: record one block per N bytes "
                            "allocated on average (default 0: every "
                            "block)")
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
    import argparse

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
    plot.add_argument("--trace", action="store_true",
                      help="require the trace beside each data file "
                           "(memlens run --trace); without, it is used "
                           "when there")

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
    report.add_argument("--trace", action="store_true",
                        help="require the trace beside the data file "
                             "(memlens run --trace) and report the top "
                             "lines at the peak and at the end; without, "
                             "they are reported when it is there")

    flame = sub.add_parser(
        "flamegraph", help="write the trace as one HTML page",
        description="Write what was alive at the peak and at the end of a "
                    "run (memlens run --trace) as one self-contained HTML "
                    "page: flame graphs by traceback, Python and native "
                    "bytes apart, the RSS timeline with the peak and the "
                    "calls of profiled functions, a sortable table of the "
                    "top lines, search and click to zoom. It loads nothing "
                    "from the network.")
    flame.add_argument("file", nargs="?", metavar="FILE",
                       help="data file or index (default: the newest); its "
                            "trace is FILE.trace")
    flame.add_argument("-o", "--output", metavar="OUT",
                       help="page to write (default: the data file's name "
                            "with .html)")
    flame.add_argument("--title", metavar="T",
                       help="title (default: the command that ran)")
    return parser


#: The function of cli.report that runs each data-file command.
_REPORTS = {"plot": "plot", "peak": "peak", "list": "list_files",
            "clean": "clean", "report": "report", "flamegraph": "flamegraph"}


def _action(command):
    """The function running `command`, its module imported now."""
    if command == "run":
        from memlens.cli.run import run

        return run
    from memlens.cli import report

    return getattr(report, _REPORTS[command])


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
        return _action(args.command)(args)
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
