"""Process memory readings (SPEC 1): thin names over the C readers."""

import os
from array import array
from dataclasses import asdict, dataclass
from typing import Optional

from memlens import _core

__all__ = ["rss", "memory", "MemoryInfo", "peak", "PeakWindow", "Sampler"]

#: Environment variable that forces the source of peak windows:
#: "kernel", "sampler" or "auto" (the default).
PEAK_SOURCE_ENV = "MEMLENS_PEAK_SOURCE"

rss = _core.rss
PeakWindow = _core.PeakWindow


@dataclass(frozen=True)
class MemoryInfo:
    """Memory of this process, in bytes.

    ``peak`` is the highest RSS of the process's life (the kernel's
    high-water mark, with the resets made by peak windows folded in).
    ``uss``, ``pss`` and ``swap`` come from smaps_rollup and are None unless
    ``memory(detail=True)`` asked for them.
    """

    rss: int
    vms: int
    shared: int
    peak: int
    uss: Optional[int] = None
    pss: Optional[int] = None
    swap: Optional[int] = None

    def to_dict(self):
        return asdict(self)


def memory(detail=False):
    """Return a :class:`MemoryInfo` of this process."""
    return MemoryInfo(*_core.memory(detail))


def peak(source=None):
    """Return a :class:`PeakWindow`: ``with memlens.peak() as p: ...``.

    ``source`` is "kernel" (the resettable VmHWM; OSError where refused),
    "sampler" (a native sampling thread) or "auto"/None: the kernel where
    it works, else the sampler. The MEMLENS_PEAK_SOURCE environment
    variable sets the default.
    """
    if source is None:
        env = os.environ.get(PEAK_SOURCE_ENV)
        if env:
            try:
                return _core.PeakWindow(env)
            except ValueError:
                raise ValueError(
                    f"{PEAK_SOURCE_ENV}={env!r}: must be 'auto', 'kernel' "
                    "or 'sampler'"
                ) from None
    return _core.PeakWindow(source)


class Sampler(_core.Sampler):
    """Samples RSS every ``interval`` seconds in a native thread.

    The thread never holds the GIL. ``start()`` and ``stop()`` are
    idempotent; ``stop()`` joins the thread. ``times`` are seconds since
    ``start_time`` (an epoch timestamp), ``values`` the RSS in bytes.
    """

    __slots__ = ()

    def arrays(self, first=0):
        """(times, values) from one consistent copy of the samples, from
        index `first` on: a reader that keeps what it took asks only for
        the samples since."""
        raw_times, raw_values = self._buffers(first)
        times, values = array("d"), array("Q")
        times.frombytes(raw_times)
        values.frombytes(raw_values)
        return times, values

    @property
    def times(self):
        """Seconds since start_time of each sample (array of float)."""
        return self.arrays()[0]

    @property
    def values(self):
        """RSS in bytes of each sample (array of unsigned 64-bit ints)."""
        return self.arrays()[1]

    def to_dict(self):
        t, v = self.arrays()
        return {
            "interval": self.interval,
            "start_time": self.start_time,
            "peak": self.peak,
            "times": t.tolist(),
            "values": v.tolist(),
        }

    def __repr__(self):
        state = "running" if self.running else "stopped"
        return (f"<memlens.Sampler interval={self.interval:g}s {state} "
                f"samples={self.count}>")
