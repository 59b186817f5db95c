"""Memory of Dask tasks, per task and per worker (SPEC 11).

Two halves. On each worker, :class:`MemlensPlugin` (a
``distributed.WorkerPlugin``) opens a kernel peak window (memlens.peak())
when a task starts executing and closes it when the task leaves the
executing states, keeps the worker's RSS timeline in memlens's native
Sampler, and, with ``trace=True``, takes the lines alive at the task's
own peak from memlens's allocation tracing. On the client,
:func:`profile` registers the plugin for a block, gathers what the
workers sent, and builds a :class:`DaskProfile`.

Where the hooks run: distributed calls a plugin's ``setup``,
``teardown`` and ``transition`` on the worker's event loop, never in the
thread that executes the task. ``transition(key, "ready", "executing")``
comes just before the task is handed to the thread pool, and the
transition out of "executing" just after its result came back. A
window opened and closed there holds the task's whole run, plus the
event loop's own work in between (messages, data received for other
tasks). With one thread per worker no other task runs in that time, so
the window's peak is the task's: exact, as the kernel's high-water mark
is. With more threads, tasks that overlap share one process and one
mark: each record then says which tasks it shared its window with.
Start and duration are the executing thread's own (the worker's
``startstops``).

Each finished task is sent at once to the scheduler's event log (the
worker's ``log_event``, on the same stream and before the message that
tells the scheduler the task finished), and the client follows that
topic live. A worker that dies therefore loses only the records of the
tasks it had not finished: the scheduler knows of no finished task whose
record it has not received. The timeline goes the same way, in parts,
at most once a second between tasks and when the block ends.

distributed is imported only here, never by ``import memlens``.
"""

import json
import os
import re
import statistics
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from distributed import WorkerPlugin
from dask.utils import key_split

from memlens._checks import int_in_range
from memlens._report import html_table, mib

__all__ = ["MemlensPlugin", "profile", "DaskProfile", "TaskRecord",
           "WorkerRecord", "PLUGIN_NAME", "TOPIC"]

#: The name the plugin is registered under, and the scheduler's event
#: topic the workers send their records to.
PLUGIN_NAME = "memlens"
TOPIC = "memlens-dask"

#: Sampling of traced allocations: one record per this many bytes on
#: average (memlens.start_tracing's sample_bytes); 0 traces every block.
SAMPLE_BYTES = 64 * 1024

#: Seconds between two parts of a worker's timeline sent between tasks.
SHIP_EVERY = 1.0

#: How many other keys a record names when its window was shared.
MAX_SHARED_KEYS = 20

#: States in which a task started on this worker still runs in a thread.
_RUNNING = frozenset({"executing", "long-running", "cancelled", "resumed"})

_BLANKS = re.compile(r"\s+")


# --------------------------------------------------------------------------
# The worker's half
# --------------------------------------------------------------------------

class _Running:
    """One task executing on this worker: its window and what it
    overlapped."""

    __slots__ = ("key", "window", "began", "allocated0", "shared", "traced")

    def __init__(self, key, window, allocated0, traced):
        self.key = key
        self.window = window
        self.began = time.time()
        self.allocated0 = allocated0
        self.shared = set()
        self.traced = traced


