#!/usr/bin/env python3
"""Read valgrind memcheck XML and fail on errors in memlens's own code.

    python tools/valgrind_errors.py VALGRIND.xml [MORE.xml ...]

An error is memlens's when one of its stacks holds a frame of memlens: an
object file named like memlens's extension (a file name containing
"memlens", or "_core.*" inside a "memlens" folder) or a source file under
a "csrc" folder. Those errors are printed in full and the exit status is 1.
Every other error (inside CPython, numpy, libc, the dynamic loader) is
counted and summarised, and is not a failure.

The allocator hooks of memlens (hooks.c) sit in every Python allocation
made while a measurement is open, so they show up in the allocation stack
of blocks that CPython or numpy allocated through them. In the stacks that
only say where a block came from (a leak's, or an auxiliary one: "block
was alloc'd at", "free'd at", "uninitialised value was created by"), a
frame of those pass-through functions is therefore not enough to blame
memlens (--passthrough names them; --passthrough= turns this off). In an
error's own stack, where the bad access or call happened, every memlens
frame counts.

Exit status: 0 no memlens error, 1 memlens errors, 2 the XML is missing,
unreadable or from a run that did not finish. Standard library only.
"""

import argparse
import collections
import os
import sys
import xml.etree.ElementTree as ET

#: The allocator hooks of csrc/hooks.c: they pass every call on.
PASSTHROUGH = ("hooks_malloc", "hooks_calloc", "hooks_realloc", "hooks_free")

#: Error kinds whose only stack is where the lost block was allocated.
LEAK_PREFIX = "Leak_"


class Frame:
    __slots__ = ("ip", "obj", "fn", "dir", "file", "line")

    def __init__(self, elem):
        for name in self.__slots__:
            setattr(self, name, elem.findtext(name))

    @property
    def source(self):
        """'dir/file:line', or None without debug information."""
        if not self.file:
            return None
        path = os.path.join(self.dir, self.file) if self.dir else self.file
        here = os.getcwd() + os.sep
        if path.startswith(here):
            path = path[len(here):]
        return f"{path}:{self.line}" if self.line else path

    def is_memlens(self):
        if self.obj:
            parts = self.obj.replace("\\", "/").split("/")
            name = parts[-1]
            if "memlens" in name:
                return True
            if name.startswith("_core.") and "memlens" in parts[:-1]:
                return True
        if self.file:
            path = os.path.join(self.dir or "", self.file).replace("\\", "/")
            if "csrc" in path.split("/")[:-1]:
                return True
        return False

    def describe(self):
        where = self.source or "?"
        obj = os.path.basename(self.obj) if self.obj else "?"
        return f"{self.fn or self.ip or '???'} ({where}) [{obj}]"


class Error:
    def __init__(self, elem, path):
        self.path = path
        self.unique = elem.findtext("unique")
        self.tid = elem.findtext("tid")
        self.threadname = elem.findtext("threadname")
        self.kind = elem.findtext("kind") or "?"
        what = elem.findtext("what")
        if what is None:
            what = elem.findtext("xwhat/text")
        self.what = (what or "").strip()
        self.count = 1
        # (label, frames): the error's own stack first (label None), then
        # the auxiliary ones, labelled by the auxwhat before them.
        self.stacks = []
        label = None
        for child in elem:
            if child.tag == "auxwhat":
                label = (child.text or "").strip()
            elif child.tag == "xauxwhat":
                label = (child.findtext("text") or "").strip()
            elif child.tag == "stack":
                frames = [Frame(f) for f in child.findall("frame")]
                self.stacks.append((label, frames))
                label = None
        if label is not None:   # an auxwhat with no stack after it
            self.stacks.append((label, []))

    @property
    def is_leak(self):
        return self.kind.startswith(LEAK_PREFIX)

    def blame(self, passthrough):
        """The stacks (indexes) that make this memlens's error."""
        hits = []
        for i, (label, frames) in enumerate(self.stacks):
            own = i == 0 and not self.is_leak
            for f in frames:
                if f.is_memlens() and (own or f.fn not in passthrough):
                    hits.append(i)
                    break
        return hits

    def first_memlens_frame(self, hits):
        """The first memlens frame of the first blamed stack."""
        label, frames = self.stacks[hits[0]]
        for f in frames:
            if f.is_memlens():
                return f
        return None

    def location(self, passthrough=()):
        """Where an error outside memlens happened, for the summary: the
        object file of the first frame that is neither valgrind's own nor
        a pass-through hook."""
        if not self.stacks or not self.stacks[0][1]:
            return "?"
        frames = self.stacks[0][1]
        for f in frames:
            name = os.path.basename(f.obj or "?")
            if not name.startswith("vgpreload_") and f.fn not in passthrough:
                return name
        return os.path.basename(frames[0].obj or "?")


