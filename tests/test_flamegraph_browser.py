"""The flame graph page in a real browser: headless Chromium driven through
selenium over a generated file. It renders without console errors, frames
are as wide as their bytes, clicking zooms, searching highlights, and the
figures shown are the snapshot's.

Skipped where Chromium, its driver or selenium are missing (CI installs
Debian's chromium and chromium-driver; the newer Pythons' chroot has
neither)."""

import shutil

import pytest

from memlens._report import human, kib
from memlens._tracing import Frame, Snapshot

webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="chromium and chromedriver needed")

MiB = 2**20
KiB = 2**10
MAIN = Frame("/app/main.py", 5)
LOAD = Frame("/app/load.py", 12)
PARSE = Frame("/app/parse.py", 40)
CACHE = Frame("/app/cache.py", 7)
INSTALLED = Frame("/opt/env/lib/python3.11/site-packages/pkg/io.py", 3)
SMALL = [Frame(f"/app/small{k}.py", k + 1) for k in range(300)]
WIDTH = 1200


def row(frames, size, count=1, native=False, resident=None):
    return (tuple(reversed(frames)), size, count, size, count, native,
            size if resident is None else resident)


def peak_snapshot():
    """Python and native bytes, two tracebacks through parse.py, and 300
    frames too narrow to draw."""
    rows = [row([MAIN, LOAD, PARSE], 6 * MiB, 300),
            row([MAIN, LOAD, PARSE], 2 * MiB, 2, native=True,
                resident=1 * MiB),
            row([MAIN, LOAD], 1 * MiB + 17, 40),
            row([MAIN, CACHE], 3 * MiB, 9),
            row([MAIN, CACHE, PARSE], 512 * KiB, 1000)]
    rows += [row([MAIN, CACHE, small], 100 + k, 1)
             for k, small in enumerate(SMALL)]
    rows.append(row([MAIN, INSTALLED], 64 * KiB, 2))
    return Snapshot(rows, sum(r[1] for r in rows), nframes=8, kind="peak",
                    native=True, resident=sum(r[6] for r in rows))


def end_snapshot():
    rows = [row([MAIN, CACHE], 3 * MiB, 9), row([MAIN], 4321, 3)]
    return Snapshot(rows, sum(r[1] for r in rows), nframes=8,
                    kind="current")


TIMES = [1000.0 + 0.1 * i for i in range(50)]
MEM = [20.0 + i for i in range(31)] + [50.0 - i for i in range(19)]
SPANS = [("app.load", 1000.5, 1002.0), ("app.cache", 1001.0, 1004.5)]


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", f"--window-size={WIDTH},900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def snapshots():
    return peak_snapshot(), end_snapshot()


