"""The data-file reader: what it reads back, what it refuses, and that
``memlens report`` and ``peak`` read a file in one pass in memory that does
not grow with its samples. Property tests (hypothesis) write files of
random records, cut them and fill them with garbage."""
import io
import os
import tracemalloc
from contextlib import redirect_stderr, redirect_stdout

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memlens import cli
from memlens.cli import datafile
from memlens.cli.datafile import DataFileError

PROPERTIES = settings(max_examples=150, deadline=None)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    return str(path)


def records(path):
    return list(datafile.records(path))


# --------------------------------------------------------------------------
# Time never goes backwards
# --------------------------------------------------------------------------

@pytest.mark.parametrize("content, line, what", [
    ("MEM 1 10.5\nMEM 1 10.4\n", 2, "time goes backwards: MEM at 10.4 "
                                    "after 10.5"),
    ("CMDLINE x\nMEM 1 10\nMEM 2 11\nMEM 3 9\nMEM 4 12\n", 4,
     "time goes backwards: MEM at 9.0 after 11.0"),
    ("CHLD 7 1 10\nCHLD 8 1 5\nCHLD 7 1 9\n", 3,
     "time goes backwards: CHLD 7 at 9.0 after 10.0"),
    ("MEM 1 10\nFUNC f 1 12 2 11\n", 2,
     "FUNC 'f' ends (11.0) before it starts (12.0)"),
])
def test_time_going_backwards_is_refused_with_the_line(tmp_path, content,
                                                       line, what):
    path = write(tmp_path / "back.dat", content)
    for read in (datafile.read, datafile.summarise, records):
        with pytest.raises(DataFileError) as info:
            read(path)
        assert str(info.value) == f"{path}:{line}: {what}"


def test_equal_times_and_other_processes_earlier_times_are_in_order(
        tmp_path):
    # One time for a MEM line and its CHLD lines, as memlens writes them;
    # each process's series on its own; FUNC lines in the order calls end,
    # so an outer call's start comes after an inner call's end.
    path = write(tmp_path / "ok.dat",
                 "CHLD 7 1 10\nCHLD 8 2 10\nMEM 4 10\nMEM 5 10\n"
                 "CHLD 8 2 11\nCHLD 7 1 11\nMEM 6 11\n"
                 "FUNC inner 1 10.5 2 10.6 1\nFUNC outer 1 10.2 2 10.9 0\n"
                 "FUNC empty 1 11 1 11\n")
    s = datafile.summarise(path)
    assert (s["samples"], s["peak_mib"], s["peak_time_s"]) == (3, 6.0, 1.0)
    assert [f["name"] for f in s["functions"]] == ["inner", "outer",
                                                   "empty"]
    assert [c["samples"] for c in s["children"]] == [2, 2]


def test_a_cut_last_line_that_goes_backwards_is_dropped(tmp_path):
    # "MEM 3 1700000000.25" cut after "MEM 3 17": a kill in mid-write.
    path = write(tmp_path / "cut.dat",
                 "MEM 1 1700000000.0\nMEM 2 1700000000.1\nMEM 3 17")
    s = datafile.summarise(path)
    assert s["truncated"] and s["samples"] == 2


@pytest.mark.parametrize("line", [
    "FUNC f 1 2 3 4 \u00b2",  # a digit to str.isdigit(), not to int()
    "MEM \u0663 2",  # an Arabic-Indic three
    "CHLD 1 2 \uff13",  # a fullwidth three
])
def test_numbers_are_ascii(tmp_path, line):
    path = write(tmp_path / "u.dat", f"MEM 1 1\n{line}\nMEM 1 9\n")
    with pytest.raises(DataFileError, match=r"u\.dat:2: bad"):
        datafile.read(path)


def test_records_are_read_lazily(tmp_path):
    # The first record comes before the reader meets the bad line 3.
    path = write(tmp_path / "lazy.dat", "CMDLINE a b\nMEM 1 2\nbad\n")
    reader = datafile.records(path)
    assert next(reader) == ("CMDLINE", "a b")
    assert next(reader) == ("MEM", 1.0, 2.0)
    with pytest.raises(DataFileError, match=r"lazy\.dat:3: unknown record"):
        next(reader)


# --------------------------------------------------------------------------
# Memory that does not grow with the samples
# --------------------------------------------------------------------------

