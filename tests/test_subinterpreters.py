"""memlens in subinterpreters: refused at import, the main interpreter's
state untouched.

The allocator hooks, the tracing tables and the sampler are one per
process. A subinterpreter that could start tracing, then be destroyed,
would leave the main interpreter tracing with nothing recorded; its
stop_tracing() would stop the main interpreter's run. So the C core loads
only in the main interpreter. Each test runs in a child process: a
subinterpreter that went wrong could take the process down with it.
"""

import json
import subprocess
import sys
import textwrap

import pytest

try:
    import _testcapi
except ImportError:
    _testcapi = None

legacy = pytest.mark.skipif(
    _testcapi is None or not hasattr(_testcapi, "run_in_subinterp"),
    reason="needs _testcapi.run_in_subinterp")

#: The main interpreter's side: runs `code` in a subinterpreter sharing
#: its GIL (`legacy`) or in an isolated one with its own (3.12+), and
#: gives back what the code wrote to `out`.
HELPERS = textwrap.dedent('''
    import json, os, sys, tempfile, textwrap

    def in_subinterpreter(code, isolated=False):
        fd, path = tempfile.mkstemp()
        os.close(fd)
        code = (f"OUT = {path!r}\\n"
                "def report(x):\\n"
                "    with open(OUT, 'w') as f:\\n"
                "        f.write(x)\\n"
                + textwrap.dedent(code))
        try:
            if not isolated:
                import _testcapi
                _testcapi.run_in_subinterp(code)
            else:
                try:
                    import _interpreters as interpreters
                    interp = interpreters.create("isolated")
                except ImportError:
                    import _xxsubinterpreters as interpreters
                    interp = interpreters.create(isolated=True)
                try:
                    interpreters.run_string(interp, code)
                finally:
                    interpreters.destroy(interp)
            with open(path) as f:
                return f.read()
        finally:
            os.unlink(path)

    def refused(code="import memlens\\nmemlens.start_tracing()\\n"):
        """What the subinterpreter got: the text of an ImportError, or
        'ran' when `code` went through."""
        return in_subinterpreter(
            "try:\\n" + textwrap.indent(code, "    ")
            + "except ImportError as e:\\n"
            "    report('ImportError: ' + str(e))\\n"
            "else:\\n"
            "    report('ran')\\n")
''')


def run(code):
    """Runs `code` after HELPERS in a fresh interpreter; returns the JSON
    object it printed last."""
    proc = subprocess.run([sys.executable, "-c", HELPERS + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@legacy
def test_subinterpreter_cannot_leave_main_tracing_after_it_is_gone():
    out = run('''
        got = refused()
        import memlens
        from memlens import _core
        after = memlens.is_tracing()
        state = _core.state()
        # The main interpreter traces as ever.
        memlens.start_tracing()
        block = bytearray(1 << 20)
        stats = memlens.take_snapshot().statistics()
        memlens.stop_tracing()
        print(json.dumps({"got": got, "after": after,
                          "hooks": state["hooks_installed"],
                          "users": state["hooks_users"],
                          "top": stats[0].size}))
    ''')
    assert out["got"].startswith("ImportError: memlens cannot be used in a "
                                 "subinterpreter")
    assert out["after"] is False
    assert out["hooks"] is False and out["users"] == 0
    assert out["top"] >= 1 << 20


@legacy
def test_subinterpreter_stop_tracing_leaves_main_tracing():
    out = run('''
        import memlens
        memlens.start_tracing()
        got = refused("import memlens\\nmemlens.stop_tracing()\\n")
        still = memlens.is_tracing()
        block = bytearray(1 << 20)
        stats = memlens.take_snapshot().statistics()
        memlens.stop_tracing()
        print(json.dumps({"got": got, "still": still,
                          "top": stats[0].size if stats else 0}))
    ''')
    assert out["got"].startswith("ImportError: memlens cannot be used")
    assert out["still"] is True
    assert out["top"] >= 1 << 20


@legacy
def test_subinterpreter_is_refused_every_entry_point_after_main_loaded():
    # Main has loaded the core first: the subinterpreter's import is still
    # refused, and nothing of main's is disturbed.
    out = run('''
        import memlens
        from memlens import _core
        with memlens.measure():
            pass
        got = [refused("import memlens\\nwith memlens.measure():\\n"
                       "    pass\\n"),
               refused("import memlens\\n"
                       "memlens.LineProfiler(alloc=True).enable()\\n"),
               refused("from memlens import _core\\n")]
        print(json.dumps({"got": got, "state": _core.state()}))
    ''')
    assert all(g.startswith("ImportError: memlens cannot be used")
               for g in out["got"]), out["got"]
    assert not out["state"]["hooks_installed"]
    assert out["state"]["hooks_users"] == 0


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="isolated subinterpreters arrived in 3.12")
def test_isolated_subinterpreter_refuses_the_core_at_import():
    out = run('''
        got = in_subinterpreter(
            "try:\\n"
            "    from memlens import _core\\n"
            "except ImportError as e:\\n"
            "    report('ImportError: ' + str(e))\\n"
            "else:\\n"
            "    report('ran')\\n", isolated=True)
        import memlens
        print(json.dumps({"got": got, "tracing": memlens.is_tracing()}))
    ''')
    assert out["got"].startswith("ImportError:")
    assert "subinterpreter" in out["got"]
    assert out["tracing"] is False
