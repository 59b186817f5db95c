"""Benchmark memlens.dask's cost per task against plain Dask and
dask-memusage.

Run with ``.venv/bin/python bench/bench_dask.py`` (``--quick`` for a smoke
run). Every figure comes from a process of its own that starts a
``distributed.LocalCluster`` (2 worker processes, one thread each), warms
it up, then times two workloads under one variant:

- plain: no profiler;
- memlens: ``memlens.dask.profile(client)`` (a kernel peak window around
  every task, the native sampler, records sent as tasks finish);
- memlens trace: ``profile(client, trace=True)`` (sampled allocation
  tracing too, and the lines alive at each task's peak);
- dask-memusage: its scheduler plugin (``dask_memusage.install``), which
  polls every worker's RSS every 10 ms; "unavailable" when it is not
  installed or does not run with this distributed. Its polling thread
  never stops, which is why every variant runs in a process of its own.

Workloads: (1) 400 tiny tasks (``x + 1``): the cost per task is
(wall time - plain wall time) / 400; (2) 40 tasks that each build and drop
a 4 MiB list: the slowdown is wall time / plain wall time. The time memlens
takes to install its plugin and gather the records when the block ends is
shown apart (it is paid once per block, not per task).

Medians over the repeats; the variants take turns within each repeat. It
is a report, not a test: it exits 0 unless a run fails.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (medians_of, parse_args, print_header,  # noqa: E402
                     section)

QUICK_HELP = "fewer repeats (2 instead of 5)"

N_TINY = 400
N_LISTS = 40
LIST_BYTES = 4 * 2**20

VARIANTS = ("plain", "memlens", "memlens trace", "dask-memusage")


def tiny(x):
    return x + 1


def make_list(i):
    x = [None] * (LIST_BYTES // 8)
    return len(x) + i


def memusage_status():
    """None if dask-memusage can be imported here, else why not."""
    try:
        import dask_memusage  # noqa: F401
    except ImportError as exc:
        return f"dask-memusage cannot be imported: {exc}"
    return None


def child(variant):
    """One variant's run, in this process: prints its figures as JSON."""
    import contextlib

    from distributed import Client, LocalCluster

    import memlens.dask

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=50) as cluster, \
            Client(cluster) as client:
        client.gather(client.map(tiny, range(20), pure=False))
        block = contextlib.nullcontext()
        if variant.startswith("memlens"):
            block = memlens.dask.profile(client,
                                         trace=variant == "memlens trace")
        elif variant == "dask-memusage":
            import dask_memusage

            folder = tempfile.mkdtemp(prefix="memlens-bench-dask-")
            dask_memusage.install(cluster.scheduler,
                                  os.path.join(folder, "memusage.csv"))
        figures = {}
        t0 = time.perf_counter()
        with block:
            t1 = time.perf_counter()
            client.gather(client.map(tiny, range(N_TINY), pure=False))
            t2 = time.perf_counter()
            client.gather(client.map(make_list, range(N_LISTS),
                                     pure=False))
            t3 = time.perf_counter()
        t4 = time.perf_counter()
        figures = {"tiny": t2 - t1, "lists": t3 - t2,
                   "block": (t1 - t0) + (t4 - t3)}
        if variant.startswith("memlens"):
            figures["records"] = len(block.result.tasks)
    print(json.dumps(figures))


def run(variant):
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", variant],
        capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stdout}\n"
                           f"{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    args = parse_args(__doc__, QUICK_HELP, lambda p: p.add_argument(
        "--child", choices=VARIANTS, help="(internal) run one variant"))
    if args.child:
        child(args.child)
        return
    repeat = 2 if args.quick else 5
    problem = memusage_status()
    variants = [v for v in VARIANTS
                if not (problem and v == "dask-memusage")]

    print_header("memlens.dask vs dask-memusage",
                 ["dask", "distributed", "memlens", "dask-memusage"], 72)
    print(f"Repeats  {repeat}; cluster: 2 worker processes, 1 thread each")
    print()

    samples = {v: {"tiny": [], "lists": [], "block": []} for v in variants}
    for r in range(repeat):
        turn = variants[r % len(variants):] + variants[:r % len(variants)]
        for variant in turn:
            try:
                figures = run(variant)
            except RuntimeError as exc:
                if variant != "dask-memusage":
                    raise
                problem = str(exc).strip().splitlines()[-1]
                variants.remove(variant)
                continue
            for k in samples[variant]:
                samples[variant][k].append(figures[k])

    section(f"(1) cost per task, {N_TINY} tiny tasks; (2) slowdown of "
            f"{N_LISTS} tasks of a {LIST_BYTES >> 20} MiB list", 72)
    print(f"{'variant':<16} {'(1) ms/task':>12} {'(1) slowdown':>13} "
          f"{'(2) slowdown':>13} {'block ms':>9}")
    plain = medians_of(samples["plain"])
    for variant in variants:
        m = medians_of(samples[variant])
        per_task = (m["tiny"] - plain["tiny"]) / N_TINY * 1e3
        block = (f"{m['block'] * 1e3:9.1f}" if variant.startswith("memlens")
                 else f"{'-':>9}")
        print(f"{variant:<16} {per_task:>12.3f} "
              f"{m['tiny'] / plain['tiny']:>12.2f}x "
              f"{m['lists'] / plain['lists']:>12.2f}x {block}")
    if problem:
        print(f"{'dask-memusage':<16} unavailable ({problem})")


if __name__ == "__main__":
    main()
