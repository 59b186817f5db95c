"""memlens in one minute: readings, an exact transient peak, measure()."""
import time

import memlens

MiB = 1024 * 1024


def transient_spike(nbytes):
    """Fill `nbytes` (every page touched) and free them at once."""
    block = bytearray(b"\x01") * nbytes
    del block


def main():
    info = memlens.memory(detail=True)
    print("1. Readings of this process (C, from /proc/self)")
    print(f"   rss {info.rss / MiB:.2f} MiB, uss {info.uss / MiB:.2f} MiB, "
          f"pss {info.pss / MiB:.2f} MiB, peak so far {info.peak / MiB:.2f} MiB")
    t0 = time.perf_counter()
    for _ in range(10_000):
        memlens.rss()
    per_call = (time.perf_counter() - t0) / 10_000 * 1e9
    print(f"   memlens.rss() costs {per_call:.0f} ns per call")

    print("\n2. A 300 MiB spike that lives a few milliseconds")
    with memlens.Sampler(interval=0.1) as polling, memlens.peak() as window:
        transient_spike(300 * MiB)
    polled = (polling.peak or window.start) - window.start
    print(f"   memlens.peak():        peaked {window.peak_delta / MiB:7.2f} MiB "
          f"above start (source: {window.source})")
    print(f"   polling every 0.1 s:   saw    {polled / MiB:7.2f} MiB "
          "(what a polling profiler reports)")

    print("\n3. measure() as a decorator, with its one-line report")

    @memlens.measure(report=True)
    def load_table(rows):
        return [(i, str(i), float(i)) for i in range(rows)]

    table = load_table(200_000)
    m = load_table.measurements[-1]
    print(f"   Python allocators handed out {m.allocated / MiB:.2f} MiB "
          f"and took back {m.freed / MiB:.2f} MiB inside the call")
    del table

    print("\n4. A line-by-line table (@memlens.profile; the per-line work is C)")

    @memlens.profile
    def my_func():
        a = [1] * (10 ** 6)
        b = [2] * (2 * 10 ** 7)
        del b
        return a

    my_func()


if __name__ == "__main__":
    main()
