"""The command line: ``memlens run ...`` (also ``python -m memlens``).

``python -m memlens --line script.py`` is short for ``memlens run --line
script.py``, as ``python -m memory_profiler script.py`` is for its users.
"""

import argparse
import builtins
import os
import runpy
import sys
import time
import traceback

from memlens._format import mib

COMMANDS = ("run",)


class CommandError(Exception):
    """A bad input: one clear line, exit status 2."""


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="memlens",
        description="Exact, fast memory profiling for Python programs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    run = sub.add_parser(
        "run", help="run a program and report its memory",
        description="Run a Python program (a script, -m module or -c code) "
                    "and report its peak memory at exit. With --line, "
                    "functions decorated with @profile get a line-by-line "
                    "table (profile is a builtin, as with memory_profiler).")
    run.add_argument("--line", action="store_true",
                     help="line-by-line tables of @profile functions")
    run.add_argument("--alloc", action="store_true",
                     help="with --line: Allocated and Net columns")
    run.add_argument("--precision", type=int, default=1, metavar="P",
                     help="decimals in the line tables (default 1)")
    run.add_argument("--interval", type=_positive_float, default=0.01,
                     metavar="S", help="seconds between RSS samples "
                                       "(default 0.01)")
    target = run.add_mutually_exclusive_group()
    target.add_argument("-m", dest="module", metavar="MODULE",
                        help="run a library module as a script")
    target.add_argument("-c", dest="code", metavar="CODE",
                        help="run a program passed as a string")
    run.add_argument("program", nargs=argparse.REMAINDER,
                     help="script.py [args ...] (or the module's or code's "
                          "arguments)")
    return parser


# --------------------------------------------------------------------------
# Running a program
# --------------------------------------------------------------------------

class _RunProfile:
    """The `profile` builtin under ``run --line``: decorates functions into
    one shared LineProfiler whose tables are printed at exit."""

    def __init__(self, alloc, precision):
        from memlens._line import LineProfiler

        self.profiler = LineProfiler(alloc=alloc)
        self.precision = precision

    def __call__(self, func=None, **options):
        if func is None:
            # @profile(precision=...) as with memory_profiler; the options
            # of the command line win.
            return self
        return self.profiler(func)

    def print_stats(self, stream):
        if self.profiler.codes:
            self.profiler.print_stats(stream=stream,
                                      precision=self.precision)


def _check_script(path):
    """Raises CommandError unless `path` is a readable Python source."""
    if not os.path.exists(path):
        raise CommandError(f"cannot run {path!r}: no such file")
    if os.path.isdir(path):
        raise CommandError(f"cannot run {path!r}: it is a directory")
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError as exc:
        raise CommandError(f"cannot run {path!r}: {exc.strerror}") from None
    if b"\0" in head:
        raise CommandError(f"cannot run {path!r}: not a Python source file "
                           "(binary content)")


def _compile_target(args):
    """(description, callable running the program, argv) or CommandError.
    Syntax errors are raised here, before anything runs."""
    if args.code is not None:
        code = compile(args.code, "<string>", "exec")
        argv = ["-c"] + args.program

        def run_code():
            exec(code, {"__name__": "__main__", "__builtins__": builtins})
        return "-c", run_code, argv
    if args.module is not None:
        argv = [args.module] + args.program

        def run_module():
            runpy.run_module(args.module, run_name="__main__",
                             alter_sys=True)
        return f"-m {args.module}", run_module, argv
    if not args.program:
        raise CommandError("run: give a script, -m module or -c code")
    path = args.program[0]
    _check_script(path)
    with open(path, "rb") as f:
        source = f.read()
    code = compile(source, path, "exec")
    argv = list(args.program)

    def run_script():
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
        globs = {"__name__": "__main__", "__file__": path,
                 "__builtins__": builtins, "__cached__": None,
                 "__package__": None, "__spec__": None}
        exec(code, globs)
    return path, run_script, argv


def _run(args):
    from memlens._readings import Sampler, peak

    try:
        label, body, argv = _compile_target(args)
    except SyntaxError:
        traceback.print_exception(*sys.exc_info()[:2], None)
        return 1
    run_profile = None
    if args.line:
        run_profile = _RunProfile(args.alloc, args.precision)
        builtins.profile = run_profile
    elif args.alloc:
        raise CommandError("run: --alloc goes with --line")
    sys.argv = argv
    status = 0
    sampler = Sampler(interval=args.interval)
    window = peak()
    start = time.time()
    with sampler, window:
        try:
            body()
        except SystemExit as exc:
            code = exc.code
            if code is None:
                status = 0
            elif isinstance(code, int):
                status = code
            else:
                print(code, file=sys.stderr)
                status = 1
        except KeyboardInterrupt:
            status = 130
        except BaseException:
            # The program's own error, shown as Python would show it.
            etype, value, tb = sys.exc_info()
            while tb is not None and tb.tb_frame.f_code.co_filename in (
                    __file__, runpy.__file__):
                tb = tb.tb_next
            traceback.print_exception(etype, value, tb)
            status = 1
        finally:
            if run_profile is not None:
                del builtins.profile
    elapsed = time.time() - start
    if run_profile is not None:
        run_profile.print_stats(sys.stdout)
    times, values = sampler.arrays()
    when = ""
    if len(values):
        top = max(range(len(values)), key=values.__getitem__)
        when = f" at {times[top]:.2f} s"
    print(f"memlens: {label}: peak {mib(window.peak)} MiB{when} "
          f"({mib(window.peak_delta)} MiB above start), ran {elapsed:.2f} s, "
          f"exit status {status}", file=sys.stderr)
    return status


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS + ("-h", "--help"):
        argv.insert(0, "run")  # python -m memlens [--line] script.py
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.precision < 0:
        parser.error("--precision must not be negative")
    try:
        if args.command == "run":
            return _run(args)
    except CommandError as exc:
        print(f"memlens: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main_exit():
    """Console-script entry point."""
    sys.exit(main())