def sampled_file(path, samples):
    """A file of `samples` MEM lines, each with a child's CHLD line."""
    with open(path, "w") as f:
        f.write("CMDLINE python prog.py\n")
        for i in range(samples):
            when = 1700000000 + i / 100
            f.write(f"CHLD 42 {i % 97:.6f} {when:.4f}\n"
                    f"MEM {100 + i % 1013:.6f} {when:.4f}\n")
        f.write("FUNC __main__.f 1.0 1700000000.0 2.0 1700000001.0 0\n")
    return str(path)


def traced_peak(argv):
    """Peak bytes Python allocated while cli.main(argv) ran."""
    with open(os.devnull, "w") as devnull, redirect_stdout(devnull):
        tracemalloc.start()
        try:
            assert cli.main(argv) == 0
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


@pytest.mark.parametrize("command", [["report"], ["report", "--json"],
                                     ["report", "--csv"], ["peak"]])
def test_report_and_peak_memory_does_not_grow_with_the_samples(tmp_path,
                                                               command):
    small = sampled_file(tmp_path / "small.dat", 1_000)
    large = sampled_file(tmp_path / "large.dat", 20_000)
    traced_peak([command[0], small] + command[1:])  # imports what it needs
    small_peak = traced_peak([command[0], small] + command[1:])
    large_peak = traced_peak([command[0], large] + command[1:])
    # Holding the 20,000 samples would take megabytes (the file is 1).
    assert large_peak - small_peak < 64 * 1024, (small_peak, large_peak)


def test_streamed_csv_matches_every_sample_and_child(tmp_path):
    path = sampled_file(tmp_path / "s.dat", 300)
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["report", path, "--csv"]) == 0
    rows = [line.split(",") for line in out.getvalue().splitlines()]
    assert rows[0] == ["time_s", "memory_mib", "child_42_mib"]
    run = datafile.read(path)
    assert [float(r[1]) for r in rows[1:]] == run.memory.mem
    assert [float(r[2]) for r in rows[1:]] == run.children["42"].mem
    assert [float(r[0]) for r in rows[1:]] == pytest.approx(
        [t - run.start_time for t in run.memory.times], abs=1e-6)


# --------------------------------------------------------------------------
# Properties: files of random records read back; garbage is refused
# --------------------------------------------------------------------------

_MIB = st.floats(min_value=0, max_value=1e6, allow_nan=False)
_STEP = st.floats(min_value=0, max_value=1e3, allow_nan=False)
_NAME = st.text(st.characters(blacklist_categories=["Cs", "Zs", "Cc"]),
                min_size=1, max_size=12)
_NUMBER_FORMATS = ["{:.6f}", "{!r}", "{:.2f}", "{:e}", "{:.0f}"]


@st.composite
def runs(draw):
    """(lines of a valid data file, the records they hold)."""
    time_format = draw(st.sampled_from(["{:.6f}", "{:.4f}", "{!r}"]))

    def number(value, form=None):
        text = (form or draw(st.sampled_from(_NUMBER_FORMATS))).format(
            value)
        return text, float(text)

    lines, expected = [], []
    clock = {"MEM": 1.7e9}
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["MEM", "MEM", "CHLD", "FUNC",
                                     "CMDLINE"]))
        if kind == "CMDLINE":
            text = draw(st.text(st.characters(
                blacklist_categories=["Cs"],
                blacklist_characters="\n\r\0"), max_size=30))
            lines.append(f"CMDLINE {text}")
            expected.append(("CMDLINE", text))
            continue
        if kind == "FUNC":
            name = draw(_NAME)
            m0, mem0 = number(draw(_MIB))
            m1, mem1 = number(draw(_MIB))
            s, start = number(draw(_STEP) + 1.7e9, time_format)
            e, end = number(start + draw(_STEP), time_format)
            depth = draw(st.none() | st.integers(0, 50))
            lines.append(f"FUNC {name} {m0} {s} {m1} {e}"
                         + ("" if depth is None else f" {depth}"))
            expected.append(("FUNC", datafile.Span(
                name, start, end, mem0, mem1, depth or 0)))
            continue
        series = kind if kind == "MEM" else str(draw(st.integers(1, 4)))
        # Rounding keeps the order of the times of one format.
        clock[series] = clock.get(series, 1.7e9) + draw(_STEP)
        m, mem = number(draw(_MIB))
        t, when = number(clock[series], time_format)
        if kind == "MEM":
            lines.append(f"MEM {m} {t}")
            expected.append(("MEM", mem, when))
        else:
            lines.append(f"CHLD {series} {m} {t}")
            expected.append(("CHLD", series, mem, when))
    return lines, expected


