"""The flame graph page's figures (memlens._flamegraph): the tracebacks
merged into one tree whose bytes add up to the snapshot's, the top lines,
the timeline, and a page that loads nothing and stays small for 100,000
distinct tracebacks. tests/test_flamegraph_browser.py drives the page in a
browser."""

import json
import random
import re

import pytest

import memlens
from memlens import _flamegraph
from memlens._report import human
from memlens._tracing import Frame, Snapshot

A = Frame("/app/alpha.py", 10)
B = Frame("/app/beta.py", 20)
C = Frame("/app/gamma.py", 30)
D = Frame("/app/delta.py", 40)


def row(frames, size, count=1, native=False, resident=None):
    """One of Snapshot.traces: `frames` outermost first, as read."""
    return (tuple(reversed(frames)), size, count, size, count, native,
            size if resident is None else resident)


def snap(rows, native=False, kind="peak"):
    return Snapshot(rows, sum(r[1] for r in rows), nframes=4, kind=kind,
                    native=native)


def decode(data, graph=0):
    """{path of frame labels, outermost first: [bytes, native, blocks,
    resident, own bytes]} of one encoded graph, the totals summed up the
    tree by this reference reading of the encoding; and the children of
    each path in the order written."""
    g = data["graphs"][graph]
    name = [f"{data['files'][data['file'][i]]}:{data['line'][i]}"
            for i in range(len(data["line"]))]
    own = {}
    at = 0
    for k, step in enumerate(g["own"]["i"]):
        at += step
        nat = g["own"]["nat"][k] if "nat" in g["own"] else 0
        res = g["own"]["res"][k] if "res" in g["own"] else g["own"]["py"][k]
        own[at] = (g["own"]["py"][k] + nat, nat, g["own"]["n"][k], res)
    paths, order, stack = {}, {}, []
    for i, (f, d) in enumerate(zip(_flamegraph._unpack(g["f"], 1),
                                   _flamegraph._unpack(g["d"]))):
        del stack[d:]
        stack.append("all" if f < 0 else name[f])
        path = tuple(stack)
        assert path not in paths, f"{path} written twice"
        figures = own.get(i, (0, 0, 0, 0))
        paths[path] = list(figures) + [figures[0]]
        order.setdefault(path[:-1], []).append(path)
        for depth in range(1, len(path)):
            for k in range(4):
                paths[path[:depth]][k] += figures[k]
    return paths, order


def test_tree_adds_each_tracebacks_bytes_up_to_the_root():
    data = _flamegraph.data(snap([
        row([A, B], 100, 2), row([A, B, C], 50), row([A, C], 30, 3),
        row([D], 7)]))
    paths, _ = decode(data)
    a, b, c, d = (f"{f.filename}:{f.lineno}" for f in (A, B, C, D))
    assert paths[("all",)][:3] == [187, 0, 7]
    assert paths[("all", a)][:3] == [180, 0, 6]
    assert paths[("all", a, b)] == [150, 0, 3, 150, 100]
    assert paths[("all", a, b, c)] == [50, 0, 1, 50, 50]
    assert paths[("all", a, c)] == [30, 0, 3, 30, 30]
    assert paths[("all", d)] == [7, 0, 1, 7, 7]
    assert len(paths) == 6


def test_same_traceback_rows_are_one_node_and_frames_are_interned_once():
    # Python and native rows of one traceback are two sites, one frame.
    data = _flamegraph.data(snap([
        row([A, B], 100), row([A, B], 60, native=True, resident=4096),
        row([B, A], 5)], native=True))
    paths, _ = decode(data)
    a, b = f"{A.filename}:{A.lineno}", f"{B.filename}:{B.lineno}"
    assert paths[("all", a, b)] == [160, 60, 2, 4196, 160]
    assert paths[("all", b, a)] == [5, 0, 1, 5, 5]
    assert len(data["line"]) == 2
    assert sorted(data["files"]) == sorted([A.filename, B.filename])


def test_children_are_written_largest_first():
    data = _flamegraph.data(snap([
        row([A, B], 10), row([A, C], 300), row([A, D], 20), row([B], 1),
        row([C], 999)]))
    paths, order = decode(data)
    for parent, kids in order.items():
        sizes = [paths[k][0] for k in kids]
        assert sizes == sorted(sizes, reverse=True), parent
    assert [k[-1] for k in order[("all",)]] == [
        "/app/gamma.py:30", "/app/alpha.py:10", "/app/beta.py:20"]


def test_freed_sites_are_not_drawn():
    data = _flamegraph.data(snap([row([A], 0, 0), row([B], 8)]))
    paths, _ = decode(data)
    assert list(paths) == [("all",), ("all", "/app/beta.py:20")]


def test_python_only_snapshot_writes_no_native_columns():
    data = _flamegraph.data(snap([row([A], 8)]))
    assert set(data["graphs"][0]["own"]) == {"i", "py", "n"}
    assert data["graphs"][0]["native"] is False


