"""Benchmark the flame graph page (Snapshot.to_html()) for 100,000 distinct
tracebacks: its size, and how soon headless Chromium shows it.

Run with ``.venv/bin/python bench/bench_flamegraph.py`` (``--quick`` for a
smoke run of 10,000 tracebacks). Needs Debian's ``chromium`` and
``chromium-driver`` and selenium (the bench extra).

The peak snapshot is synthetic: n distinct tracebacks 6 to 20 frames deep
under two shared outer frames, drawn from 3,000 lines in 300 files (the
deeper frames spread out, as a program's do below its main loop), which
makes a tree of about 8 nodes per traceback. The page is written three
ways: the peak alone; the peak and the same snapshot as the end (two
trees); the peak with a timeline of an hour sampled every 10 ms (360,000
samples, thinned in the page). For each the script prints:

- the file's size, and the seconds Python takes to write it;
- in Chromium (a fresh page load each repeat, the median of the repeats):
  ``render``, from the start of navigation to the end of the first
  drawing (reading the file, parsing its JSON, adding up the trees,
  building the SVG), and ``painted``, to the first frame painted after
  it; then a search (a substring found in a tenth of the files) and a
  zoom on the root's first child, each timed in the page.

Targets (issue 22): under 10 MB and a first render under 2 s for 100,000
tracebacks.
"""

import os
import random
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (parse_args, print_header, section,  # noqa: E402
                     target_line)

from memlens._tracing import Frame, Snapshot  # noqa: E402

WIDTH = 72
REPEAT = 5


def synthetic(count, seed=22):
    """A peak snapshot of `count` distinct tracebacks (see the module's
    docstring)."""
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
        frames = tuple(reversed(outer + list(stack)))
        traces.append((frames, size, rng.randint(1, 50), size, 1, False,
                       size))
    return Snapshot(traces, sum(t[1] for t in traces), nframes=20,
                    kind="peak")


def hour_timeline():
    times = [1_700_000_000.0 + 0.01 * i for i in range(360_000)]
    mem = [100.0 + 50.0 * ((i * 7919) % 1000) / 1000 + i / 4000
           for i in range(360_000)]
    spans = [(f"app.step{k}", times[k * 3000], times[k * 3000 + 2000])
             for k in range(120)]
    return times, mem, spans


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = (shutil.which("chromium")
                               or shutil.which("chromium-browser"))
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")),
                            options=options)


TIMED = """
    var m = window.memlens, g = m.graphs[0], t0 = performance.now();
    m.search('module1');
    var t1 = performance.now();
    g.zoomTo(1);
    var t2 = performance.now();
    m.search('');
    g.zoomTo(0);
    return [t1 - t0, t2 - t1];
"""


def load(driver, path):
    """(render ms, painted ms, search ms, zoom ms, frames drawn) of one
    fresh load of the page at `path`."""
    driver.get("about:blank")
    driver.get("file://" + path)
    deadline = time.monotonic() + 60
    while True:
        painted = driver.execute_script(
            "return window.memlens && window.memlens.paintedMs")
        if painted or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    render = driver.execute_script("return window.memlens.renderMs")
    drawn = driver.execute_script(
        "return window.memlens.graphs.map(function (g) { return g.drawn; })")
    search, zoom = driver.execute_script(TIMED)
    errors = [e for e in driver.get_log("browser")
              if e["level"] in ("SEVERE", "ERROR")]
    if errors:
        raise SystemExit(f"console errors: {errors}")
    return render, painted, search, zoom, drawn


def main():
    args = parse_args(__doc__, "10,000 tracebacks and 2 repeats")
    count = 10_000 if args.quick else 100_000
    repeat = 2 if args.quick else REPEAT
    print_header("memlens flame graph page", ["selenium"], WIDTH)
    print(f"Tracebacks {count:,}, {repeat} page loads each")
    print()
    snapshot = synthetic(count)
    timeline = hour_timeline()
    pages = {"peak": dict(), "peak + end": dict(end=snapshot),
             "peak + 1 h timeline": dict(timeline=timeline)}
    results = {}
    driver = browser()
    try:
        with tempfile.TemporaryDirectory() as folder:
            for name, extra in pages.items():
                path = os.path.join(folder, "report.html")
                t0 = time.perf_counter()
                snapshot.to_html(path, **extra)
                written = time.perf_counter() - t0
                size = os.path.getsize(path)
                loads = [load(driver, path) for _ in range(repeat)]
                results[name] = (size, written, loads)
    finally:
        driver.quit()
    section("Page", WIDTH)
    print(f"  {'':<22} {'MiB':>6} {'write s':>8} {'render ms':>10}"
          f" {'painted ms':>11} {'search ms':>10} {'zoom ms':>8}")
    for name, (size, written, loads) in results.items():
        med = [statistics.median(x[k] for x in loads) for k in range(4)]
        print(f"  {name:<22} {size / 2**20:>6.2f} {written:>8.2f}"
              f" {med[0]:>10.0f} {med[1]:>11.0f} {med[2]:>10.1f}"
              f" {med[3]:>8.1f}")
    print(f"  frames drawn at first (peak): {results['peak'][2][0][4][0]}")
    print()
    section("Targets", WIDTH)
    size, _, loads = results["peak"]
    painted = statistics.median(x[1] for x in loads)
    ok = target_line(size < 10 * 10**6,
                     f"{count:,} tracebacks: {size / 10**6:.2f} MB < 10 MB")
    ok &= target_line(painted < 2000,
                      f"first render (painted) {painted:.0f} ms < 2000 ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