class MemlensPlugin(WorkerPlugin):
    """Records every task's peak RSS rise and each worker's RSS timeline.

    ``client.register_plugin(MemlensPlugin(), name=memlens.dask.PLUGIN_NAME)``
    installs it on every worker, present and future; :func:`profile` does
    that for a block. ``trace=True`` also traces allocations (one record
    per ``sample_bytes`` on average; 0 traces every block) and keeps the
    ``top`` lines alive at each task's own peak. ``interval`` is the
    timeline's sampling interval in seconds. Records go to the scheduler's
    event topic :data:`TOPIC` as tasks finish, tagged with ``run_id``.
    """

    idempotent = False

    def __init__(self, run_id=None, trace=False, sample_bytes=SAMPLE_BYTES,
                 interval=0.01, top=5):
        if not isinstance(interval, (int, float)) or isinstance(
                interval, bool) or not interval > 0:
            raise ValueError(f"interval must be a positive number of "
                             f"seconds, not {interval!r}")
        if isinstance(top, bool) or not isinstance(top, int) or top < 0:
            raise ValueError(f"top must be an int >= 0, not {top!r}")
        # Checked here: a bad value would otherwise fail on every worker.
        from memlens._tracing import MAX_SAMPLE_BYTES

        int_in_range("sample_bytes", sample_bytes, 0, MAX_SAMPLE_BYTES)
        self.run_id = run_id or uuid.uuid4().hex
        self.trace = bool(trace)
        self.sample_bytes = sample_bytes
        self.interval = float(interval)
        self.top = top
        self._worker = None

    # ---- lifecycle (the worker's event loop) -----------------------------

    def setup(self, worker):
        from memlens import _core
        from memlens._readings import Sampler, peak

        self._core = _core
        self._peak = peak
        self._worker = worker
        self._incarnation = uuid.uuid4().hex
        self._seq = 0
        self._open = {}
        self._shipped = 0
        self._last_ship = time.monotonic()
        state = getattr(worker, "state", worker)
        self._nthreads = int(getattr(state, "nthreads", 0) or 0)
        self._hooks = False
        self._tracing = False
        self._sampler = Sampler(self.interval)
        try:
            _core._hooks_acquire(True)
            self._hooks = True
            if self.trace:
                from memlens._tracing import start_tracing

                start_tracing(1, self.sample_bytes)
                self._tracing = True
            self._sampler.start()
            # The source every window of this worker will use.
            with peak() as probe:
                pass
        except BaseException:
            self._release()
            raise
        self._emit("hello", name=str(worker.name), address=worker.address,
                   pid=os.getpid(), nthreads=self._nthreads,
                   source=probe.source, trace=self.trace,
                   start_time=self._sampler.start_time)

    def teardown(self, worker):
        if self._worker is None:
            return
        try:
            # Tasks still running when the plugin goes: their windows are
            # closed unread, and the client counts them as unfinished.
            for running in self._open.values():
                running.window.__exit__(None, None, None)
            self._open.clear()
            try:
                self._ship_timeline()
            except Exception:
                pass  # the worker is closing and its stream with it
        finally:
            self._release()
            self._worker = None

    def _release(self):
        self._sampler.stop()
        if self._tracing:
            from memlens._tracing import stop_tracing

            stop_tracing()
            self._tracing = False
        if self._hooks:
            self._core._hooks_release(True)
            self._hooks = False

    # ---- tasks (the worker's event loop) ---------------------------------

    def transition(self, key, start, finish, **kwargs):
        if self._worker is None:
            return
        if finish == "executing" and key not in self._open:
            self._begin(key)
        elif key in self._open and finish not in _RUNNING:
            self._end(key, finish)

    def _begin(self, key):
        traced = False
        if self._tracing and not self._open:
            # Alone: the traced peak from here on is this task's.
            from memlens._tracing import reset_peak

            reset_peak()
            traced = True
        window = self._peak()
        window.__enter__()
        running = _Running(key, window, self._core.alloc_counters()[0],
                           traced)
        for other in self._open.values():
            other.shared.add(key)
            running.shared.add(other.key)
            other.traced = False
        self._open[key] = running
        self._emit("begin", key=_key_text(key), time=running.began)

    def _end(self, key, finish):
        running = self._open.pop(key)
        allocated = self._core.alloc_counters()[0] - running.allocated0
        window = running.window
        window.__exit__(None, None, None)
        now = time.time()
        start, stop = self._compute_times(key, running.began, now)
        top = None
        if running.traced and not running.shared:
            top = self._top_lines()
        shared = sorted(_key_text(k) for k in running.shared)
        self._emit(
            "task", key=_key_text(key), prefix=_prefix(key),
            state=finish, start=start, duration=max(stop - start, 0.0),
            rss_start=window.start, rss_end=window.end, peak=window.peak,
            peak_rise=window.peak_delta, allocated=allocated,
            exact=not running.shared and self._nthreads == 1,
            shared=len(shared), shared_with=shared[:MAX_SHARED_KEYS],
            source=window.source, top=top)
        if time.monotonic() - self._last_ship >= SHIP_EVERY:
            self._ship_timeline()

    def _compute_times(self, key, began, ended):
        """(start, stop) epoch seconds of the task's run in its thread;
        the window's own when the worker has none."""
        ts = getattr(getattr(self._worker, "state", None), "tasks",
                     {}).get(key)
        for entry in reversed(getattr(ts, "startstops", None) or ()):
            if entry.get("action") == "compute":
                return entry["start"], entry["stop"]
        return began, ended

    def _top_lines(self):
        from memlens._tracing import peak_snapshot

        snapshot = peak_snapshot()
        return [{"file": s.filename, "line": s.lineno, "size": s.size,
                 "code": s.line} for s in snapshot.top(self.top)]

    # ---- sending ---------------------------------------------------------

    def _emit(self, kind, **fields):
        self._seq += 1
        fields.update(kind=kind, run=self.run_id,
                      incarnation=self._incarnation, seq=self._seq)
        self._worker.log_event(TOPIC, fields)

    def _ship_timeline(self):
        """The samples taken since the last part, as one more part."""
        times, values = self._sampler.arrays(self._shipped)
        self._last_ship = time.monotonic()
        if not times:
            return
        self._shipped += len(times)
        self._emit("timeline", start_time=self._sampler.start_time,
                   times=times.tolist(), values=values.tolist())

    def flush(self):
        """Sends what is left of the timeline; returns how many records
        this worker sent, for the client to wait for them all."""
        self._ship_timeline()
        return {"incarnation": self._incarnation, "sent": self._seq,
                "name": str(self._worker.name),
                "running": [_key_text(k) for k in self._open]}


