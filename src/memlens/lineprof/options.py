"""The options of memory_profiler's ``profile`` (``precision``, ``stream``,
``backend``), checked alike by ``@memlens.profile``, ``LineProfiler`` and
the ``profile`` builtin of ``memlens run``.

Kept apart from the profiler so that the builtin checks them without
loading it: ``memlens run`` without ``--line`` never does.
"""

from memlens._checks import int_in_range

#: The most decimals of a MiB figure: a byte count divided by 2**20 ends
#: within 20 decimals, so more would only add zeros.
MAX_PRECISION = 20

#: memory_profiler's backends, and whether each gives the Allocated and
#: Net columns. Its ``tracemalloc`` counts the bytes Python allocated,
#: which memlens's allocator hooks count exactly; the others read the
#: process's memory, which memlens reads as RSS.
BACKENDS = {
    "psutil": False,
    "psutil_pss": False,
    "psutil_uss": False,
    "posix": False,
    "tracemalloc": True,
}


def check_precision(precision):
    int_in_range("precision", precision, 0, MAX_PRECISION)


def check_stream(stream):
    if stream is not None and not callable(getattr(stream, "write", None)):
        raise TypeError(f"stream must have a write() method, not "
                        f"{type(stream).__name__}")


def backend_alloc(backend):
    """Whether memory_profiler's `backend` (None: its default, psutil)
    asks for the allocator hooks' columns; KeyError for a name it does
    not know, as memory_profiler raises."""
    if backend is None:
        return False
    try:
        return BACKENDS[backend]
    except KeyError:
        raise KeyError(f"unknown backend {backend!r}: one of "
                       f"{', '.join(BACKENDS)}") from None
