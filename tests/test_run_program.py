"""memlens run runs a program as `python` would, and never writes into
the program's files.

Each test runs a real program twice where it can, once with `python` and
once under `memlens run`, and compares what the program saw and did.
"""
import os
import resource
import signal
import subprocess
import sys
import textwrap

import pytest

from memlens.cli import datafile

from conftest import MEMLENS, run, write

PYTHON = [sys.executable]

pytestmark = pytest.mark.usefixtures("in_tmp")



def summary(stderr):
    lines = [line for line in stderr.splitlines()
             if line.startswith(b"memlens: ")]
    assert lines, stderr
    return lines[-1].decode(errors="replace")


def mem_lines(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data.endswith(b"\n"), data[-200:]
    return [line.split() for line in data.splitlines()
            if line.startswith(b"MEM ")]


# --------------------------------------------------------------------------
# Point 6: the program's descriptors are its own
# --------------------------------------------------------------------------

CLOSERANGE = """
    import os, sys, time

    top = int(sys.argv[1])
    os.closerange(3, top)
    closed = time.time()
    files = []
    for n in range(int(sys.argv[2])):
        # The program's own files take the lowest free numbers, and
        # dup'ed ones every number up to the count asked for.
        fd = os.open(f"own-{n}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        files.append(fd)
    first = files[0]
    while files[-1] < int(sys.argv[3]):
        files.append(os.dup(first))
    block = bytearray(b"x") * (64 * 2**20)
    for fd in files:
        os.write(fd, b"line %d\\n" % fd)
    del block
    for fd in files:
        os.close(fd)
    print(f"{closed:.6f}", *files)
"""


@pytest.mark.parametrize("top,files,fill", [
    (256, 5, 0),         # closerange(3, 256), then files of its own
    (None, 3, 700),      # every number closed, then reused up to 700
])
def test_program_closing_descriptors_keeps_its_files_intact(
        tmp_path, top, files, fill):
    if top is None:
        top = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fill + 64 > top:
            pytest.skip("the descriptor limit is too low for this test")
    prog = write(tmp_path / "closer.py", CLOSERANGE)
    result = run(*MEMLENS, "run", "-o", "data.dat", "--interval", "0.001",
                 str(prog), str(top), str(files), str(fill))
    assert result.returncode == 0, result.stderr
    closed, *fds = result.stdout.split()
    closed, fds = float(closed), [int(fd) for fd in fds]
    first = b"".join(b"line %d\n" % fd for fd in [fds[0]] + fds[files:])
    assert (tmp_path / "own-0.txt").read_bytes() == first
    for n in range(1, files):
        assert (tmp_path / f"own-{n}.txt").read_bytes() == b"line %d\n" % fds[n]
    assert "failed reads or writes" not in summary(result.stderr)
    samples = mem_lines(tmp_path / "data.dat")
    assert any(float(line[2]) > closed for line in samples)
    run_data = datafile.read(str(tmp_path / "data.dat"))
    assert run_data.samples == len(samples)
    assert not run_data.summary()["truncated"]


LINE_CLOSER = """
    import os

    @profile
    def work():
        os.closerange(3, 1024)
        # The lowest free numbers: where a descriptor memlens opened
        # before would have been.
        files = [os.open(f"own-{n}.txt", os.O_RDWR | os.O_CREAT)
                 for n in range(8)]
        block = bytearray(b"x") * (64 * 2**20)
        del block
        return files

    files = work()
    for fd in files:
        os.write(fd, b"line %d\\n" % fd)
    for fd in files:
        os.close(fd)
    print(*files)
"""


def test_line_profile_of_a_program_closing_descriptors(tmp_path):
    # The line profiler reads RSS through a statm descriptor of its own:
    # once the program takes that number, memlens must neither read the
    # program's file as statm nor close it when the profile ends.
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1024:
        pytest.skip("the descriptor limit is too low for this test")
    prog = write(tmp_path / "liner.py", LINE_CLOSER)
    result = run(*MEMLENS, "run", "--line", "-o", "data.dat", str(prog))
    assert result.returncode == 0, result.stderr
    # The program's line comes first, the line table after it.
    printed, table = result.stdout.split(b"\n", 1)
    assert b"bytearray" in table
    fds = [int(fd) for fd in printed.split()]
    assert len(fds) == 8
    for n, fd in enumerate(fds):
        assert (tmp_path / f"own-{n}.txt").read_bytes() == b"line %d\n" % fd
    assert "failed reads or writes" not in summary(result.stderr)


def test_readers_do_not_read_or_close_the_programs_descriptors(tmp_path):
    """In-process readings (rss, memory, peak windows, a sampler) whose
    cached descriptors the program closed and whose numbers it reused."""
    prog = write(tmp_path / "readers.py", """
        import os, resource, sys
        import memlens
        from memlens import _core

        before = memlens.rss()
        memlens.memory()
        sampler = memlens.Sampler(0.001).start()
        with memlens.peak():
            pass
        top = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        os.closerange(3, top)
        fd = os.open("own.txt", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        # A text that parses as a statm line: read as ours it would
        # give an RSS of two pages.
        os.write(fd, b"1 2 3 4 5 6 7\\n")
        fds = [fd] + [os.dup(fd) for _ in range(700)]
        now = memlens.rss()
        info = memlens.memory()
        with memlens.peak() as window:
            block = bytearray(b"x") * (32 * 2**20)
        del block
        sampler.stop()
        for n in fds:
            os.fstat(n)   # still open: nothing of ours closed them
        print(before, now, info.rss, info.peak, window.peak, sampler.peak)
        os.lseek(fd, 0, 0)
        print(os.read(fd, 100))
    """)
    result = run(*PYTHON, str(prog), text=True)
    assert result.returncode == 0, result.stderr
    numbers, content = result.stdout.splitlines()
    assert content == repr(b"1 2 3 4 5 6 7\n")
    before, now, rss, peak, window, sampled = map(int, numbers.split())
    for value in (now, rss, peak, window, sampled):
        assert value > before // 2, numbers
    assert window >= 32 * 2**20


# --------------------------------------------------------------------------
# Point 7: as python would
# --------------------------------------------------------------------------

POOL = """
    import multiprocessing, sys

    @profile
    def square(x):
        # Every form the builtin takes works in a child too.
        with profile:
            profile.enable_by_count()
            profile.disable_by_count()
        return x * x

    if __name__ == "__main__":
        context = multiprocessing.get_context(sys.argv[1])
        with context.Pool(2) as pool:
            print(pool.map(square, range(6)))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spawned_children_see_the_profile_builtin(tmp_path, method):
    prog = write(tmp_path / "pool.py", POOL)
    # A worker that dies of a NameError is respawned for ever: the
    # timeout turns that into a failure.
    result = run(*MEMLENS, "run", "-o", "data.dat", str(prog), method,
                 text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "[0, 1, 4, 9, 16, 25]"
    assert "NameError" not in result.stderr


ARGV = "import sys; print(sys.argv[1:])"


@pytest.mark.parametrize("args", [
    ["-o", "theirs.dat"], ["--help"], ["--", "x"], ["-m", "y", "-c", "z"],
    ["--interval", "5", "--line"]])
def test_arguments_after_c_code_belong_to_the_program(args):
    expected = run(*PYTHON, "-c", ARGV, *args, text=True)
    result = run(*MEMLENS, "run", "-o", "ours.dat", "-c", ARGV, *args,
                 text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout
    assert os.path.exists("ours.dat")
    assert not os.path.exists("theirs.dat")


@pytest.mark.parametrize("args", [["-o", "theirs.dat"], ["--help"],
                                  ["--", "-c", "x"]])
def test_arguments_after_m_module_belong_to_the_program(tmp_path, args):
    write(tmp_path / "argmod.py", ARGV.replace("; ", "\n"))
    expected = run(*PYTHON, "-m", "argmod", *args, text=True)
    result = run(*MEMLENS, "run", "-o", "ours.dat", "-m", "argmod", *args,
                 text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout
    assert not os.path.exists("theirs.dat")


@pytest.mark.parametrize("flag,what", [("-m", "a module name"),
                                       ("-c", "the code to run")])
def test_m_or_c_without_its_target_is_refused(flag, what):
    result = run(*MEMLENS, "run", flag, text=True)
    assert result.returncode == 2
    assert result.stderr == f"memlens: error: run: {flag} needs {what}\n"


PATH0 = """
    import sys
    import helper   # a module next to the program, or in the directory
    print(repr(sys.path[0]), helper.NAME)
"""


@pytest.mark.parametrize("how", ["-c", "-m", "script", "link"])
@pytest.mark.parametrize("launcher", ["module", "console"])
def test_sys_path_0_is_what_python_sets(tmp_path, how, launcher):
    sub = tmp_path / "sub"
    sub.mkdir()
    if how == "-c":
        (tmp_path / "helper.py").write_text("NAME = 'cwd'\n")
        target = ["-c", textwrap.dedent(PATH0)]
    elif how == "-m":
        (tmp_path / "helper.py").write_text("NAME = 'cwd'\n")
        write(tmp_path / "path0.py", PATH0)
        target = ["-m", "path0"]
    else:
        (sub / "helper.py").write_text("NAME = 'script dir'\n")
        write(sub / "path0.py", PATH0)
        target = ["sub/path0.py"]
        if how == "link":
            os.symlink(sub / "path0.py", tmp_path / "link.py")
            target = ["link.py"]
    expected = run(*PYTHON, *target, text=True)
    assert expected.returncode == 0, expected.stderr
    console = os.path.join(os.path.dirname(sys.executable), "memlens")
    if launcher == "console" and not os.path.exists(console):
        pytest.skip("no console script in this environment")
    memlens = [console] if launcher == "console" else MEMLENS
    result = run(*memlens, "run", "-o", "data.dat", *target, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout


def test_script_file_names_are_absolute_as_with_python(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "names.py", """
        import sys
        print(__file__, sys._getframe().f_code.co_filename, sys.argv[0])
    """)
    expected = run(*PYTHON, "sub/names.py", text=True)
    result = run(*MEMLENS, "run", "-o", "data.dat", "sub/names.py",
                 text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout


def test_sys_path_is_not_given_a_second_entry(tmp_path):
    """python puts one entry in front of sys.path, not memlens's and the
    program's."""
    write(tmp_path / "count.py", """
        import sys
        print(sys.path[1:])
    """)
    expected = run(*PYTHON, "count.py", text=True)
    result = run(*MEMLENS, "run", "-o", "data.dat", "count.py", text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout


def test_non_utf8_script_name_and_arguments(tmp_path):
    name = b"prog-\xff\xfe.py"
    arg = b"arg-\xe9\x80"
    path = os.path.join(os.fsencode(tmp_path), name)
    with open(path, "w") as f:
        f.write("import os, sys\n"
                "print([os.fsencode(a) for a in sys.argv[1:]])\n"
                "print(os.path.basename(os.fsencode(__file__)))\n")
    expected = run(*PYTHON, name, arg)
    assert expected.returncode == 0, expected.stderr
    result = run(*MEMLENS, "run", "-o", "data.dat", name, arg)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout
    assert b"exit status 0" in result.stderr
    with open("data.dat", "rb") as f:
        cmdline = f.readline()
    assert cmdline.startswith(b"CMDLINE ") and name in cmdline


def test_non_utf8_c_argument(tmp_path):
    arg = b"\xff"
    code = "import os, sys; print(os.fsencode(sys.argv[1]))"
    expected = run(*PYTHON, "-c", code, arg)
    result = run(*MEMLENS, "run", "-o", "data.dat", "-c", code, arg)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout


@pytest.mark.parametrize("closing", [
    "sys.stdout.close()", "sys.stderr.close()", "os.close(2)",
    "os.close(1); os.close(2)", "sys.stdout = sys.stderr = None"])
@pytest.mark.parametrize("status", [0, 3])
def test_program_closing_its_output_keeps_status_and_summary(
        tmp_path, closing, status):
    code = f"import os, sys\nprint('hello', flush=True)\n{closing}\n" \
           f"sys.exit({status})\n"
    expected = run(*PYTHON, "-c", code)
    assert expected.returncode == status
    result = run(*MEMLENS, "run", "-o", "data.dat", "-c", code)
    assert result.returncode == status, result.stderr
    assert result.stdout == expected.stdout
    assert f"exit status {status}" in summary(result.stderr)
    assert b"Traceback" not in result.stderr


def test_program_closing_its_output_still_gets_line_tables(tmp_path):
    prog = write(tmp_path / "tables.py", """
        import os, sys

        @profile
        def work():
            data = [0] * 100000
            return len(data)

        work()
        sys.stdout.close()
        os.close(2)
    """)
    result = run(*MEMLENS, "run", "--line", "-o", "data.dat", str(prog),
                 text=True)
    assert result.returncode == 0, result.stderr
    assert "data = [0] * 100000" in result.stdout
    assert "exit status 0" in result.stderr


SIGTERM = """
    import builtins, sys

    # Run with python too, where there is no such builtin.
    profile = getattr(builtins, "profile", lambda func: func)

    @profile
    def wait_for_the_end():
        print("ready", flush=True)
        sys.stdin.read()   # never returns: the parent sends SIGTERM

    wait_for_the_end()
"""


def terminated(command):
    """Runs `command` until it prints "ready", then sends it SIGTERM.
    (status, stderr)."""
    with subprocess.Popen(command, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as child:
        try:
            assert child.stdout.readline() == b"ready\n"
            child.send_signal(signal.SIGTERM)
            _, err = child.communicate(timeout=60)
        finally:
            child.kill()
            child.wait()
    return child.returncode, err


def test_sigterm_writes_summary_and_open_span_then_dies_of_it(tmp_path):
    prog = write(tmp_path / "term.py", SIGTERM)
    expected, _ = terminated(PYTHON + [str(prog)])
    status, err = terminated(MEMLENS + ["run", "-o", "data.dat", str(prog)])
    assert expected == -signal.SIGTERM
    assert status == expected, err
    assert "SIGTERM" in summary(err)
    with open("data.dat", "rb") as f:
        lines = f.read().splitlines()
    funcs = [line.split() for line in lines if line.startswith(b"FUNC ")]
    assert len(funcs) == 1 and funcs[0][1].endswith(b"wait_for_the_end")
    assert lines[-1].startswith((b"MEM ", b"FUNC "))


def test_sigterm_in_a_forked_child_kills_it_as_python_would(tmp_path):
    prog = write(tmp_path / "forker.py", """
        import os, signal
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            os._exit(0)   # not reached: SIGTERM kills the child
        _, status = os.waitpid(pid, 0)
        print(os.WIFSIGNALED(status), os.WTERMSIG(status))
    """)
    expected = run(*PYTHON, str(prog), text=True)
    result = run(*MEMLENS, "run", "-o", "data.dat", str(prog), text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout == "True 15\n"
    assert result.stderr.count("memlens: ") == 1


def test_in_process_main_leaves_nothing_installed(tmp_path):
    """memlens.cli.main called in-process: its signal handler, builtin,
    descriptors and multiprocessing hook are gone afterwards."""
    prog = write(tmp_path / "leftovers.py", """
        import builtins, os, signal, sys
        import memlens
        from memlens import cli

        def descriptors():
            return sorted(os.listdir("/proc/self/fd"))

        memlens.memory()   # its readers keep their files open: by design
        fds = descriptors()
        handler = signal.getsignal(signal.SIGTERM)
        finders = list(sys.meta_path)
        code = "assert callable(profile)"
        # Before multiprocessing is imported, then after.
        assert cli.main(["run", "-o", "data.dat", "-c", code]) == 0
        assert sys.meta_path == finders
        import multiprocessing.spawn as spawn
        prepare = spawn.get_preparation_data
        assert cli.main(["run", "-o", "data.dat", "-c", code]) == 0
        assert spawn.get_preparation_data is prepare
        assert sys.meta_path == finders
        import multiprocessing.forkserver as forkserver
        ensure = forkserver.ForkServer.ensure_running
        assert cli.main(["run", "-o", "data.dat", "-c", code]) == 0
        assert forkserver.ForkServer.ensure_running is ensure
        assert spawn.get_preparation_data is prepare
        assert sys.meta_path == finders
        assert signal.getsignal(signal.SIGTERM) is handler
        assert not hasattr(builtins, "profile")
        assert descriptors() == fds, (fds, descriptors())
        print("clean")
    """)
    result = run(*PYTHON, str(prog), text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "clean\n"
