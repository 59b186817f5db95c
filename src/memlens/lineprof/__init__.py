"""The line-by-line memory profile (SPEC 4), driving csrc/lineprof.c.

- ``profiler``: LineProfiler, ``@profile`` and the tables;
- ``backends``: the one place that chooses the line events' source;
- ``instrument``: the Python 3.11 backend's bytecode rewriting.
"""

from memlens.lineprof.profiler import (FunctionProfile, LineProfiler,
                                       LineRecord, profile, show_results)

__all__ = ["LineProfiler", "profile", "FunctionProfile", "LineRecord",
           "show_results"]
