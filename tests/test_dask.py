"""memlens.dask on a real cluster: worker processes, each one thread,
started by the tests."""
import contextlib
import json
import operator
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

distributed = pytest.importorskip("distributed")

import memlens.dask as mdask  # noqa: E402
from memlens.cli import datafile  # noqa: E402

from conftest import MiB, figures  # noqa: E402

pytestmark = pytest.mark.slow

#: The figures must come within this share of the known sizes.
TOLERANCE = 0.05


def _local_cluster(n_workers=2, threads=1):
    return distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=threads, processes=True,
        dashboard_address=":0", silence_logs=50)


@contextlib.contextmanager
def _own_cluster(n_workers=2, threads=1):
    """A cluster for one test, and a client of it. distributed's threads
    that watch its worker processes end once each process is joined,
    which may come just after the cluster closes: waited for."""
    before = set(threading.enumerate())
    with _local_cluster(n_workers, threads) as cluster, \
            distributed.Client(cluster) as c:
        yield cluster, c
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith("AsyncProcess"):
            thread.join(timeout=60)


@pytest.fixture(scope="module", autouse=True)
def no_statistical_profiler():
    """What distributed leaves in this process, dealt with once for the
    module: its statistical profiler runs a thread beside each server that
    older versions end only lazily (off); its offload thread lives as long
    as the process (started here, before any test looks at the threads);
    and the worker processes it spawns start multiprocessing's resource
    tracker, a child of this process that would outlive the module and be
    taken by later tests for one of theirs (stopped after)."""
    import dask
    from distributed import utils
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    had_tracker = getattr(tracker, "_pid", None) is not None
    offload = getattr(utils, "_offload_executor", None)
    if offload is not None:
        offload.submit(int).result()
    try:
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            yield
    finally:
        if not had_tracker and getattr(tracker, "_pid", None) is not None:
            tracker._stop()


@pytest.fixture(scope="module")
def client(no_statistical_profiler):
    with _local_cluster() as cluster, distributed.Client(cluster) as c:
        # Warm up: the client's and workers' lazily made threads and
        # imports come now, not inside the first test.
        c.submit(make_list, 1024, pure=False).result()
        yield c


# ---- the tasks: module-level, so that the workers import them by name -----

