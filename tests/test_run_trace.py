"""memlens run --trace: the peak and end snapshots beside the data file,
written as the run goes, read back by report and plot."""
import json
import os
import signal

import pytest

from memlens.cli import tracefile

from conftest import MEMLENS, MiB, run, write

pytestmark = pytest.mark.usefixtures("in_tmp")


def error_line(result):
    """The one line of a bad input: exit 2, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("memlens: error: "), lines
    return lines[0]


# A peak of 24 MiB at line 5, freed; 6 MiB alive at the end, line 8.
PEAK_THEN_LESS = """\
    def build():
        return [bytearray(1024) for _ in range(8 * 1024)]

    def peak():
        big = bytearray(24 * 1024 * 1024)
        return len(big) + len(build())

    peak()
    kept = bytearray(6 * 1024 * 1024)
"""


def traced_run(tmp_path, *flags):
    script = write(tmp_path / "prog.py", PEAK_THEN_LESS)
    result = run(*MEMLENS, "run", "--trace", *flags, "-o", "prog.dat",
                 str(script))
    assert result.returncode == 0, result.stderr
    return script, result


def test_trace_file_holds_peak_and_end_snapshots(tmp_path):
    script, _ = traced_run(tmp_path, "--frames", "3")
    assert os.path.exists("prog.dat") and os.path.exists("prog.dat.trace")
    trace = tracefile.load("prog.dat.trace")
    assert trace.final and trace.meta["nframes"] == 3
    assert trace.meta["datafile"] == "prog.dat"
    peak = {s.lineno: s.size for s in trace.peak.top(None)
            if s.filename == str(script)}
    end = {s.lineno: s.size for s in trace.end.top(None)
           if s.filename == str(script)}
    assert 24 * MiB <= peak[5] < 24 * MiB + 4096
    assert 8 * MiB <= peak[2] < 10 * MiB
    # (A few hundred bytes of a definition's line may stay: 3.9 puts
    # code objects there.)
    assert peak.get(9, 0) < 4096
    assert end.get(5, 0) < 4096 and end.get(2, 0) < 4096
    assert 6 * MiB <= end[9] < 6 * MiB + 4096
    # Tracebacks are the program's: peak() called from line 8, no frame
    # of memlens's around it, at most 3 frames.
    tb = next(s.traceback for s in trace.peak.top(None, key="traceback")
              if s.lineno == 5)
    assert [(f.filename, f.lineno) for f in tb] == [(str(script), 5),
                                                    (str(script), 8)]
    assert all(len(s.traceback) <= 3
               for s in trace.peak.top(None, key="traceback"))


def test_top_lines_at_the_peak_printed_below_the_summary(tmp_path):
    script, result = traced_run(tmp_path)
    err = result.stderr.decode()
    summary = err.index(f"memlens: {script}: peak")
    table = err.index("Top 10 lines", summary)
    first = err[table:].splitlines()[1]
    assert first.startswith(f"#1: {script}:5: ")
    assert "big = bytearray(24 * 1024 * 1024)" in err[table:]
    second = err[table:].splitlines()[3]
    assert second.startswith(f"#2: {script}:2: ")


def test_report_and_plot_read_the_trace(tmp_path):
    script, _ = traced_run(tmp_path)
    text = run(*MEMLENS, "report", "prog.dat")
    assert text.returncode == 0, text.stderr
    out = text.stdout.decode()
    assert "trace      prog.dat.trace" in out
    at_peak = out[out.index("at the peak"):out.index("at the end")]
    assert at_peak.splitlines()[1].split()[:2] == ["#1", f"{script}:5"]
    data = run(*MEMLENS, "report", "--json", "--trace", "prog.dat")
    assert data.returncode == 0, data.stderr
    trace = json.loads(data.stdout)["trace"]
    assert trace["final"] is True
    top = trace["peak"]["top"][0]
    assert (top["filename"], top["lineno"]) == (str(script), 5)
    assert top["line"] == "big = bytearray(24 * 1024 * 1024)"
    assert trace["end"]["top"][0]["lineno"] == 9
    assert 0 <= trace["peak_time_s"] <= json.loads(data.stdout)[
        "duration_s"] + 1
    pytest.importorskip("matplotlib")
    plot = run(*MEMLENS, "plot", "--trace", "prog.dat", "-o", "p.svg")
    assert plot.returncode == 0, plot.stderr
    # matplotlib keeps each text as an SVG comment.
    assert "traced peak, seen at" in (tmp_path / "p.svg").read_text()


def test_trace_of_a_killed_program_keeps_its_last_peak(tmp_path):
    """SIGKILL, as the OOM killer sends it: the program waits until the
    trace on disk shows its peak, then kills itself (memlens runs it in
    its own process)."""
    script = write(tmp_path / "killed.py", """\
        import json, os, signal, time

        def hold():
            return bytearray(32 * 1024 * 1024)

        big = hold()
        while True:
            with open("killed.dat.trace") as f:
                text = f.read()
            if '"snapshot":"peak"' in text and text.endswith("\\n"):
                rows = [json.loads(line) for line in text.splitlines()]
                if any(isinstance(r, list) and r[0] != "F"
                       and r[0] >= 32 * 1024 * 1024 for r in rows):
                    break
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = run(*MEMLENS, "run", "--trace", "-o", "killed.dat",
                 str(script), timeout=60)
    assert result.returncode == -signal.SIGKILL
    trace = tracefile.load("killed.dat.trace")
    assert not trace.final and trace.end is None
    top = trace.peak.top(1)[0]
    assert (top.filename, top.lineno) == (str(script), 4)
    assert top.size >= 32 * MiB
    report = run(*MEMLENS, "report", "killed.dat")
    assert report.returncode == 0, report.stderr
    out = report.stdout.decode()
    assert "the run did not end" in out
    assert f"#1  {script}:4" in out


