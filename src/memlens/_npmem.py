"""NumPy's array data, counted through NumPy's own handler API.

NumPy's data bypasses the Python allocators. While someone needs it (the
line profiler's alloc columns, allocation tracing), memlens's C handler is
put in place for NumPy 1.22+ when NumPy is already imported; it passes
every call on to the handler it replaced.

NumPy keeps its handler per context (a context variable), so memlens
keeps its users and the handler it replaced per context too: each
acquire counts, whether it could install the handler or not (NumPy not
imported yet, another library's handler in place); one made after NumPy
came tries again; the last release puts the replaced handler back, in the
context it runs in, and only if the handler there is still memlens's.
A context copied while the handler is held (a new asyncio task) shares its
users. A handler left in a context no release can reach passes calls
through and counts nothing but the churn.
"""

import contextvars
import sys

from memlens import _core


class _Users:
    """The users of memlens's NumPy handler in one context."""

    __slots__ = ("count", "saved")

    def __init__(self):
        self.count = 0
        self.saved = None  # the handler ours replaced here, while installed


_users = contextvars.ContextVar("memlens_numpy_users", default=None)


def numpy_hook_acquire():
    """One more user in the current context; returns the token to give
    back to numpy_hook_release."""
    users = _users.get()
    if users is None or users.count == 0:
        users = _Users()
        _users.set(users)
    users.count += 1
    if users.saved is None and "numpy" in sys.modules:
        replaced = _core._numpy_hook_install()
        if replaced is not None and replaced is not True:
            users.saved = replaced
    return users


def numpy_hook_release(token=None):
    """One user fewer: `token` from numpy_hook_acquire, or the current
    context's users when None."""
    users = token if token is not None else _users.get()
    if users is None or users.count == 0:
        return
    users.count -= 1
    if users.count == 0 and users.saved is not None:
        saved, users.saved = users.saved, None
        if _users.get() is users:
            _core._numpy_hook_restore(saved)