def test_top_lines_are_the_snapshots_with_the_rest_summed(monkeypatch):
    monkeypatch.setattr(_flamegraph, "TABLE_ROWS", 2)
    snapshot = snap([row([A, B], 100, 2), row([C, B], 50),
                     row([A, C], 30, 3), row([D], 7), row([A], 3)])
    data = _flamegraph.data(snapshot)
    g = data["graphs"][0]
    top = snapshot.top(None)
    assert [[data["files"][data["file"][f]], data["line"][f], size, count]
            for f, size, _, count, _ in g["lines"]] == [
        [s.filename, s.lineno, s.size, s.count] for s in top[:2]]
    assert g["rest"] == {"lines": len(top) - 2,
                         "size": sum(s.size for s in top[2:]),
                         "resident": sum(s.resident for s in top[2:])}


def test_real_trace_puts_the_bytes_on_the_line_that_holds_them():
    def hold():
        return bytearray(300_000)

    with memlens.tracing(nframes=3) as t:
        kept = hold()
    data = _flamegraph.data(t.snapshot)
    paths, _ = decode(data)
    line = hold.__code__.co_firstlineno + 1
    mine = [figures for path, figures in paths.items()
            if path[-1] == f"{__file__}:{line}"]
    assert len(mine) == 1
    assert mine[0][4] >= len(kept)
    assert paths[("all",)][0] == sum(r[1] for r in t.snapshot.traces
                                     if r[1] > 0)
    assert data["text"][data["line"].index(line)] == (
        "return bytearray(300_000)")


def test_page_json_cannot_end_its_script_element():
    evil = Frame("/app/</script><script>alert(1)</script>&.py", 1)
    text = _flamegraph.render(snap([row([evil], 64)]))
    # Only the page's own two script elements end.
    assert text.count("</script>") == 2
    assert page_data(text)["files"] == [evil.filename]


def test_page_loads_nothing_from_outside():
    text = _flamegraph.render(snap([row([A], 64)]), snap([row([B], 8)]),
                              ([1.0, 2.0], [10.0, 11.0]))
    assert not re.search(r"<(link|img|iframe|object|embed)\b", text, re.I)
    assert not re.search(r"\bsrc\s*=|@import|url\(|fetch\(|XMLHttpRequest",
                         text)
    # The one address in the page is SVG's namespace name, not a load.
    assert set(re.findall(r"https?://[^\s'\"]+", text)) <= {
        "http://www.w3.org/2000/svg"}


def synthetic(count, seed=22):
    """A peak snapshot of `count` distinct tracebacks 6 to 20 frames deep,
    drawn from 3,000 lines in 300 files, sharing their outer frames as a
    program's do and spreading out below."""
    rng = random.Random(seed)
    pool = [Frame(f"/srv/app/pkg{k % 40}/module{k % 300}.py", 10 + k)
            for k in range(3000)]
    outer = [Frame("/srv/app/main.py", 12), Frame("/srv/app/cli.py", 88)]
    seen, traces = set(), []
    while len(traces) < count:
        depth = rng.randint(4, 18)
        stack = tuple(
            pool[min(int(rng.paretovariate(0.9)) * 7 + level * 101
                     + rng.randrange(3), len(pool) - 1)]
            for level in range(depth))
        if stack in seen:
            continue
        seen.add(stack)
        size = rng.randint(16, 1 << 20)
        traces.append(row(outer + list(stack), size, rng.randint(1, 50)))
    return Snapshot(traces, sum(t[1] for t in traces), nframes=20,
                    kind="peak")


def page_data(text):
    """The figures written into a page."""
    start = text.index("<script type='application/json' id='memlens-data'>")
    return json.loads(text[text.index(">", start) + 1:
                           text.index("</script>", start)])


@pytest.mark.parametrize("values", [[], [0], [0, 5, 88], [89, 0, 7920],
                                    [7921, 3, 700_000, 704_968]])
def test_packed_columns_read_back_and_take_the_fewest_digits(values):
    for shift in (0, 1):
        packed = _flamegraph._pack(values, shift)
        assert _flamegraph._unpack(packed, shift) == values
        top = max(values, default=0) + shift
        assert len(_flamegraph.DIGITS) ** (packed["w"] - 1) <= max(top, 1)
        assert len(packed["s"]) == packed["w"] * len(values)
    # One byte a digit, in JSON and in the page's <script> element.
    text = _flamegraph._json_in_script(_flamegraph.DIGITS)
    assert text == json.dumps(_flamegraph.DIGITS)
    assert len(set(_flamegraph.DIGITS)) == len(_flamegraph.DIGITS)


@pytest.mark.slow
def test_100k_distinct_tracebacks_stay_under_10_mb():
    snapshot = synthetic(100_000)
    # The peak and the end together, each of 100,000 tracebacks.
    both = _flamegraph.render(snapshot, synthetic(100_000, seed=23))
    assert len(both.encode()) < 10 * 10**6
    text = _flamegraph.render(snapshot)
    assert len(text.encode()) < 10 * 2**20
    # Nothing was dropped to get there.
    g = page_data(text)["graphs"][0]
    assert len(g["own"]["i"]) == 100_000
    assert sum(g["own"]["py"]) == snapshot.total
    assert len(g["lines"]) == _flamegraph.TABLE_ROWS


