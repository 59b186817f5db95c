import importlib.util
import os
import shlex
import subprocess
import sys
import sysconfig
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["pytester"]

#: The small C extensions the tests build.
NATIVE = Path(__file__).resolve().parent / "native"

MiB = 1024 * 1024

#: Set by `make asan` and `make valgrind`: the allocator there keeps freed
#: memory in quarantine, so RSS figures do not move as the kernel's would.
SANITIZED = bool(os.environ.get("MEMLENS_SANITIZED"))

figures = pytest.mark.skipif(
    SANITIZED, reason="RSS figures are meaningless under a sanitizer")

def pytest_collection_modifyitems(session, config, items):
    """The Dask tests run last. distributed keeps threads of its own (its
    offload executor) for the life of the process that ran a client:
    after them, every fork would be a fork of a multi-threaded process
    (Python 3.15 warns of it, and the fork tests fail on the warning)."""
    items.sort(key=lambda item: item.module.__name__ == "test_dask"
               if item.module is not None else False)


#: The command line, as a program runs it.
MEMLENS = [sys.executable, "-m", "memlens"]


def run(*args, **kwargs):
    """A command's CompletedProcess, its output captured, in two minutes
    at most."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("timeout", 120)
    return subprocess.run(list(args), **kwargs)


def write(path, source):
    """`source`, dedented, written to `path`; the path."""
    import textwrap

    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """The test in its own directory, where data files land; plots drawn
    off screen. For the command line's tests (``usefixtures``)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


class counting_hooks:
    """Holds memlens's exact allocator hooks for a block, as measure()
    does (they size each free from a table of live blocks), and reads their
    allocated and freed counters around it."""

    def __init__(self, exact=True):
        self.exact = exact

    def __enter__(self):
        from memlens import _core

        _core._hooks_acquire(self.exact)
        self.start = _core.alloc_counters()
        return self

    def __exit__(self, *exc):
        from memlens import _core

        self.end = _core.alloc_counters()
        _core._hooks_release(self.exact)

    @property
    def allocated(self):
        return self.end[0] - self.start[0]

    @property
    def freed(self):
        return self.end[1] - self.start[1]


def fork_beside_threads():
    """os.fork() while memlens's native thread runs, on purpose: these
    tests are about that very case. From 3.12 Python warns of forking a
    process with other threads (3.15 sees native ones too); only that
    warning is silenced, here."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r"This process \(pid=\d+\) is multi-threaded, use of "
            r"fork\(\) may lead to deadlocks in the child",
            DeprecationWarning)
        return os.fork()


def in_threads(target, args=(), n=4):
    """Runs `target(*args)` in `n` threads at once and waits for them."""
    threads = [threading.Thread(target=target, args=args) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Fail any test that leaves a thread, a trace or profile function, an
    allocator hook or an open peak window behind."""
    from memlens import _core

    threads = set(threading.enumerate())
    trace, profile = sys.gettrace(), sys.getprofile()
    yield
    problems = []
    state = _core.state()
    if state["hooks_installed"] or state["hooks_users"]:
        problems.append(f"allocator hooks left installed: {state}")
    if state["sampler_threads"]:
        problems.append(f"{state['sampler_threads']} sampler thread(s) left")
    if state["open_windows"]:
        problems.append(f"{state['open_windows']} peak window(s) left open")
    if state["line_profiling"]:
        problems.append("line profiling left running")
    if state["quiet"]:
        problems.append(f"memlens's quiet left raised ({state['quiet']})")
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is not None:
        tools = [i for i in range(6) if monitoring.get_tool(i) == "memlens"]
        if tools:
            problems.append(f"sys.monitoring tool id(s) left: {tools}")
    if sys.gettrace() is not trace:
        problems.append(f"trace function left: {sys.gettrace()!r}")
    if sys.getprofile() is not profile:
        problems.append(f"profile function left: {sys.getprofile()!r}")
    extra = [t for t in threading.enumerate() if t not in threads]
    if extra:
        problems.append(f"threads left running: {extra}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def proc_dir(tmp_path):
    """Point the C readers at a folder of our own; restored afterwards."""
    from memlens import _core

    _core._set_proc_dir(str(tmp_path))
    try:
        yield tmp_path
    finally:
        _core._set_proc_dir("")


LINE_BACKENDS = ["settrace"] + (
    ["monitoring"] if sys.version_info >= (3, 12) else []) + (
    ["instrument"] if sys.version_info[:2] == (3, 11) else [])


@pytest.fixture(params=LINE_BACKENDS)
def line_backend(request, monkeypatch):
    """Run the test once per line-tracer backend this Python has."""
    monkeypatch.setenv("MEMLENS_LINE_BACKEND", request.param)
    return request.param


def spike(nbytes, hold=0.0):
    """Make RSS rise by about `nbytes` (pages touched), hold, free."""
    import time

    block = np.ones(nbytes // 8)
    if hold:
        time.sleep(hold)
    del block


@pytest.fixture(scope="session")
def touchmem_path(tmp_path_factory):
    """tests/native/touchmem.c built as an extension of this interpreter:
    memory straight from malloc and mmap, never through Python's
    allocators. The path of the built module."""
    out = tmp_path_factory.mktemp("touchmem")
    target = out / ("touchmem" + sysconfig.get_config_var("EXT_SUFFIX"))
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    subprocess.run(
        cc + ["-shared", "-fPIC", "-O1",
              "-I" + sysconfig.get_paths()["include"],
              str(NATIVE / "touchmem.c"), "-o", str(target)],
        check=True, capture_output=True)
    return target


@pytest.fixture(scope="session")
def touchmem(touchmem_path):
    """The touchmem extension, imported."""
    spec = importlib.util.spec_from_file_location("touchmem", touchmem_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