NATIVE = """\
    import sqlite3
    import numpy as np

    FILL = ("with recursive c(n) as (select 1 union all select n + 1 "
            "from c where n < 4096) insert into t select randomblob(1000) "
            "from c")
    db = sqlite3.connect(":memory:")
    db.execute("create table t(x)")
    db.execute(FILL)
    array = np.ones(3 * 1024 * 1024)
"""


def test_native_trace_shows_numpy_and_library_malloc_lines(tmp_path):
    """SQLite's pages come from malloc in its own library: only the
    native hooks see them."""
    pytest.importorskip("numpy")
    script = write(tmp_path / "nat.py", NATIVE)
    for flags in ([], ["--native"]):
        result = run(*MEMLENS, "run", "--trace", *flags, "-o", "nat.dat",
                     str(script))
        assert result.returncode == 0, result.stderr
        trace = tracefile.load("nat.dat.trace")
        assert trace.meta["native"] == bool(flags) == trace.end.native
        end = {s.lineno: s for s in trace.end.top(None)
               if s.filename == str(script)}
        assert 24 * MiB <= end[10].size < 25 * MiB
        if not flags:
            assert 9 not in end or end[9].size < MiB
            continue
        # SQLite's pages, 4 MiB: asked for without the GIL, and some
        # changes may be lost (the snapshot says how many), so less.
        assert 2 * MiB <= end[9].native_size <= end[9].size < 5 * MiB
        assert f"{script}:9: " in result.stderr.decode()  # at the peak


def test_native_without_trace_is_refused(tmp_path):
    script = write(tmp_path / "p.py", "x = 1\n")
    line = error_line(run(*MEMLENS, "run", "--native", str(script)))
    assert line == "memlens: error: run: --native goes with --trace"
    line = error_line(run(*MEMLENS, "run", "--trace", "--frames", "0",
                          str(script)))
    assert "--frames must be between 1 and 100" in line


# --------------------------------------------------------------------------
# Bad input: one line, exit status 2
# --------------------------------------------------------------------------

def plain_data_file(tmp_path):
    script = write(tmp_path / "p.py", "x = bytearray(1000)\n")
    assert run(*MEMLENS, "run", "-o", "plain.dat",
               str(script)).returncode == 0


def test_data_file_without_trace_when_asked(tmp_path):
    plain_data_file(tmp_path)
    assert run(*MEMLENS, "report", "plain.dat").returncode == 0
    for command in (["report", "--trace"], ["report", "--json", "--trace"],
                    ["plot", "--trace"]):
        line = error_line(run(*MEMLENS, *command, "plain.dat"))
        assert line == ("memlens: error: plain.dat: no trace beside this "
                        "data file (no plain.dat.trace); record one with "
                        "`memlens run --trace`")
    with pytest.raises(tracefile.TraceFileError):
        tracefile.load_for("plain.dat")
    assert tracefile.load_for("plain.dat", required=False) is None


