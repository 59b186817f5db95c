"""The one wrapper set for functions, generators and coroutines: what
measure(), the ``profile`` builtin of ``memlens run`` and the line profiler
put around each call of a function they decorate.

A wrapper calls ``token = enter(arg)`` before the call and ``leave(token)``
after it, exception or not: the callers pass their own functions (bound
methods, or ``_core._quietly`` itself), so that the wrapper adds no call of
its own on their paths.
"""

import functools


def wrap(func, enter, leave, arg, target=None, generators=True):
    """A wrapper of `func` (its name, docstring, ``__wrapped__``) that runs
    `target` (default: `func`) between ``token = enter(arg)`` and
    ``leave(token)``.

    A coroutine function gets a coroutine function: the span runs from the
    first send to its end. A generator function gets, with `generators`, a
    generator function whose span runs from the first next() to the end;
    without, a plain function (the span is the call that makes the
    generator). Everything else gets a plain function."""
    import inspect  # not at import: memlens run starts faster

    target = func if target is None else target
    if generators and inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            token = enter(arg)
            try:
                return (yield from target(*args, **kwargs))
            finally:
                leave(token)
    elif inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def wrapper(*args, **kwargs):
            token = enter(arg)
            try:
                return await target(*args, **kwargs)
            finally:
                leave(token)
    else:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            token = enter(arg)
            try:
                return target(*args, **kwargs)
            finally:
                leave(token)
    return wrapper
