"""Waiting on what a native thread does, without timing assumptions."""
import time

#: Seconds before a wait gives up: generous, so that a busy machine never
#: fails a test; a thread that does nothing at all still fails it.
DEADLINE = 30.0


def until(predicate, what, deadline=DEADLINE):
    """Polls `predicate()` until it is true; fails naming `what` if it is
    still false after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"still waiting, after {deadline} s, for "
                                 f"{what}")
        time.sleep(0.001)


def samples(source, n):
    """Waits until a sampler or recorder has taken `n` more samples."""
    target = source.count + n
    until(lambda: source.count >= target, f"{n} more samples")


def never_faster_than_asked(times, interval):
    """Whatever the machine's load, samples keep at least the interval on
    average: the thread's deadlines are `interval` apart or more (a missed
    one is moved to now, never earlier), and from the second sample on
    each has a deadline of its own no earlier than the first sample. The
    last sample, taken by stop() after the thread ended, is off the
    schedule."""
    scheduled = times[:-1]
    assert len(scheduled) < 2 or (
        (len(scheduled) - 2) * interval
        <= scheduled[-1] - scheduled[0] + 1e-6), (
        len(scheduled), scheduled[-1] - scheduled[0])
