"""Deep sizes of objects (SPEC 6): asizeof, asizesof.

The walk is C (csrc/sizeof.c); this module validates arguments and reports
objects whose __sizeof__ failed.
"""

import warnings

from memlens import _core

__all__ = ["asizeof", "asizesof", "SizeWarning"]


class SizeWarning(UserWarning):
    """Some objects' __sizeof__ raised or returned nonsense: they were
    counted with their basic size."""


def _limit(limit):
    if limit is None:
        return -1
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, not "
                        f"{type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return limit


def asizesof(*objs, limit=None):
    """One deep size per argument, in bytes; an object reachable from two
    arguments is counted with the first. `limit`: objects that many
    references away from an argument are counted but not followed."""
    sizes, errors = _core._asizesof(objs, _limit(limit))
    if errors:
        warnings.warn(f"{errors} object(s) had a __sizeof__ that failed; "
                      "they were counted with their basic size",
                      SizeWarning, stacklevel=2)
    return sizes


def asizeof(*objs, limit=None):
    """The bytes of every distinct object reachable from `objs`, each
    counted once. Followed: what an object's type reports it refers to,
    every key and value of a dict, a NumPy view's base. Not counted nor
    followed when reached: modules, classes, functions, code objects (the
    arguments always count). Creates nothing while it walks."""
    sizes, errors = _core._asizesof(objs, _limit(limit))
    if errors:
        warnings.warn(f"{errors} object(s) had a __sizeof__ that failed; "
                      "they were counted with their basic size",
                      SizeWarning, stacklevel=2)
    return sum(sizes)