class Run:
    """One valgrind XML file."""

    def __init__(self, path):
        self.path = path
        self.problem = None
        self.errors = []
        self.fatal = None
        self.pid = None
        self.suppressed = 0
        try:
            root = ET.parse(path).getroot()
        except FileNotFoundError:
            self.problem = "no such file"
            return
        except (ET.ParseError, OSError) as exc:
            self.problem = f"cannot read the XML ({exc}); was valgrind killed?"
            return
        if root.tag != "valgrindoutput":
            self.problem = f"not valgrind XML (root <{root.tag}>)"
            return
        self.pid = root.findtext("pid")
        tool = root.findtext("tool")
        if tool != "memcheck":
            self.problem = f"tool is {tool!r}, not memcheck"
            return
        states = [s.findtext("state") for s in root.findall("status")]
        if not states or states[-1] != "FINISHED":
            self.problem = "the run did not finish (no FINISHED status)"
        by_unique = {}
        for elem in root.findall("error"):
            err = Error(elem, path)
            self.errors.append(err)
            by_unique[err.unique] = err
        for pair in root.findall("errorcounts/pair"):
            err = by_unique.get(pair.findtext("unique"))
            if err is not None:
                try:
                    err.count = int(pair.findtext("count"))
                except (TypeError, ValueError):
                    pass
        for pair in root.findall("suppcounts/pair"):
            try:
                self.suppressed += int(pair.findtext("count"))
            except (TypeError, ValueError):
                pass
        fatal = root.find("fatal_signal")
        if fatal is not None:
            self.fatal = (fatal.findtext("signame") or "signal",
                          [Frame(f) for f in fatal.findall("stack/frame")])


def print_stack(label, frames, limit, out):
    if label:
        out.write(f"  {label}\n")
    if not frames:
        out.write("      (no stack)\n")
        return
    # Show the top of the stack, and further down as far as the last
    # memlens frame, so that the way into memlens is always visible.
    last = max((i for i, f in enumerate(frames) if f.is_memlens()),
               default=-1)
    shown = frames[:max(limit, last + 1)]
    for i, f in enumerate(shown):
        mark = "=>" if f.is_memlens() else "  "
        word = "at" if i == 0 else "by"
        out.write(f"    {mark} {word} {f.describe()}\n")
    if len(frames) > len(shown):
        out.write(f"       ... {len(frames) - len(shown)} more frames\n")


def print_error(n, total, err, hits, limit, out):
    if err.is_leak:
        where = ""
    else:
        where = f" in thread {err.tid or '?'}"
        if err.threadname:
            where += f" ({err.threadname})"
    times = f", {err.count} times" if err.count > 1 else ""
    out.write(f"\nmemlens error {n} of {total}: {err.kind}{where}{times}\n"
              f"  {err.what}\n")
    for label, frames in err.stacks:
        print_stack(label, frames, limit, out)
    own = "the allocation stack" if err.is_leak else "its own stack"
    names = ", ".join(own if i == 0 else
                      f"auxiliary stack {i} ({err.stacks[i][0] or '?'})"
                      for i in hits)
    out.write(f"  memlens frames (=>) in: {names}\n")