def oracle(path, expected):
    """The report, straight from the records written."""
    mem = [r for r in expected if r[0] == "MEM"]
    spans = [r[1] for r in expected if r[0] == "FUNC"]
    firsts = [r[2] for r in mem[:1]] + [s.start for s in spans[:1]]
    t0 = min(firsts) if firsts else None
    base = t0 or 0.0
    commands = [r[1] for r in expected if r[0] == "CMDLINE"]
    out = {"file": path, "command": commands[-1] if commands else None,
           "samples": len(mem), "truncated": False, "start_time": t0,
           "duration_s": 0.0, "start_mib": None, "peak_mib": None,
           "peak_time_s": None, "end_mib": None}
    if mem:
        top = max(mem, key=lambda r: r[1])  # the first of the highest
        out.update(duration_s=round(mem[-1][2] - base, 6),
                   start_mib=mem[0][1], peak_mib=top[1],
                   peak_time_s=round(top[2] - base, 6), end_mib=mem[-1][1])
    names = list(dict.fromkeys(s.name for s in spans))
    out["functions"] = []
    for name in names:
        calls = [s for s in spans if s.name == name]
        total = 0.0
        for s in calls:
            total += s.end - s.start
        out["functions"].append({
            "name": name, "calls": len(calls), "total_s": round(total, 6),
            "spans": [{"start_s": round(s.start - base, 6),
                       "end_s": round(s.end - base, 6),
                       "start_mib": s.mem_start, "end_mib": s.mem_end,
                       "depth": s.depth} for s in calls]})
    out["children"] = []
    for pid in dict.fromkeys(r[1] for r in expected if r[0] == "CHLD"):
        kid = [r for r in expected if r[0] == "CHLD" and r[1] == pid]
        top = max(kid, key=lambda r: r[2])
        out["children"].append({
            "id": pid, "samples": len(kid), "peak_mib": top[2],
            "peak_time_s": round(top[3] - base, 6),
            "first_s": round(kid[0][3] - base, 6),
            "last_s": round(kid[-1][3] - base, 6)})
    return out


@PROPERTIES
@given(run=runs(), ending=st.sampled_from(["\n", "\r\n"]))
def test_random_files_read_back_record_by_record(tmp_path_factory, run,
                                                 ending):
    lines, expected = run
    path = write(tmp_path_factory.mktemp("p") / "r.dat",
                 "".join(line + ending for line in lines))
    assert records(path) == expected
    summary = datafile.summarise(path)
    assert summary == oracle(path, expected)
    assert datafile.read(path).summary() == summary


@PROPERTIES
@given(run=runs(), data=st.data())
def test_a_file_cut_anywhere_keeps_its_complete_lines(tmp_path_factory, run,
                                                      data):
    lines, expected = run
    content = "".join(line + "\n" for line in lines).encode()
    first = content.find(b"\n") + 1
    if not first:
        return
    cut = data.draw(st.integers(first, len(content)), label="cut")
    path = write(tmp_path_factory.mktemp("c") / "cut.dat", content[:cut])
    kept = content[:cut].count(b"\n")
    got = records(path)
    assert got[:kept] == expected[:kept]
    # At most one record more: the cut line's, if it still parses and is
    # in order, else the mark that it was cut.
    assert len(got) - kept <= 1
    if got[-1:] == [("CUT",)]:
        assert datafile.summarise(path)["truncated"]


_TOKENS = st.sampled_from([
    b"MEM", b"CHLD", b"FUNC", b"CMDLINE", b"", b" ", b"1", b"1.5", b"-1",
    b"-0", b".5", b"5.", b"1e3", b"1e999", b"nan", b"inf", b"+1", b"1_0",
    b"\xb2", "\u00b2".encode(), "\u0663".encode(), b"\xff", b"\0", b"\r",
    b"\t", b"1700000000.5", b"x"])


@PROPERTIES
@given(st.lists(st.lists(_TOKENS | st.binary(max_size=4), max_size=8)
                .map(b" ".join), max_size=8).map(b"\n".join))
def test_garbage_is_read_or_refused_never_crashes(tmp_path_factory,
                                                  content):
    path = write(tmp_path_factory.mktemp("g") / "g.dat", content)
    for read in (records, datafile.read, datafile.summarise):
        try:
            read(path)
        except DataFileError as exc:
            assert str(exc).startswith(path + ":")
    for argv in (["report", path, "--csv"], ["report", path, "--json"],
                 ["peak", path]):
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            assert cli.main(argv) in (0, 2)