def test_timeline_is_relative_to_its_start_with_the_peak_and_spans():
    times = [100.0, 100.5, 101.0, 101.5]
    data = _flamegraph.data(snap([row([A], 8)]), timeline=(
        times, [10.0, 30.0, 30.0, 12.5], [("load", 100.25, 101.25)]))
    t = data["timeline"]
    assert t["t"] == [0.0, 0.5, 1.0, 1.5]
    assert t["mib"] == [10.0, 30.0, 30.0, 12.5]
    assert (t["peak"], t["peak_mib"], t["peak_s"]) == (1, 30.0, 0.5)
    assert t["spans"] == [["load", 0.25, 1.25]]
    assert t["start"] == 100.0


def test_long_timeline_is_thinned_keeping_each_buckets_extremes(
        monkeypatch):
    monkeypatch.setattr(_flamegraph, "TIMELINE_POINTS", 100)
    times = [i * 0.01 for i in range(10_000)]
    mem = [50.0 + (i % 7) for i in range(10_000)]
    mem[6_543] = 900.0
    t = _flamegraph.data(snap([row([A], 8)]), timeline=(times, mem))[
        "timeline"]
    assert len(t["t"]) <= 100
    assert t["t"] == sorted(t["t"])
    assert t["mib"][t["peak"]] == 900.0
    assert t["t"][t["peak"]] == pytest.approx(65.43)
    assert min(t["mib"]) == 50.0


def test_timeline_from_a_data_file(tmp_path):
    from memlens.cli import datafile

    path = tmp_path / "run.dat"
    path.write_text("CMDLINE python x.py\nMEM 10.0 1000.0\nMEM 42.0 1000.5\n"
                    "FUNC x.load 10.0 1000.1 42.0 1000.4\nMEM 20.0 1001.0\n")
    t = _flamegraph.data(snap([row([A], 8)]),
                         timeline=datafile.read(str(path)))["timeline"]
    assert t["mib"] == [10.0, 42.0, 20.0]
    assert t["peak"] == 1
    assert t["spans"] == [["x.load", 0.1, 0.4]]


@pytest.mark.parametrize("value, error", [
    (42, TypeError), ("times", TypeError), (([1.0, 2.0], [1.0]), ValueError),
    (([1.0], ["x"]), ValueError)])
def test_bad_timeline_is_refused(value, error):
    with pytest.raises(error):
        snap([row([A], 8)]).to_html(timeline=value)


def test_to_html_returns_the_page_or_writes_it(tmp_path):
    peak, end = snap([row([A], 64)]), snap([row([B], 8)], kind="current")
    text = peak.to_html(end=end, title="run <1>")
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>run &lt;1&gt;</title>" in text
    path = tmp_path / "report.html"
    assert peak.to_html(str(path), end=end, title="run <1>") == str(path)
    assert path.read_text(encoding="utf-8") == text
    graphs = _flamegraph.data(peak, end)["graphs"]
    assert [g["title"] for g in graphs] == ["At the peak", "At the end"]


def test_to_html_end_must_be_a_snapshot():
    with pytest.raises(TypeError, match="end must be a Snapshot"):
        snap([row([A], 64)]).to_html(end={"traces": []})


def test_notes_give_totals_and_warnings_as_format_does():
    snapshot = snap([row([A], 3 * 2**20)])
    snapshot.lost_frees = 4
    g = _flamegraph.data(snapshot)["graphs"][0]
    assert g["notes"][0].startswith("Total: 3.00 MiB (3072.0 KiB) in 1 sites")
    assert g["warnings"] == snapshot._warnings()


@pytest.mark.parametrize("nbytes, text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (2**20 - 1, "1024.0 KiB"), (2**20, "1.00 MiB"), (5 * 2**30, "5120.00 MiB"),
    (-2048, "-2.0 KiB")])
def test_human_sizes(nbytes, text):
    assert human(nbytes) == text


def test_to_html_while_tracing_is_not_recorded():
    # The page is memlens's own work: however large, it neither shows in
    # the figures nor raises the traced peak.
    snapshot = synthetic(3000)
    with memlens.tracing(nframes=1):
        memlens.reset_peak()
        before = memlens.traced_memory()
        text = snapshot.to_html()
        after = memlens.traced_memory()
    assert len(text) > 100_000
    assert after[1] - before[1] < 10_000, (before, after)
    assert after[0] - before[0] < 10_000, (before, after)


def test_empty_snapshot_is_a_root_alone():
    data = _flamegraph.data(Snapshot([], 0), timeline=([], []))
    g = data["graphs"][0]
    assert (_flamegraph._unpack(g["f"], 1), _flamegraph._unpack(g["d"]),
            g["own"]["i"], g["lines"]) == ([-1], [0], [], [])
    assert data["timeline"]["peak"] is None