@pytest.mark.parametrize("damage, place", [
    (lambda lines: lines[:1] + ['["F","x.py",'] + lines[2:],
     ":2: not JSON ("),
    (lambda lines: lines[:-3], ": cut short: the end snapshot has"),
    (lambda lines: ['{"format":"memlens-trace","version":9}'] + lines[1:],
     ":1: trace format version 9: this memlens reads version 1"),
    (lambda lines: ["hello"], ":1: not JSON"),
    (lambda lines: lines[:-1] + ['[1,2,3]'],
     ": bad row: expected [size, count, allocated, allocations, native, "
     "resident, frame, ...]"),
    (lambda lines: lines[:-1] + ['[1,1,1,1,0,1,99999]'],
     ": frame 99999 is not defined before this line"),
])
def test_corrupt_trace_file_names_the_place(tmp_path, damage, place):
    traced_run(tmp_path)
    with open("prog.dat.trace") as f:
        lines = f.read().splitlines()
    n = len(lines)
    with open("prog.dat.trace", "w") as f:
        f.write("\n".join(damage(lines)) + "\n")
    for command in (["report"], ["report", "--json"], ["plot"]):
        line = error_line(run(*MEMLENS, *command, "prog.dat"))
        assert line.startswith("memlens: error: prog.dat.trace:"), line
        assert place in line, line
    if place.startswith(": bad row") or place.startswith(": frame"):
        assert f"prog.dat.trace:{n}: " in line


def test_trace_file_cut_without_newline(tmp_path):
    traced_run(tmp_path)
    with open("prog.dat.trace", "rb") as f:
        data = f.read()
    with open("prog.dat.trace", "wb") as f:
        f.write(data[:-5])
    line = error_line(run(*MEMLENS, "report", "prog.dat"))
    n = data[:-5].count(b"\n") + 1
    assert line == (f"memlens: error: prog.dat.trace:{n}: cut short (no "
                    f"newline at the end)")


def test_unwritable_trace_location(tmp_path):
    script = write(tmp_path / "p.py", "print('ran')\n")
    os.mkdir("out.dat.trace")  # a directory where the trace would go
    result = run(*MEMLENS, "run", "--trace", "-o", "out.dat", str(script))
    line = error_line(result)
    assert line.startswith("memlens: error: cannot write the trace file "
                           "'out.dat.trace': ")
    assert b"ran" not in result.stdout
    assert not os.path.exists("out.dat")
    assert os.listdir(".") == ["out.dat.trace", "p.py"] or sorted(
        os.listdir(".")) == ["out.dat.trace", "p.py"]


# --------------------------------------------------------------------------
# memlens flamegraph: the trace as one HTML page
# --------------------------------------------------------------------------

def test_flamegraph_writes_the_page_of_the_trace(tmp_path):
    traced_run(tmp_path)
    result = run(*MEMLENS, "flamegraph", "prog.dat", "-o", "prog.html")
    assert result.returncode == 0, result.stderr
    assert "flame graph saved to prog.html" in result.stderr.decode()
    page = (tmp_path / "prog.html").read_text(encoding="utf-8")
    trace = tracefile.load("prog.dat.trace")
    # The page of the trace's peak and end, with the run's timeline.
    from memlens.cli import datafile

    timeline = datafile.read("prog.dat")
    expected = trace.peak.to_html(end=trace.end, timeline=timeline,
                                  title=f"memlens: {timeline.cmdline}")
    assert page == expected
    assert "big = bytearray(24 * 1024 * 1024)" in page
    # The data file's name with .html by default.
    os.remove("prog.html")
    result = run(*MEMLENS, "flamegraph", "prog.dat")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "prog.html").read_text(encoding="utf-8") == page


def test_flamegraph_bad_input_is_one_line(tmp_path):
    plain_data_file(tmp_path)
    line = error_line(run(*MEMLENS, "flamegraph", "plain.dat"))
    assert "no trace beside this data file" in line
    traced_run(tmp_path)
    with open("prog.dat.trace", "a") as f:
        f.write("{not json\n")
    line = error_line(run(*MEMLENS, "flamegraph", "prog.dat"))
    assert line.startswith("memlens: error: prog.dat.trace:")
    traced_run(tmp_path)
    line = error_line(run(*MEMLENS, "flamegraph", "prog.dat", "-o",
                          str(tmp_path / "missing" / "x.html")))
    assert "x.html" in line
    assert not os.path.exists(tmp_path / "missing")
