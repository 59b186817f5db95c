"""``import memlens.builtins``: MEMPOINT, MEMLOGS, MEMPRINT, MEMORY and
MEMTRACE become builtins (every module sees them), and a first point is
recorded with the ID "memlens import"."""

import builtins as _builtins

from memlens import points as _points

for _name in ("MEMPOINT", "MEMLOGS", "MEMPRINT", "MEMORY", "MEMTRACE"):
    setattr(_builtins, _name, getattr(_points, _name))

_points.MEMPOINT("memlens import")