def _flush(name, run_id, dask_worker=None):
    """Run on each worker by profile(): its plugin's flush()."""
    plugin = dask_worker.plugins.get(name)
    if not isinstance(plugin, MemlensPlugin) or plugin.run_id != run_id:
        return {"name": str(dask_worker.name), "missing": True}
    return plugin.flush()


def _installed(name, dask_worker=None):
    """Whether a plugin of that name is still on the worker."""
    return name in dask_worker.plugins


def _key_text(key):
    """A task key as text (tuples of arrays' chunks included)."""
    return key if isinstance(key, str) else str(key)


def _prefix(key):
    return _BLANKS.sub("_", key_split(key)) or "?"


# --------------------------------------------------------------------------
# The client's half
# --------------------------------------------------------------------------

@dataclass
class TaskRecord:
    """One task as its worker saw it. Sizes are bytes, times epoch
    seconds. ``peak_rise`` is the highest RSS while it ran less the RSS
    when it started; ``exact`` when nothing else ran beside it (one thread
    per worker), else ``shared_with`` names the tasks that overlapped it
    (``shared`` counts them) and the peak is theirs together.
    ``allocated`` is what the Python allocators handed out meanwhile, all
    threads of the worker; ``top`` the traced lines alive at the task's
    peak (``trace=True``, tasks that ran alone)."""

    key: str
    prefix: str
    worker: str
    address: str
    state: str
    start: float
    duration: float
    rss_start: int
    rss_end: int
    peak: int
    peak_rise: int
    allocated: int
    exact: bool
    shared: int = 0
    shared_with: List[str] = field(default_factory=list)
    source: str = "kernel"
    top: Optional[List[dict]] = None
    incarnation: str = ""

    def to_dict(self):
        return asdict(self)


@dataclass
class PrefixRow:
    """Tasks of one prefix: how many, their peak rises, what they
    allocated, how many shared their window."""

    prefix: str
    count: int
    peak_max: int
    peak_median: float
    allocated: int
    shared: int

    def to_dict(self):
        return asdict(self)


@dataclass
class WorkerRecord:
    """One worker process (a worker restarted by its nanny is a new one,
    under the same name). ``times`` are epoch seconds, ``values`` RSS
    bytes. ``lost`` names the tasks it was running when it went away
    without finishing them (their records are lost), ``gone`` says it
    did."""

    name: str
    address: str
    pid: int
    nthreads: int
    source: str
    incarnation: str
    times: List[float] = field(default_factory=list)
    values: List[int] = field(default_factory=list)
    gone: bool = False
    lost: List[str] = field(default_factory=list)

    @property
    def exact(self):
        return self.nthreads == 1

    def to_dict(self):
        return asdict(self)


