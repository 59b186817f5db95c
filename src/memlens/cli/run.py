"""``memlens run``: compile the program, open the data file, start the
recorder, put the ``profile`` builtin in place, run the program as python
would and print the summary.

The program's own errors and exit status are shown and returned as python
would; memlens's frames are left out of its tracebacks.
"""

import builtins
import os
import sys
import threading
import time
import types

from memlens._errors import UsageError
from memlens._report import mib


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


def _check_options(args):
    if args.alloc and not args.line:
        raise UsageError("run: --alloc goes with --line")
    if not args.trace:
        for flag, value in (("--native", args.native or None),
                            ("--frames", args.frames),
                            ("--sample-bytes", args.sample_bytes)):
            if value is not None:
                raise UsageError(f"run: {flag} goes with --trace")
        return
    from memlens._tracing import MAX_FRAMES, MAX_SAMPLE_BYTES

    if args.frames is None:
        args.frames = 10
    if args.sample_bytes is None:
        args.sample_bytes = 0
    if not 1 <= args.frames <= MAX_FRAMES:
        raise UsageError(f"run: --frames must be between 1 and "
                         f"{MAX_FRAMES}: {args.frames}")
    if not 0 <= args.sample_bytes <= MAX_SAMPLE_BYTES:
        raise UsageError(f"run: --sample-bytes must be between 0 and "
                         f"{MAX_SAMPLE_BYTES}: {args.sample_bytes}")


def _open_data_file(output):
    """(path, fd) of the new data file, or UsageError naming it."""
    from memlens.cli.record import open_output

    try:
        return open_output(output)
    except OSError as exc:
        name = exc.filename or output
        raise UsageError(f"cannot write the data file {name!r}: "
                         f"{exc.strerror or exc}") from None


def _start_recorder(args, fd, path, err):
    """The native recorder writing to `fd` (closed here: the recorder
    holds its own duplicate), with the live meter on `err` when that is a
    terminal that wants it."""
    from memlens.cli.record import recorder

    try:
        meter = (not args.no_meter and err.isatty()
                 and os.environ.get("TERM") != "dumb")
        # --include-children gives each descendant its CHLD series as
        # well; -M alone keeps MEM to this process.
        return recorder(fd, args.interval, path=os.path.abspath(path),
                        children=args.include_children,
                        multiprocess=args.multiprocess,
                        meter_fd=err.fd if meter else -1)
    finally:
        os.close(fd)


def run(args):
    """``memlens run``: the program's exit status."""
    _check_options(args)
    try:
        label, cmdline, body, argv = _compile_target(args)
    except SyntaxError as exc:
        import traceback

        traceback.print_exception(type(exc), exc, None)
        return 1
    path, fd = _open_data_file(args.output)
    tracer = _open_trace(args, path, fd, cmdline) if args.trace else None
    # Taken now, before the program can close its own.
    out, err = _Output(sys.stdout), _Output(sys.stderr)
    try:
        rec = _start_recorder(args, fd, path, err)
        return _Run(args, label, path, rec, out, err, tracer).execute(
            cmdline, body, argv)
    finally:
        out.close()
        err.close()


def _open_trace(args, path, fd, cmdline):
    """The TraceRecorder of --trace, its file's first version written
    beside the data file; else UsageError naming it (the data file, just
    made, is removed)."""
    from shlex import quote

    from memlens.cli.tracefile import TraceRecorder, trace_path

    tracer = TraceRecorder(
        trace_path(path), {"datafile": os.path.basename(path),
                           "command": " ".join(quote(a) for a in cmdline)},
        args.frames, args.sample_bytes, args.native)
    try:
        tracer.prepare()
    except OSError as exc:
        os.close(fd)
        try:
            os.remove(path)
        except OSError:
            pass
        raise UsageError(f"cannot write the trace file {tracer.path!r}: "
                         f"{exc.strerror or exc}") from None
    return tracer


def _write_head(rec, cmdline, args):
    """The CMDLINE line, and the MODE line when descendants are
    followed."""
    from shlex import quote

    from memlens.cli.record import mode_line

    text = " ".join(quote(a) for a in cmdline)
    rec.write(("CMDLINE " + text.replace("\r", " ").replace("\n", "\\n")
               + "\n").encode("utf-8", "surrogateescape")
              + mode_line(args.include_children, args.multiprocess))


