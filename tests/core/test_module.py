"""module.c: memlens._core itself: multi-phase initialisation, its heap
types, and state(), which reports everything memlens has running."""
import importlib.util
import subprocess
import sys

import pytest

import memlens
from memlens import _core

AT_REST = {"hooks_installed": False, "hooks_users": 0, "sampler_threads": 0,
           "open_windows": 0, "line_profiling": 0, "quiet": 0}


def test_state_reports_nothing_running_at_rest():
    assert _core.state() == AT_REST


def test_state_follows_each_thing_started_and_stopped():
    _core._hooks_acquire()
    assert _core.state()["hooks_installed"]
    assert _core.state()["hooks_users"] == 1
    _core._hooks_release()
    with memlens.Sampler(interval=0.01):
        assert _core.state()["sampler_threads"] == 1
    with memlens.peak(), memlens.peak():
        assert _core.state()["open_windows"] == 2
    _core._line_begin(False)
    assert _core.state()["line_profiling"] == 1
    _core._line_end(False)
    assert _core._hooks_quiet(True) == 1
    assert _core.state()["quiet"] == 1
    assert _core._hooks_quiet(False) == 0
    assert _core.state() == AT_REST


def test_state_takes_no_arguments():
    with pytest.raises(TypeError):
        _core.state(1)


def test_types_are_heap_types_of_the_module():
    for name in ("Sampler", "PeakWindow", "Recorder"):
        tp = getattr(_core, name)
        assert tp.__module__ == "memlens._core"
        assert tp.__flags__ & (1 << 9)  # Py_TPFLAGS_HEAPTYPE


def test_a_second_module_object_gets_types_of_its_own():
    # Multi-phase initialisation: executing the extension again makes a new
    # module with new types; both work side by side.
    spec = importlib.util.find_spec("memlens._core")
    again = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(again)
    assert again is not _core
    assert again.Sampler is not _core.Sampler
    with again.Sampler(interval=0.01) as s:
        pass
    assert s.count >= 1 and isinstance(s, again.Sampler)
    assert again.rss() > 0 and again.state() == _core.state()


def test_the_module_imports_cleanly_in_a_fresh_interpreter_and_exits():
    # No hook, thread or window at import; none left to hang the exit.
    code = ("from memlens import _core\n"
            "s = _core.state()\n"
            "assert not s['hooks_installed'] and not s['sampler_threads']\n"
            "w = _core.Sampler(0.001); w.start()\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ok\n"