class DaskProfile:
    """What :func:`profile` gathered: ``tasks`` (:class:`TaskRecord`),
    ``workers`` (:class:`WorkerRecord`, one per worker process),
    ``missing`` (worker name: why it sent nothing, such as memlens not
    importable there) and ``notes`` (what else the report must say).
    Filled when the block ends."""

    def __init__(self):
        self.tasks: List[TaskRecord] = []
        self.workers: List[WorkerRecord] = []
        self.missing: Dict[str, str] = {}
        self.notes: List[str] = []
        self.done = False

    # ---- views -----------------------------------------------------------

    def by_prefix(self):
        """One :class:`PrefixRow` per task prefix, highest peak first."""
        groups = {}
        for t in self.tasks:
            groups.setdefault(t.prefix, []).append(t)
        rows = [PrefixRow(prefix, len(ts), max(t.peak_rise for t in ts),
                          statistics.median(t.peak_rise for t in ts),
                          sum(t.allocated for t in ts),
                          sum(1 for t in ts if not t.exact))
                for prefix, ts in groups.items()]
        rows.sort(key=lambda r: (-r.peak_max, r.prefix))
        return rows

    def top(self, n=10):
        """The `n` tasks whose peak rose highest."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, not {n!r}")
        return sorted(self.tasks, key=lambda t: (-t.peak_rise, t.start))[:n]

    @property
    def lost(self):
        """{worker process: keys of the tasks it lost} for each worker that
        went away in the block."""
        return {f"{w.name} ({w.address})": list(w.lost)
                for w in self.workers if w.gone}

    # ---- output ----------------------------------------------------------

    def format(self, top=10):
        """The report as text: the prefix table, the top tasks, the
        workers, and what is missing or lost."""
        out = [f"memlens.dask: {len(self.tasks)} tasks on "
               f"{len(self.workers)} worker processes"]
        rows = self.by_prefix()
        width = max([len("prefix")] + [len(r.prefix) for r in rows])
        out.append(f"{'prefix':<{width}}  count  peak max MiB  peak median "
                   f"MiB  allocated MiB  shared")
        for r in rows:
            out.append(f"{r.prefix:<{width}}  {r.count:5d}  "
                       f"{mib(r.peak_max, 2, 12)}  "
                       f"{mib(r.peak_median, 2, 15)}  "
                       f"{mib(r.allocated, 2, 13)}  {r.shared:6d}")
        tops = self.top(top)
        if tops:
            out.append(f"Top {len(tops)} tasks by peak rise")
            for i, t in enumerate(tops, 1):
                how = "exact" if t.exact else f"shared with {t.shared}"
                out.append(f"#{i}: {t.key} on {t.worker}: "
                           f"{mib(t.peak_rise)} MiB ({how}) in "
                           f"{t.duration:.3f} s")
                for line in t.top or ():
                    out.append(f"    {line['file']}:{line['line']}: "
                               f"{mib(line['size'])} MiB  {line['code']}")
        for w in self.workers:
            peak = max(w.values) if w.values else None
            state = " (went away)" if w.gone else ""
            out.append(f"worker {w.name} {w.address} pid {w.pid}{state}: "
                       f"{w.nthreads} thread(s), peaks by {w.source}, "
                       f"timeline peak "
                       f"{mib(peak) + ' MiB' if peak is not None else 'none'}")
        for name, why in self.missing.items():
            out.append(f"worker {name} sent nothing: {why}")
        out.extend(self.notes)
        return "\n".join(out)

    def __str__(self):
        return self.format()

    def __repr__(self):
        return (f"<memlens.dask.DaskProfile {len(self.tasks)} tasks, "
                f"{len(self.workers)} workers, {len(self.missing)} "
                f"missing>")

    def _repr_html_(self):
        rows = [(r.prefix, r.count, mib(r.peak_max), mib(r.peak_median),
                 mib(r.allocated), r.shared) for r in self.by_prefix()]
        notes = "".join(f"<p>{_escape(n)}</p>" for n in self.notes)
        missing = "".join(f"<p>worker {_escape(k)} sent nothing: "
                          f"{_escape(v)}</p>"
                          for k, v in self.missing.items())
        return html_table(("prefix", "count", "peak max MiB",
                           "peak median MiB", "allocated MiB", "shared"),
                          rows) + missing + notes

    def to_dict(self):
        return {"tasks": [t.to_dict() for t in self.tasks],
                "prefixes": [r.to_dict() for r in self.by_prefix()],
                "workers": [w.to_dict() for w in self.workers],
                "missing": dict(self.missing), "lost": self.lost,
                "notes": list(self.notes)}

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    def runs(self):
        """Each worker process as a memlens data file's content (RunData):
        its RSS timeline as MEM samples, its tasks as FUNC spans named by
        prefix, one lane per overlapping task."""
        from memlens.cli.datafile import RunData, Span

        out = []
        for w in self.workers:
            run = RunData(path=f"{w.name}")
            run.cmdline = (f"dask worker {w.name} {w.address} pid {w.pid}"
                           + (" (went away)" if w.gone else ""))
            run.memory.times.extend(w.times)
            run.memory.mem.extend(v / 2**20 for v in w.values)
            lanes = []  # end time of the last span in each lane
            tasks = sorted((t for t in self.tasks
                            if t.incarnation == w.incarnation),
                           key=lambda t: t.start)
            for t in tasks:
                end = t.start + t.duration
                depth = next((i for i, last in enumerate(lanes)
                              if last <= t.start), len(lanes))
                if depth == len(lanes):
                    lanes.append(end)
                lanes[depth] = end
                run.spans.append(Span(t.prefix, t.start, end,
                                      t.rss_start / 2**20,
                                      t.rss_end / 2**20, depth))
            out.append(run)
        return out

    def write_data(self, directory="."):
        """Writes one data file per worker process into `directory`
        (``memlens_dask_<worker>_<pid>.dat``), which ``memlens plot``,
        ``report`` and ``peak`` read. Returns the paths."""
        from memlens.cli.datafile import lines

        paths = []
        for w, run in zip(self.workers, self.runs()):
            stem = _BLANKS.sub("_", re.sub(r"[^\w.-]", "_", w.name))
            path = os.path.join(directory,
                                f"memlens_dask_{stem}_{w.pid}.dat")
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(lines(run))
            paths.append(path)
        return paths


def _escape(text):
    import html

    return html.escape(str(text))


class profile:
    """``with memlens.dask.profile(client, trace=False) as prof:``

    Installs :class:`MemlensPlugin` on every worker of `client`'s
    cluster for the block (workers that join meanwhile get it too), and
    when the block ends gathers every worker's records into ``prof``, a
    :class:`DaskProfile`, then removes the plugin: nothing of memlens stays
    running on the workers. A worker where the plugin cannot be installed
    (memlens not importable there) is named in ``prof.missing``; the
    others report. ``timeout`` bounds the wait, in seconds, for records
    still on their way to the client.
    """

    def __init__(self, client, trace=False, *, sample_bytes=SAMPLE_BYTES,
                 interval=0.01, top=5, timeout=30.0):
        if isinstance(timeout, bool) or not isinstance(
                timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of "
                             f"seconds, not {timeout!r}")
        self.client = client
        self.plugin = MemlensPlugin(trace=trace, sample_bytes=sample_bytes,
                                    interval=interval, top=top)
        self.timeout = timeout
        self.result = DaskProfile()
        self._events = {}
        self._arrived = threading.Condition()
        self._active = False
        self._install_error = None

    # Called on the client's event loop for each event of the topic.
    def _receive(self, event):
        msg = event[1] if isinstance(event, (tuple, list)) else event
        if not isinstance(msg, dict) or msg.get("run") != self.plugin.run_id:
            return
        with self._arrived:
            self._events[(msg["incarnation"], msg["seq"])] = msg
            self._arrived.notify_all()

    def __enter__(self):
        client = self.client
        client.subscribe_topic(TOPIC, self._receive)
        self._active = True
        try:
            client.register_plugin(self.plugin, name=PLUGIN_NAME)
        except Exception as exc:
            # The plugin could not be unpickled on some worker: the others
            # have it; which ones lack it is asked when the block ends.
            self._install_error = f"{type(exc).__name__}: {exc}"
            self.result.notes.append(
                f"the plugin could not be installed on every worker: "
                f"{self._install_error}")
        except BaseException:
            self._remove()
            raise
        return self.result

    def __exit__(self, exc_type, exc, tb):
        try:
            self._gather()
        finally:
            self._remove()
        self.result.done = True
        return False

    def _names(self):
        try:
            info = self.client.scheduler_info()["workers"]
        except Exception:
            return {}
        return {addr: str(w.get("name", addr)) for addr, w in info.items()}

    def _gather(self):
        client, result = self.client, self.result
        names = self._names()
        answers = client.run(_flush, PLUGIN_NAME, self.plugin.run_id,
                             on_error="return")
        expected = {}
        for addr, answer in answers.items():
            name = names.get(addr, addr)
            if isinstance(answer, BaseException):
                why = f"{type(answer).__name__}: {answer}"
                if self._install_error and self._install_error not in why:
                    why += (f" (installing the plugin failed: "
                            f"{self._install_error})")
                result.missing[name] = why
            elif answer.get("missing"):
                result.missing[name] = "the plugin is not installed there"
            else:
                expected[answer["incarnation"]] = answer["sent"]
        self._why_missing(names)
        events = self._wait(expected)
        self._build(events, expected)

    def _why_missing(self, names):
        """For the workers that did not answer, whether memlens imports
        there, asked through the standard library alone (a message holding
        memlens's own functions is what they cannot read)."""
        failed = [addr for addr, name in names.items()
                  if name in self.result.missing]
        if not failed:
            return
        import importlib

        try:
            answers = self.client.run(importlib.import_module,
                                      "memlens.dask", workers=failed,
                                      on_error="return")
        except Exception:
            return
        for addr, answer in answers.items():
            if isinstance(answer, ImportError):
                self.result.missing[names[addr]] = (
                    f"memlens cannot be imported there "
                    f"({type(answer).__name__}: {answer})")

    def _wait(self, expected):
        """Waits until every record each live worker sent has arrived, or
        the timeout; returns the events, missed ones added from the
        scheduler's log."""
        def complete():
            got = {}
            for inc, _ in self._events:
                got[inc] = got.get(inc, 0) + 1
            return all(got.get(inc, 0) >= n for inc, n in expected.items())

        with self._arrived:
            self._arrived.wait_for(complete, timeout=self.timeout)
        # Events published before the subscription took effect are in the
        # scheduler's log (as long as it keeps them).
        for event in self.client.get_events(TOPIC):
            self._receive(event)
        with self._arrived:
            return dict(self._events)

    def _build(self, events, expected):
        result = self.result
        workers, begun, finished = {}, {}, set()
        counts = {}
        for (inc, _), msg in sorted(events.items(),
                                    key=lambda kv: (kv[0][0], kv[0][1])):
            counts[inc] = counts.get(inc, 0) + 1
            kind = msg["kind"]
            if kind == "hello":
                workers[inc] = WorkerRecord(
                    msg["name"], msg["address"], msg["pid"],
                    msg["nthreads"], msg["source"], inc)
            elif kind == "begin":
                begun.setdefault(inc, []).append(msg["key"])
            elif kind == "timeline" and inc in workers:
                w = workers[inc]
                w.times.extend(msg["start_time"] + t for t in msg["times"])
                w.values.extend(msg["values"])
            elif kind == "task" and inc in workers:
                w = workers[inc]
                finished.add((inc, msg["key"]))
                result.tasks.append(TaskRecord(
                    key=msg["key"], prefix=msg["prefix"], worker=w.name,
                    address=w.address, state=msg["state"],
                    start=msg["start"], duration=msg["duration"],
                    rss_start=msg["rss_start"], rss_end=msg["rss_end"],
                    peak=msg["peak"], peak_rise=msg["peak_rise"],
                    allocated=msg["allocated"], exact=msg["exact"],
                    shared=msg["shared"], shared_with=list(msg["shared_with"]),
                    source=msg["source"], top=_lines(msg["top"]),
                    incarnation=inc))
        for inc, w in workers.items():
            if inc in expected:
                short = expected[inc] - counts.get(inc, 0)
                if short > 0:
                    result.notes.append(
                        f"worker {w.name}: {short} records did not arrive "
                        f"within {self.timeout:g} s")
                continue
            w.gone = True
            w.lost = [k for k in begun.get(inc, ())
                      if (inc, k) not in finished]
            result.notes.append(
                f"worker {w.name} ({w.address}, pid {w.pid}) went away "
                f"during the block: the records of the "
                f"{len(w.lost)} task(s) it had not finished are lost"
                + (f" ({', '.join(w.lost[:MAX_SHARED_KEYS])})"
                   if w.lost else "")
                + "; its finished tasks are kept, and its timeline up "
                "to its last part")
        result.workers = sorted(workers.values(),
                                key=lambda w: (w.name, w.times[:1]))
        result.tasks.sort(key=lambda t: t.start)

    def _remove(self):
        """Uninstalls the plugin everywhere and stops following the topic."""
        if not self._active:
            return
        self._active = False
        client = self.client
        try:
            try:
                client.unregister_worker_plugin(PLUGIN_NAME)
            except Exception:
                # A worker that never had it answers with an error; the
                # others have torn theirs down. Check that none is left.
                left = client.run(_installed, PLUGIN_NAME,
                                  on_error="return")
                if any(v is True for v in left.values()):
                    raise
        finally:
            client.unsubscribe_topic(TOPIC)


def _lines(top):
    """Traced lines as sent (msgpack makes tuples of lists)."""
    return None if top is None else [dict(line) for line in top]
