"""Deep sizes of objects (SPEC 6): asizeof, asizesof.

The walk is C (csrc/sizeof.c); this module validates arguments and reports
objects whose __sizeof__ failed. The heap census is _census's.
"""

import sys
import warnings

from memlens import _core
from memlens._checks import int_in_range

__all__ = ["asizeof", "asizesof", "SizeWarning"]


class SizeWarning(UserWarning):
    """Some objects' __sizeof__ raised or returned nonsense: they were
    counted with their basic size."""


def _limit(limit):
    if limit is None:
        return -1
    return int_in_range("limit", limit, 0, sys.maxsize, "an int or None")


def _walk(objs, limit):
    """The C walk; warns (at the caller of the public function) when some
    __sizeof__ failed."""
    sizes, errors = _core._asizesof(objs, _limit(limit))
    if errors:
        warnings.warn(f"{errors} object(s) had a __sizeof__ that failed; "
                      "they were counted with their basic size",
                      SizeWarning, stacklevel=3)
    return sizes


def asizesof(*objs, limit=None):
    """One deep size per argument, in bytes; an object reachable from two
    arguments is counted with the first. Each argument follows asizeof's
    rule, arguments that are functions, classes or modules included.
    `limit`: objects that many references away from an argument are
    counted but not followed."""
    return _walk(objs, limit)


def asizeof(*objs, limit=None):
    """The bytes of every distinct object reachable from `objs`, each
    counted once. Followed: what an object's type reports it refers to,
    every key and value of a dict, a NumPy view's base and the objects a
    NumPy object array's elements (or a structured array's object fields)
    refer to. Not counted nor followed when reached: modules, classes, functions, code objects (the
    program, not its data). Creates nothing while it walks.

    The arguments always count. One of those kinds counts what it alone
    holds, never its module's globals nor other program objects:

    - a function: itself, its defaults and keyword defaults, its closure
      cells and what they hold, its own ``__dict__``; not its code object,
      globals, builtins, name, docstring, module name, annotations or type
      parameters;
    - a builtin function or method: itself and its ``__self__`` (the object
      a builtin method is bound to; a module is not counted);
    - a class or a module: itself, its namespace dict and the entries of it
      that are data (key and value, walked as usual); not the ``__dunder__``
      entries (``__module__``, ``__doc__``, ``__builtins__``, ``__spec__``,
      ``__slots__``...), nor entries whose value is a module, class,
      function or method wrapper (staticmethod, classmethod, property,
      slot and C-level descriptors); a class's bases are not counted;
    - a code object: itself and its constants, names and bytes.

    A bound method is data: it counts itself and its ``__self__``, not its
    function.
    """
    return sum(_walk(objs, limit))
