"""NumPy's array data, counted through NumPy's own handler API.

NumPy's data bypasses the Python allocators. While someone needs it (the
line profiler's alloc columns, allocation tracing), memlens's C handler is
put in place, in the current context, for NumPy 1.22+ when NumPy is already
imported; it passes every call on to the handler it replaced.
"""

import sys

from memlens import _core

_users = 0


def numpy_hook_acquire():
    global _users
    if _users == 0:
        if "numpy" in sys.modules and _core._numpy_hook(True):
            _users = 1
    else:
        _users += 1


def numpy_hook_release():
    global _users
    if _users:
        _users -= 1
        if _users == 0:
            _core._numpy_hook(False)
