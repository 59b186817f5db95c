"""The heap census (SPEC 6): heap(), HeapCensus, and the session memory
the points log.

The walk over every live object is C (csrc/census.c); this module names
the kinds, sorts and formats.
"""

from memlens import _core
from memlens._report import html_table

__all__ = ["heap", "HeapCensus", "HeapRow", "session_memory"]


def _check_rows(limit):
    """A row count for HeapCensus.format: None (every row) or an int >= 0;
    a negative one is an error, not a slice from the end."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, not "
                        f"{type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must be a non-negative int or None, "
                         f"not {limit!r}")


def _census_raw(program):
    import gc
    import sys

    # From 3.12 the C walk visits the GC's objects itself; before, it is
    # handed gc.get_objects(), a list it leaves out of the count.
    objects = None if sys.version_info >= (3, 12) else gc.get_objects()
    try:
        return _core._heap_census(objects, program)
    finally:
        del objects


class HeapRow:
    """One kind of object in a census: count and bytes."""

    __slots__ = ("kind", "count", "size")

    def __init__(self, kind, count, size):
        self.kind, self.count, self.size = kind, count, size

    def to_dict(self):
        return {"kind": self.kind, "count": self.count, "size": self.size}

    def __repr__(self):
        return f"HeapRow({self.kind!r}, count={self.count}, size={self.size})"


class HeapCensus:
    """Every live object, partitioned by kind (class, or "dict of Class"
    for instance dictionaries), largest first. Sizes in bytes, as
    sys.getsizeof reports them."""

    def __init__(self, rows, count, size, errors=0):
        self.rows = sorted(rows, key=lambda r: (-r.size, -r.count, r.kind))
        self.count = count
        self.size = size
        self.errors = errors

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, kind):
        for row in self.rows:
            if row.kind == kind:
                return row
        raise KeyError(kind)

    def to_dict(self):
        return {"count": self.count, "size": self.size,
                "rows": [r.to_dict() for r in self.rows]}

    def format(self, limit=None):
        _check_rows(limit)
        shown = self.rows if limit is None else self.rows[:limit]
        out = [f"Partition of a set of {self.count} objects. "
               f"Total size = {self.size} bytes.",
               " Index  Count   %     Size   % Cumulative  % "
               "Kind (class / dict of class)"]
        cumulative = 0
        for i, r in enumerate(shown):
            cumulative += r.size
            out.append("%6d %6d %3d %8d %3d %9d %3d %s" % (
                i, r.count, 100 * r.count // max(self.count, 1), r.size,
                100 * r.size // max(self.size, 1), cumulative,
                100 * cumulative // max(self.size, 1), r.kind))
        if len(shown) < len(self.rows):
            rest = self.rows[len(shown):]
            out.append(f"<{len(rest)} more rows. "
                       f"{sum(r.count for r in rest)} objects, "
                       f"{sum(r.size for r in rest)} bytes>")
        return "\n".join(out)

    def __str__(self):
        return self.format(limit=20)

    def __repr__(self):
        return (f"<memlens.HeapCensus {self.count} objects, {self.size} "
                f"bytes, {len(self.rows)} kinds>")

    def _repr_html_(self):
        rows = [(i, r.count, r.size, r.kind)
                for i, r in enumerate(self.rows[:20])]
        return (f"<p>{self.count} objects, {self.size} bytes</p>"
                + html_table(("Index", "Count", "Size", "Kind"), rows))

    def diff(self, older):
        """What grew since `older`: a HeapCensus of the differences (counts
        and sizes may be negative), largest growth first."""
        if not isinstance(older, HeapCensus):
            raise TypeError(f"diff() needs a HeapCensus, not "
                            f"{type(older).__name__}")
        old = {r.kind: r for r in older.rows}
        rows = []
        for r in self.rows:
            o = old.pop(r.kind, None)
            dc = r.count - (o.count if o else 0)
            ds = r.size - (o.size if o else 0)
            if dc or ds:
                rows.append(HeapRow(r.kind, dc, ds))
        rows += [HeapRow(o.kind, -o.count, -o.size) for o in old.values()]
        return HeapCensus(rows, self.count - older.count,
                          self.size - older.size)


def heap():
    """A census of every live object (what fills the heap).

    Objects reachable from the GC's objects are included too (strings,
    numbers, dict keys: the ones the GC does not track). The census's own
    result objects appear in the next census, and nowhere else: two
    censuses in a row differ by those (a HeapCensus, its rows, their kind
    strings and numbers)."""
    count, size, errors, raw = _census_raw(program=True)
    merged = {}
    for tp, dict_of, n, nbytes in raw:
        # Named from the type's own fields: no user code runs (a
        # metaclass's __getattribute__ could raise, or run for ever).
        kind = ("dict of " if dict_of else "") + _core._kind_name(tp)
        row = merged.setdefault(kind, [0, 0])
        row[0] += n
        row[1] += nbytes
    rows = [HeapRow(kind, n, nbytes) for kind, (n, nbytes) in merged.items()]
    return HeapCensus(rows, count, size, errors)


def session_memory():
    """Bytes held by the session's data: every live object under the rule
    of asizeof (modules, classes, functions and code objects neither
    counted nor followed)."""
    return _census_raw(program=False)[1]