def print_table(title, rows, out):
    """rows: (errors, times, kind, where)."""
    out.write(f"\n{title}\n  {'errors':>6} {'times':>6}  {'kind':<24} where\n")
    for errors, times, kind, where in rows:
        out.write(f"  {errors:>6} {times:>6}  {kind:<24} {where}\n")


def grouped(items, key):
    """[(errors, times, *key)] for (err, hits) items, most errors first."""
    errors, times = collections.Counter(), collections.Counter()
    for err, hits in items:
        k = key(err, hits)
        errors[k] += 1
        times[k] += err.count
    return [(errors[k], times[k]) + k
            for k in sorted(errors, key=lambda k: (-errors[k], k))]


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Fail on valgrind memcheck errors in memlens's code.")
    parser.add_argument("xml", nargs="+", help="valgrind --xml-file output")
    parser.add_argument(
        "--passthrough", default=",".join(PASSTHROUGH),
        help="comma-separated memlens functions that only pass allocations "
             "on; ignored in allocation/leak stacks (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=12,
                        help="frames shown per stack (default: %(default)s)")
    parser.add_argument("--max-shown", type=int, default=10, metavar="N",
                        help="memlens errors printed in full (default: "
                             "%(default)s); the rest are only counted")
    parser.add_argument("--show-others", type=int, default=0, metavar="N",
                        help="also print the first N errors outside memlens")
    args = parser.parse_args(argv)
    passthrough = {p.strip() for p in args.passthrough.split(",") if p.strip()}
    out = sys.stdout

    runs = [Run(path) for path in args.xml]
    broken = [r for r in runs if r.problem]
    ours, others = [], []
    for run in runs:
        for err in run.errors:
            hits = err.blame(passthrough)
            (ours if hits else others).append((err, hits))

    for n, (err, hits) in enumerate(ours[:max(args.max_shown, 0)], 1):
        print_error(n, len(ours), err, hits, args.frames, out)
    if len(ours) > args.max_shown:
        out.write(f"\n... {len(ours) - args.max_shown} more memlens error(s) "
                  "not shown (--max-shown)\n")

    def memlens_place(err, hits):
        f = err.first_memlens_frame(hits)
        where = f"{f.fn or '?'} ({f.source or '?'})" if f else "?"
        return (err.kind, where)

    if ours:
        total = sum(err.count for err, _ in ours)
        print_table(f"{len(ours)} error(s) ({total} occurrence(s)) in "
                    "memlens's code, by first memlens frame:",
                    grouped(ours, memlens_place), out)
    if others:
        total = sum(err.count for err, _ in others)
        def place(err, hits):
            return (err.kind, err.location(passthrough))

        print_table(f"{len(others)} error(s) ({total} occurrence(s)) outside "
                    "memlens's code, not failures:",
                    grouped(others, place), out)
        for n, (err, _) in enumerate(others[:args.show_others], 1):
            out.write(f"\nother error {n}: {err.kind}\n  {err.what}\n")
            for label, frames in err.stacks:
                print_stack(label, frames, args.frames, out)

    suppressed = sum(r.suppressed for r in runs)
    if suppressed:
        out.write(f"{suppressed} error occurrence(s) suppressed\n")
    for run in runs:
        if run.fatal:
            signame, frames = run.fatal
            out.write(f"\n{run.path}: the program died of {signame}\n")
            print_stack(None, frames, args.frames, out)
    for run in broken:
        out.write(f"\nvalgrind_errors: {run.path}: {run.problem}\n")

    files = ", ".join(r.path for r in runs)
    out.write(f"\nvalgrind_errors: {len(ours)} error(s) in memlens's code, "
              f"{len(others)} elsewhere (not failures) in {files}\n")
    out.flush()
    if ours:
        return 1
    if broken:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
