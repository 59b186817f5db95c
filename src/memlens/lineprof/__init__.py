"""The line-by-line memory profile (SPEC 4), driving csrc/lineprof.c.

- ``profiler``: LineProfiler, ``@profile``, the tables, ``show_results``
  and ``LogFile``;
- ``builtin``: the ``profile`` builtin of ``memlens run``;
- ``options``: memory_profiler's options, checked alike everywhere;
- ``backends``: the one place that chooses the line events' source;
- ``instrument``: the Python 3.11 backend's bytecode rewriting.

The names below load the profiler when first used (PEP 562): ``memlens
run`` imports the builtin without it when there is no ``--line``.
"""

__all__ = ["LineProfiler", "profile", "FunctionProfile", "LineRecord",
           "show_results", "LogFile"]


def __getattr__(name):
    if name not in __all__:
        raise AttributeError(
            f"module 'memlens.lineprof' has no attribute {name!r}")
    from memlens.lineprof import profiler

    return getattr(profiler, name)