def make_array(nbytes):
    import numpy as np

    a = np.ones(nbytes // 8)
    return int(a.nbytes)


def make_list(nbytes):
    x = [None] * (nbytes // 8)
    return len(x)


def native_buffer(nbytes):
    import ctypes

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # glibc raises its mmap threshold after a large block is freed, and a
    # later block of that size comes from the heap, in pages an earlier
    # task may have left resident: fixed here, each buffer is a mapping of
    # its own, as a first one would be.
    M_MMAP_THRESHOLD = -3
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    p = libc.malloc(nbytes)
    assert p
    ctypes.memset(p, 1, nbytes)
    libc.free(p)
    return nbytes


def small(x):
    return x + 1


def block_once(marker):
    """Blocks the first time it runs (until its worker is killed); returns
    at once when run again."""
    if os.path.exists(marker):
        return "again"
    with open(marker, "w"):
        pass
    distributed.Event("block-once-started").set()
    distributed.Event("never-set").wait()
    return "first"


def meet(me, other):
    """Returns once task `other` has started too: the two overlap."""
    distributed.Event(me).set()
    distributed.Event(other).wait()
    return me


def _plugin_state(dask_worker=None):
    from memlens import _core

    state = _core.state()
    return {"plugins": sorted(map(str, dask_worker.plugins)),
            "sampler_threads": state["sampler_threads"],
            "open_windows": state["open_windows"],
            "hooks_users": state["hooks_users"],
            "tracing": _core._trace_is_tracing()}


def _assert_uninstalled(client):
    for addr, state in client.run(_plugin_state).items():
        assert mdask.PLUGIN_NAME not in state["plugins"], addr
        assert state["sampler_threads"] == 0, (addr, state)
        assert state["open_windows"] == 0, (addr, state)
        assert state["hooks_users"] == 0, (addr, state)
        assert not state["tracing"], (addr, state)


# ---- sizes ----------------------------------------------------------------

@figures
def test_each_prefix_peak_is_its_known_size(client):
    sizes = {"make_array": 50 * MiB, "make_list": 10 * MiB,
             "native_buffer": 20 * MiB}
    funcs = {"make_array": make_array, "make_list": make_list,
             "native_buffer": native_buffer}
    with mdask.profile(client) as prof:
        futures = [client.submit(funcs[name], size, pure=False)
                   for name, size in sizes.items()]
        client.gather(futures)
    assert prof.done and not prof.missing and not prof.lost
    rows = {r.prefix: r for r in prof.by_prefix()}
    assert set(rows) == set(sizes)
    for name, size in sizes.items():
        row = rows[name]
        assert row.count == 1 and row.shared == 0
        assert abs(row.peak_max - size) <= TOLERANCE * size, (
            name, row.peak_max / MiB)
    for task in prof.tasks:
        assert task.exact and task.state == "memory"
        assert task.worker in {"0", "1"} and task.duration >= 0
        assert task.peak >= task.rss_start
    # The largest task first among the top ones.
    assert prof.top(1)[0].prefix == "make_array"
    _assert_uninstalled(client)


def test_report_exports_and_plots(client, tmp_path):
    with mdask.profile(client, interval=0.005) as prof:
        client.gather([client.submit(make_list, 2 * MiB, pure=False)
                       for _ in range(4)])
    data = json.loads(prof.to_json())
    assert len(data["tasks"]) == 4
    assert data["prefixes"][0]["prefix"] == "make_list"
    assert data["prefixes"][0]["count"] == 4
    assert {w["name"] for w in data["workers"]} == {"0", "1"}
    text = prof.format()
    assert "make_list" in text and "4" in text
    assert "<table" in prof._repr_html_()
    paths = prof.write_data(str(tmp_path))
    assert len(paths) == 2
    spans = 0
    for path in paths:
        run = datafile.read(path)
        assert run.samples > 0 and not run.truncated
        assert all(s.name == "make_list" for s in run.spans)
        spans += len(run.spans)
        # Spans sit inside the worker's own timeline.
        for s in run.spans:
            assert run.memory.times[0] <= s.start <= s.end
    assert spans == 4
    pytest.importorskip("matplotlib")
    out = tmp_path / "workers.png"
    done = subprocess.run(
        [sys.executable, "-m", "memlens", "plot", *paths, "-o", str(out)],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0


def test_trace_keeps_the_lines_alive_at_each_task_peak(client):
    with mdask.profile(client, trace=True) as prof:
        client.submit(make_list, 8 * MiB, pure=False).result()
    (task,) = prof.tasks
    assert task.top, task
    first = task.top[0]
    assert first["file"] == __file__
    assert first["code"] == "x = [None] * (nbytes // 8)"
    assert abs(first["size"] - 8 * MiB) <= 0.25 * 8 * MiB  # sampled
    _assert_uninstalled(client)


def test_profile_rejects_bad_arguments(client):
    with pytest.raises(ValueError, match="interval"):
        mdask.profile(client, interval=0)
    with pytest.raises(ValueError, match="top"):
        mdask.profile(client, top=-1)
    with pytest.raises(ValueError, match="sample_bytes"):
        mdask.profile(client, trace=True, sample_bytes=-1)
    with pytest.raises(TypeError, match="sample_bytes"):
        mdask.profile(client, trace=True, sample_bytes="64 KB")
    with pytest.raises(ValueError, match="timeout"):
        mdask.profile(client, timeout=0)
    prof = mdask.DaskProfile()
    with pytest.raises(ValueError, match="n must be"):
        prof.top(-2)


def test_tasks_that_overlap_in_threads_say_they_shared_the_peak():
    with _own_cluster(n_workers=1, threads=2) as (_, c):
        with mdask.profile(c) as prof:
            a = c.submit(meet, "meet-a", "meet-b", pure=False)
            b = c.submit(meet, "meet-b", "meet-a", pure=False)
            c.gather([a, b])
    by_key = {t.key: t for t in prof.tasks}
    assert set(by_key) == {a.key, b.key}
    assert by_key[a.key].shared_with == [b.key]
    assert by_key[b.key].shared_with == [a.key]
    assert not any(t.exact for t in prof.tasks)
    assert prof.by_prefix()[0].shared == 2
    assert "shared with 1" in prof.format()


# ---- robustness ------------------------------------------------------------

def test_worker_killed_and_restarted_loses_only_its_unfinished_task(
        tmp_path):
    # A cluster of its own: the nanny's threads watching the new worker
    # process end with it.
    with _own_cluster() as (_, c):
        _kill_and_restart_a_worker(c, tmp_path)


def _kill_and_restart_a_worker(client, tmp_path):
    victim = sorted(client.scheduler_info()["workers"])[0]
    pid = client.run(os.getpid, workers=[victim])[victim]
    marker = str(tmp_path / "blocked")
    with mdask.profile(client) as prof:
        done = [client.submit(small, i, workers=[victim], pure=False)
                for i in range(3)]
        client.gather(done)
        blocked = client.submit(block_once, marker, workers=[victim],
                                allow_other_workers=True, pure=False)
        distributed.Event("block-once-started").wait(timeout=60)
        os.kill(pid, signal.SIGKILL)
        assert blocked.result(timeout=120) == "again"
        client.wait_for_workers(2, timeout=120)
        # A task done on every worker: each one's plugin is set up.
        for addr in client.scheduler_info()["workers"]:
            client.submit(small, 0, workers=[addr], pure=False).result()
    keys = {t.key for t in prof.tasks}
    assert {f.key for f in done} <= keys
    (gone,) = [w for w in prof.workers if w.gone]
    assert gone.pid == pid and gone.address == victim
    assert gone.lost == [blocked.key]
    # Its finished tasks are kept under it; the rerun elsewhere counts.
    kept = [t for t in prof.tasks if t.incarnation == gone.incarnation]
    assert {t.key for t in kept} == {f.key for f in done}
    assert [t.key for t in prof.tasks].count(blocked.key) == 1
    assert prof.lost == {f"{gone.name} ({victim})": [blocked.key]}
    assert "went away" in prof.format() and blocked.key in prof.format()
    assert not prof.missing
    _assert_uninstalled(client)


_NO_MEMLENS_WORKER = textwrap.dedent("""
    import asyncio, sys
    from distributed import Worker


    class NotInstalled:
        # memlens cannot be imported here, as if it were not installed.

        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "memlens" or name.startswith("memlens."):
                raise ModuleNotFoundError(f"No module named {name!r}",
                                          name=name)
            return None


    sys.meta_path.insert(0, NotInstalled)

    async def main():
        async with Worker(sys.argv[1], nthreads=1, name="no-memlens",
                          dashboard_address=None) as worker:
            await worker.finished()

    asyncio.run(main())
""")


def test_worker_without_memlens_is_named_and_the_others_report(tmp_path):
    with _own_cluster(n_workers=1) as (cluster, c):
        script = tmp_path / "worker.py"
        script.write_text(_NO_MEMLENS_WORKER)
        proc = subprocess.Popen([sys.executable, str(script),
                                 cluster.scheduler_address],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            c.wait_for_workers(2, timeout=120)
            addrs = c.scheduler_info()["workers"]
            lacking = [a for a, w in addrs.items()
                       if w["name"] == "no-memlens"]
            (good,) = [a for a in addrs if a not in lacking]
            with mdask.profile(c) as prof:
                # A builtin: that worker cannot import this module (it
                # imports memlens).
                c.gather([c.submit(operator.add, i, 1, workers=[a],
                                   pure=False)
                          for i in range(2) for a in addrs])
            assert list(prof.missing) == ["no-memlens"]
            assert "memlens" in prof.missing["no-memlens"]
            assert [w.name for w in prof.workers] == ["0"]
            assert len(prof.tasks) == 2
            assert {t.address for t in prof.tasks} == {good}
            assert "no-memlens" in prof.format()
            state = c.run(_plugin_state, workers=[good])[good]
            assert mdask.PLUGIN_NAME not in state["plugins"]
            assert state["sampler_threads"] == 0
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def test_import_of_memlens_dask_leaves_dask_itself_alone():
    code = ("import memlens.dask, dask, distributed, sys; "
            "assert dask.__name__ == 'dask'; "
            "assert sys.modules['memlens.dask'] is not dask; "
            "assert 'site-packages' in dask.__file__ or "
            "'dist-packages' in dask.__file__, dask.__file__")
    subprocess.run([sys.executable, "-c", code], check=True)
