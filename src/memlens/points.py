"""Memory points (SPEC 6): a log of the session's memory at chosen moments.

The names and their behaviour follow the session-memory tools these users
know, so that a notebook written for one runs unchanged:

- ``MEMPOINT(id=None)`` records ``MemLog(ID, memory)`` in ``MEMLOGS`` and
  returns ``None`` (nothing is echoed at a prompt). Any object can be an
  ID: its ``str()`` is kept, so the default ID is ``'None'``. A repeated ID
  gets ``-2``, ``-3``, ... appended: ``'None'``, ``'None-2'``, ``'None-3'``.
- ``MEMLOGS`` is the one ``MemLogsList``, a read-only
  ``collections.UserList`` of the logs, with ``.memories``, ``.IDs``,
  ``.filter(pred)`` and ``.map(fn)``.
- ``MEMPRINT()`` prints one line per point: index, memory in MB, ``→``, ID.
- ``MEMORY()`` returns the figure now without logging it.
- ``@MEMTRACE`` records ``Before f()`` and ``After f()`` around each call.

``memory`` is the bytes held by the session's data: every live object,
under the rule of asizeof (modules, classes, functions and code objects
neither counted nor followed), walked in C. ``import memlens.builtins``
makes these names builtins and records a first point, ``memlens import``.
"""

import functools
from collections import UserList, namedtuple

from memlens._report import mib
from memlens._census import session_memory

__all__ = ["MEMPOINT", "MEMLOGS", "MEMPRINT", "MEMORY", "MEMTRACE", "MemLog",
           "MemLogsList", "MemLogs"]

MemLog = namedtuple("MemLog", ["ID", "memory"])


def _refused(what):
    return TypeError(f"MEMLOGS is read-only: {what} is not allowed; "
                     "add points with MEMPOINT()")


def _refuse(what):
    def method(self, *args, **kwargs):
        raise _refused(what)
    method.__name__ = what if what.isidentifier() else "refused"
    method.__doc__ = f"Refused: {what} would change the log."
    return method


class MemLogsList(UserList):
    """The log of memory points, ``MEMLOGS``: read like a list, changed
    only by ``MEMPOINT()``.

    Indexing, slicing (a plain list), ``len``, iteration, ``in`` and
    comparison with a list work as on a list; the repr is the list's.
    Every change is a TypeError: append, extend, insert, remove, pop,
    clear, sort, reverse, item or slice assignment and deletion, ``+``,
    ``*``, ``+=`` and ``*=``. ``.data`` is a copy, and copying or
    pickling the log gives a plain list: there is one log per session.
    """

    _made = False

    def __init__(self):
        if MemLogsList._made:
            raise TypeError("there is one MemLogsList, MEMLOGS; copy it "
                            "with list(MEMLOGS)")
        MemLogsList._made = True
        self._logs = []

    def _record(self, log):
        self._logs.append(log)

    @property
    def data(self):
        """A copy of the logs as a plain list."""
        return list(self._logs)

    @data.setter
    def data(self, value):
        raise _refused("assigning .data")

    def __repr__(self):
        return repr(self._logs)

    def __len__(self):
        return len(self._logs)

    def __iter__(self):
        return iter(self._logs)

    def __reversed__(self):
        return reversed(self._logs)

    def __contains__(self, item):
        return item in self._logs

    def __getitem__(self, index):
        return self._logs[index]

    def __setitem__(self, index, value):
        raise _refused("slice assignment" if isinstance(index, slice)
                       else "item assignment")

    def __delitem__(self, index):
        raise _refused("slice deletion" if isinstance(index, slice)
                       else "item deletion")

    def copy(self):
        """The logs as a plain list."""
        return list(self._logs)

    __copy__ = copy

    def __reduce_ex__(self, protocol):
        return (list, (list(self._logs),))

    append = _refuse("append")
    extend = _refuse("extend")
    insert = _refuse("insert")
    remove = _refuse("remove")
    pop = _refuse("pop")
    clear = _refuse("clear")
    sort = _refuse("sort")
    reverse = _refuse("reverse")
    __add__ = _refuse("+")
    __radd__ = _refuse("+")
    __iadd__ = _refuse("+=")
    __mul__ = _refuse("*")
    __rmul__ = _refuse("*")
    __imul__ = _refuse("*=")

    @property
    def memories(self):
        """The memory of each point, in bytes, as a list."""
        return [log.memory for log in self._logs]

    @property
    def IDs(self):
        """The ID of each point, as a list."""
        return [log.ID for log in self._logs]

    def filter(self, predicate):
        """The logs for which predicate(log) is true, as a list."""
        return [log for log in self._logs if predicate(log)]

    def map(self, function):
        """function(log) for each log, as a list."""
        return [function(log) for log in self._logs]


# The name the class had before it was a UserList; kept for importers.
MemLogs = MemLogsList

MEMLOGS = MemLogsList()


def MEMORY():
    """Bytes held by the session's data now (nothing is logged)."""
    return session_memory()


def _unique(ID):
    IDs = set(MEMLOGS.IDs)
    if ID not in IDs:
        return ID
    n = 2
    while f"{ID}-{n}" in IDs:
        n += 1
    return f"{ID}-{n}"


def MEMPOINT(id=None):
    """Log the session's memory now as ``MemLog(str(id), bytes)``.

    Any object can be the ID; its ``str()`` is kept, so ``MEMPOINT()`` logs
    ``'None'``. An ID already in the log gets ``-2``, ``-3``, ... appended
    (``'None-2'``; ``MEMPOINT(3)`` twice gives ``'3'`` and ``'3-2'``).
    Returns None, so nothing is echoed at a prompt; read the point back
    as ``MEMLOGS[-1]``.
    """
    MEMLOGS._record(MemLog(_unique(str(id)), MEMORY()))


def MEMPRINT():
    """Print the log, one point a line: index, memory, an arrow and the ID,
    as `` 0    2.03 MB → memlens import``. MB here is 2**20 bytes (a MiB),
    as the session-memory tools this follows print it."""
    for i, log in enumerate(MEMLOGS):
        print(f"{i:>2} {mib(log.memory, 2, 7)} MB → {log.ID}")


def MEMTRACE(func):
    """Decorator: a point ``Before f()`` and one ``After f()`` around each
    call, ``f`` being the function's ``__name__``."""
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