def _run_profile(args, rec):
    """The ``profile`` builtin of the run: memory_profiler's profiler
    object (ProfileBuiltin), each call it decorates a FUNC span
    (RunProfile), profiled line by line under --line."""
    from memlens.cli.record import RunProfile
    from memlens.lineprof.builtin import ProfileBuiltin

    return ProfileBuiltin(RunProfile(rec), line=args.line, alloc=args.alloc)


class _Run:
    """One run of the program under the recorder `rec`. The tables go to
    `out`, the summary to `err` (_Output)."""

    def __init__(self, args, label, path, rec, out, err, tracer=None):
        self.args, self.label, self.path = args, label, path
        self.rec, self.out, self.err = rec, out, err
        self.tracer = tracer
        self.traced = None  # the peak Snapshot, or the OSError
        self.installed = None

    def execute(self, cmdline, body, argv):
        """Runs `body` as the program with `argv`; the exit status."""
        from memlens._readings import peak

        _write_head(self.rec, cmdline, self.args)
        self.run_profile = _run_profile(self.args, self.rec)
        self.pid = os.getpid()
        self.window = peak()
        self.start = time.monotonic()
        self.installed = _Installed(self.run_profile)
        sys.argv = argv
        try:
            status, error = self._run_body(body)
        finally:
            self.installed.remove()
            if os.getpid() == self.pid:
                self._finish_trace()
        if os.getpid() != self.pid:
            # A child the program forked, leaving through here: the parent
            # reports.
            if error is not None:
                _print_program_error(error, self.err)
            return status if error is None else 1
        # The meter is cleared now: what follows starts on a clean line.
        if error is not None:
            _print_program_error(error, self.err)
        self._report(f"exit status {status}")
        return status

    def _run_body(self, body):
        """(exit status, the program's error or None)."""
        status, error = 0, None
        with self.rec, self.window:
            try:
                self.installed.handle_sigterm(self._on_sigterm)
                if self.tracer is not None:
                    self.tracer.start()
                body()
                _join_program_threads()
            except SystemExit as exc:
                status = _exit_status(exc, self.err)
            except KeyboardInterrupt:
                status = 130
            except BaseException as exc:
                status, error = 1, exc
        return status, error

    def _report(self, how):
        """Prints the tables and the summary line; `how` the run ended."""
        rec, window = self.rec, self.window
        elapsed = time.monotonic() - self.start
        self.run_profile.print_stats(self.out, self.args.precision)
        rec.close()
        when = "" if rec.peak_time is None else f" at {rec.peak_time:.2f} s"
        if self.args.include_children and rec.peak is not None:
            what = (f"peak {mib(rec.peak)} MiB with children{when} (this "
                    f"process {mib(window.peak)} MiB)")
        else:
            what = (f"peak {mib(window.peak)} MiB{when} "
                    f"({mib(window.peak_delta)} MiB above start)")
        lost = (f", {rec.failures} failed reads or writes" if rec.failures
                else "")
        self.err.write(f"memlens: {self.label}: {what}, ran {elapsed:.2f} "
                       f"s, {how}; data in {self.path}{lost}\n")
        if self.tracer is not None:
            self._report_trace()

    def _finish_trace(self):
        """The trace's end: its final version written, tracing stopped."""
        tracer = self.tracer
        if tracer is None or self.traced is not None:
            return
        try:
            self.traced = tracer.finish()
        except OSError as exc:
            self.traced = exc

    def _report_trace(self):
        """The top lines at the peak, below the summary."""
        tracer = self.tracer
        if isinstance(self.traced, OSError):
            exc = self.traced
            self.err.write(f"memlens: error: cannot write the trace file "
                           f"{tracer.path!r}: {exc.strerror or exc}\n")
            return
        if self.traced is None:
            return
        peak = self.traced
        lost = (f" ({tracer.failures} failed updates)" if tracer.failures
                else "")
        self.err.write(f"memlens: at the peak of traced memory; trace in "
                       f"{tracer.path}{lost}\n{peak.format(limit=10)}\n")

    def _on_sigterm(self, signum, frame):
        """SIGTERM: the open spans and the summary, then death by the
        signal, as python's own default would die."""
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if os.getpid() == self.pid:
            self.installed.remove()
            self.run_profile.end_open_spans()
            self._finish_trace()
            self.window.__exit__(None, None, None)
            self._report("killed by SIGTERM")
            self.out.close()
            self.err.close()
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(128 + signal.SIGTERM)  # SIGTERM was blocked
