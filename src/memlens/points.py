"""Memory points (SPEC 6): a log of the session's memory at chosen moments.

``MEMPOINT(id)`` records a ``MemLog(ID, memory)`` in ``MEMLOGS``, where
``memory`` is the bytes held by the session's data: every live object,
under the rule of asizeof (modules, classes, functions and code objects
neither counted nor followed), walked in C. ``MEMORY()`` returns that
figure without logging, ``MEMPRINT()`` prints the log, and ``@MEMTRACE``
records "Before f()" and "After f()" around each call of a function.
"""

import functools
from collections import namedtuple

from memlens._format import mib
from memlens._objects import session_memory

__all__ = ["MEMPOINT", "MEMLOGS", "MEMPRINT", "MEMORY", "MEMTRACE", "MemLog",
           "MemLogs"]

MemLog = namedtuple("MemLog", ["ID", "memory"])


def _refuse(name):
    def method(self, *args, **kwargs):
        raise TypeError(f"MEMLOGS is read-only: {name} is not allowed; "
                        "add points with MEMPOINT()")
    method.__name__ = name
    return method


class MemLogs(list):
    """The log of memory points: a list that only MEMPOINT can extend."""

    append = _refuse("append")
    extend = _refuse("extend")
    insert = _refuse("insert")
    remove = _refuse("remove")
    pop = _refuse("pop")
    clear = _refuse("clear")
    sort = _refuse("sort")
    reverse = _refuse("reverse")
    __setitem__ = _refuse("item assignment")
    __delitem__ = _refuse("item deletion")
    __iadd__ = _refuse("+=")
    __imul__ = _refuse("*=")
    __add__ = _refuse("+")
    __radd__ = _refuse("+")
    __mul__ = _refuse("*")
    __rmul__ = _refuse("*")

    def _record(self, log):
        list.append(self, log)

    @property
    def memories(self):
        return [log.memory for log in self]

    @property
    def IDs(self):
        return [log.ID for log in self]

    def filter(self, predicate):
        """The logs for which predicate(log) is true, as a list."""
        return [log for log in self if predicate(log)]

    def map(self, function):
        """function(log) for each log, as a list."""
        return [function(log) for log in self]


MEMLOGS = MemLogs()


def MEMORY():
    """Bytes held by the session's data now (nothing is logged)."""
    return session_memory()


def _unique(id_):
    ids = set(MEMLOGS.IDs)
    if id_ not in ids:
        return id_
    n = 2
    while f"{id_}-{n}" in ids:
        n += 1
    return f"{id_}-{n}"


def MEMPOINT(id=None):
    """Log the session's memory now under `id` (default: "point N"); a
    repeated id gets -2, -3, ... appended. Returns the MemLog."""
    if id is None:
        id = f"point {len(MEMLOGS) + 1}"
    elif not isinstance(id, str):
        raise TypeError(f"a memory point's id is a str, not "
                        f"{type(id).__name__}")
    log = MemLog(_unique(id), MEMORY())
    MEMLOGS._record(log)
    return log


def MEMPRINT():
    """Print the log, one point a line."""
    width = max((len(log.ID) for log in MEMLOGS), default=0)
    for i, log in enumerate(MEMLOGS):
        print(f"{i:>3}  {log.ID:<{width}}  {mib(log.memory)} MiB")


def MEMTRACE(func):
    """Decorator: a memory point before and after each call."""
    if not callable(func):
        raise TypeError(f"MEMTRACE decorates callables, not "
                        f"{type(func).__name__}")
    name = getattr(func, "__name__", repr(func))

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        MEMPOINT(f"Before {name}()")
        try:
            return func(*args, **kwargs)
        finally:
            MEMPOINT(f"After {name}()")

    return wrapper