@pytest.fixture
def page(browser, snapshots, tmp_path):
    """The report of both snapshots and the timeline, freshly loaded;
    after the test, the browser's log holds no error."""
    peak, end = snapshots
    path = tmp_path / "report.html"
    peak.to_html(str(path), end=end, timeline=(TIMES, MEM, SPANS))
    browser.get_log("browser")
    browser.get(path.as_uri())
    assert browser.execute_script("return !!window.memlens")
    yield browser
    errors = [entry for entry in browser.get_log("browser")
              if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == []


def frames_drawn(driver, graph):
    """[(node, where, bytes, left, width, classes)] of the frames drawn in
    graph `graph`, as laid out on screen, and the width of its svg."""
    return driver.execute_script("""
        var g = window.memlens.graphs[arguments[0]];
        var svg = g.holder.querySelector('svg');
        var box = svg.getBoundingClientRect();
        var out = [];
        svg.querySelectorAll('rect.fr').forEach(function (r) {
            var b = r.getBoundingClientRect(), i = +r.getAttribute('data-i');
            out.push([i, window.memlens.where(g.f[i]),
                      +r.getAttribute('data-bytes'), b.left - box.left,
                      b.width, r.getAttribute('class')]);
        });
        return [out, box.width];
    """, graph)


def frame_element(driver, graph, where, nth=0):
    """The drawn rect of the `nth` node of frame `where` in `graph`."""
    return driver.execute_script("""
        var g = window.memlens.graphs[arguments[0]], want = arguments[1];
        var found = [];
        g.holder.querySelectorAll('rect.fr').forEach(function (r) {
            var i = +r.getAttribute('data-i');
            if (window.memlens.where(g.f[i]) === want) {
                found.push(r);
            }
        });
        return found[arguments[2]];
    """, graph, where, nth)


def test_page_renders_both_graphs_timeline_and_tables(page, snapshots):
    peak, end = snapshots
    titles = [h.text for h in page.find_elements("css selector", "h2")]
    assert titles == ["RSS over time", "At the peak", "At the end"]
    for graph, snapshot in enumerate(snapshots):
        drawn, _ = frames_drawn(page, graph)
        root = [d for d in drawn if d[1] == "all"]
        assert len(root) == 1 and root[0][2] == snapshot.total
    notes = page.find_elements("css selector", "#g0 p.note")
    assert notes[0].text.startswith(f"Total: {human(peak.total)} "
                                    f"({kib(peak.total)} KiB) in "
                                    f"{len(peak.traces)} sites")
    assert notes[1].text == f"Resident: {human(peak.resident)}"


def test_frame_widths_are_proportional_to_bytes(page, snapshots):
    for graph, snapshot in enumerate(snapshots):
        drawn, width = frames_drawn(page, graph)
        assert width == pytest.approx(WIDTH, rel=0.1)
        for _, where, nbytes, left, w, _ in drawn:
            assert w == pytest.approx(width * nbytes / snapshot.total,
                                      abs=0.05), where
    drawn, width = frames_drawn(page, 0)
    # Children sit side by side inside their parent, largest first.
    load = [d for d in drawn if d[1] == LOAD.filename + ":12"][0]
    cache = [d for d in drawn if d[1] == CACHE.filename + ":7"][0]
    assert load[2] == 9 * MiB + 17 and cache[2] == 3 * MiB + 512 * KiB + sum(
        100 + k for k in range(300))
    assert load[3] == pytest.approx(0, abs=0.05)
    assert cache[3] == pytest.approx(load[4], abs=0.05)
    # A frame under a pixel wide is not drawn; the rest are.
    names = {d[1] for d in drawn}
    assert not names & {f"{s.filename}:{s.lineno}" for s in SMALL}
    assert PARSE.filename + ":40" in names


def test_native_bytes_are_drawn_apart_within_their_frame(page):
    geometry = page.execute_script("""
        var g = window.memlens.graphs[0], out = [];
        g.holder.querySelectorAll('rect.nat').forEach(function (r) {
            var i = r.getAttribute('data-i');
            var frame = g.holder.querySelector("rect.fr[data-i='" + i + "']");
            var a = frame.getBoundingClientRect();
            var b = r.getBoundingClientRect();
            out.push([window.memlens.where(g.f[+i]), a.right, a.width,
                      b.right, b.width]);
        });
        return out;
    """)
    assert sorted(g[0] for g in geometry) == [
        "/app/load.py:12", "/app/main.py:5", "/app/parse.py:40", "all"]
    for where, right, width, nat_right, nat_width in geometry:
        whole = {"/app/parse.py:40": 8 * MiB,
                 "/app/load.py:12": 9 * MiB + 17}.get(where)
        if whole is not None:
            assert nat_width == pytest.approx(width * 2 * MiB / whole,
                                              abs=0.05)
        assert nat_right == pytest.approx(right, abs=0.05)


def test_click_zooms_on_a_frame_and_reset_zooms_out(page):
    from selenium.webdriver import ActionChains

    ActionChains(page).move_to_element(
        frame_element(page, 0, "/app/cache.py:7")).click().perform()
    drawn, width = frames_drawn(page, 0)
    by_name = {d[1]: d for d in drawn if "up" not in d[5]}
    cache = by_name["/app/cache.py:7"]
    assert cache[3] == pytest.approx(0, abs=0.05)
    assert cache[4] == pytest.approx(width, abs=0.05)
    # Its children now share the whole width.
    for _, where, nbytes, _, w, classes in drawn:
        if "up" not in classes:
            assert w == pytest.approx(width * nbytes / cache[2], abs=0.05)
    assert by_name["/app/parse.py:40"][2] == 512 * KiB
    # Its ancestors stay above, faded, and the rest of the graph is gone.
    faded = sorted(d[1] for d in drawn if "up" in d[5])
    assert faded == ["/app/main.py:5", "all"]
    assert "/app/load.py:12" not in by_name
    crumb = page.find_element("css selector", "#g0 .crumb").text
    assert crumb == ("Zoomed on main.py:5 \u203a cache.py:7 ("
                     f"{human(cache[2])})")
    reset = page.find_element("css selector", "#g0 button.reset")
    assert reset.is_enabled()
    reset.click()
    drawn, width = frames_drawn(page, 0)
    assert [d[1] for d in drawn if "up" in d[5]] == []
    assert "/app/load.py:12" in {d[1] for d in drawn}
    assert not reset.is_enabled()


def test_search_highlights_matching_frames_and_sums_their_bytes(page):
    box = page.find_element("css selector", "#search")
    box.send_keys("parse.py")
    drawn, _ = frames_drawn(page, 0)
    hits = {(d[1], d[2]) for d in drawn if "hit" in d[5]}
    assert hits == {("/app/parse.py:40", 8 * MiB),
                    ("/app/parse.py:40", 512 * KiB)}
    assert all("hit" not in d[5] for d in drawn if "parse" not in d[1])
    found = page.find_element("css selector", "#g0 .found").text
    total = peak_snapshot().total
    matched = 8 * MiB + 512 * KiB
    assert found == (f"Matched: {human(matched)} "
                     f"({100 * matched / total:.1f}%)")
    assert page.find_element("css selector", "#g1 .found").text == (
        "Matched: 0 B (0.0%)")
    # A regular expression; an outer match counts its subtree once.
    box.clear()
    box.send_keys("/(load|parse)\\.py/")
    found = page.find_element("css selector", "#g0 .found").text
    assert found.startswith(f"Matched: {human(9 * MiB + 17 + 512 * KiB)} ")
    box.clear()
    box.send_keys("/(/")
    assert page.find_element("css selector", "#matched").text == (
        "bad regular expression")


def test_tooltip_gives_the_frames_figures(page):
    from selenium.webdriver import ActionChains

    ActionChains(page).move_to_element(
        frame_element(page, 0, "/app/parse.py:40")).perform()
    tip = page.find_element("css selector", "#tip")
    assert tip.is_displayed()
    total = peak_snapshot().total
    assert tip.text.splitlines() == [
        "/app/parse.py:40",
        f"{human(8 * MiB)} ({100 * 8 * MiB / total:.1f}% of the total), "
        f"302 blocks",
        f"Python {human(6 * MiB)}, native {human(2 * MiB)}, resident "
        f"{human(7 * MiB)}"]


def table_rows(driver, graph):
    """The text of each cell of the table of graph `graph`, row by row."""
    return driver.execute_script("""
        return Array.prototype.map.call(document.querySelectorAll(
            '#g' + arguments[0] + ' table.lines tbody tr'), function (tr) {
                return Array.prototype.map.call(tr.cells, function (td) {
                    return td.innerText.trim();
                });
            });
    """, graph)


def test_table_shows_the_snapshots_top_lines_and_sorts(page, snapshots):
    peak, end = snapshots
    stats = peak.top(None)
    shown = {INSTALLED.filename: "pkg/io.py"}
    assert table_rows(page, 0) == [
        [str(k), f"{shown.get(s.filename, s.filename)}:{s.lineno}",
         kib(s.size), kib(s.native_size),
         kib(s.resident), str(s.count), ""]
        for k, s in enumerate(stats, 1)]
    assert table_rows(page, 1) == [
        [str(k), f"{s.filename}:{s.lineno}", kib(s.size), str(s.count), ""]
        for k, s in enumerate(end.top(None), 1)]
    blocks = page.find_element("css selector",
                               "#g0 table.lines th[data-key='count']")
    blocks.click()
    counts = [int(r[5]) for r in table_rows(page, 0)]
    assert counts == sorted((s.count for s in stats), reverse=True)
    blocks.click()
    counts = [int(r[5]) for r in table_rows(page, 0)]
    assert counts == sorted(s.count for s in stats)
    page.find_element("css selector",
                      "#g0 table.lines th[data-key='where']").click()
    names = [r[1] for r in table_rows(page, 0)]
    assert names == sorted(names)


def test_timeline_marks_the_peak_and_the_spans(page):
    marks = page.execute_script("""
        var svg = document.querySelector('#timeline svg');
        var line = svg.querySelector('polyline.rss').points;
        var peak = svg.querySelector('#peak-mark');
        return [line.numberOfItems, line.getItem(0).x,
                line.getItem(line.numberOfItems - 1).x,
                peak.cx.baseVal.value, peak.cy.baseVal.value,
                Math.min.apply(null, Array.prototype.map.call(
                    svg.querySelectorAll('polyline.rss'), function (p) {
                        var ys = [];
                        for (var i = 0; i < p.points.numberOfItems; i++) {
                            ys.push(p.points.getItem(i).y);
                        }
                        return Math.min.apply(null, ys);
                    })),
                Array.prototype.map.call(svg.querySelectorAll('g.span'),
                    function (g) { return g.textContent; })];
    """)
    points, first, last, cx, cy, top, spans = marks
    assert points == len(TIMES)
    assert cx == pytest.approx(first + (last - first) * 3.0 / 4.9, abs=0.2)
    assert cy == pytest.approx(top, abs=0.1)
    assert spans == ["app.loadapp.load: 0.500 s to 2.000 s",
                     "app.cacheapp.cache: 1.000 s to 4.500 s"]
    note = page.find_element("css selector", "#timeline p.note").text
    assert note == "Peak: 50.00 MiB at 3.000 s"


def test_page_writes_sizes_as_python_does(page):
    # Exact halves included: 256 bytes are 0.25 KiB, 1179648 are
    # 1.125 MiB, which Python rounds to the even digit.
    values = [0, 1, 1023, 1024, 256, 768, 1280, 131072, 1179648, 2**20 - 1,
              2**20, 3 * 2**20 + 5 * 2**14, 5 * 2**30 + 3, 2**40 + 2**19,
              -256, -2048]
    values += list(range(0, 10_000, 37)) + [2**20 + k * 2621 for k in
                                            range(400)]
    shown = page.execute_script(
        "return arguments[0].map(function (n) {"
        "  return [window.memlens.human(n), window.memlens.kib(n)]; });",
        values)
    assert shown == [[human(n), kib(n)] for n in values]


def test_empty_snapshot_and_timeline_render_without_errors(browser,
                                                           tmp_path):
    path = tmp_path / "empty.html"
    Snapshot([], 0, kind="current").to_html(str(path), timeline=([], []))
    browser.get_log("browser")
    browser.get(path.as_uri())
    assert browser.find_element("css selector", "#g0 .empty").text == (
        "Nothing was alive.")
    assert browser.find_element("css selector", "#g0 h2").text == "Now"
    assert table_rows(browser, 0) == []
    assert browser.find_elements("css selector", "#peak-mark") == []
    assert [e for e in browser.get_log("browser")
            if e["level"] in ("SEVERE", "ERROR")] == []
