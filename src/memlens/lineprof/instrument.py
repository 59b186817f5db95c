"""The line tracer's ``instrument`` backend (Python 3.11): profiled code
objects get a copy with calls to memlens's C hooks at each line start.

Before 3.12 the only line events the interpreter gives are those of a trace
function, and on 3.11 tracing turns off the specializing interpreter for
every instruction of every frame: a loop under any trace function runs 2.5
times slower before the callback does anything. This backend leaves
tracing off. It rewrites each profiled code object once (with the
``bytecode`` library) into a copy that calls C builtins bound to its
statistics:

- ``enter()`` where the function starts, ``resume()`` after each return
  from a ``yield`` or ``await``, ``leave()`` before each ``return``,
  ``yield`` and ``await``'s yield, and in a handler that covers every
  instruction no handler of the function's own covers, which calls
  ``leave()`` and re-raises with the frame's position put back (so
  tracebacks are unchanged);
- ``line(n)`` before the first instruction of each line that the
  interpreter's line events would report, under the same rule: the line
  number changed, or a jump went backwards. Where that depends on the path
  taken (an instruction reached both from its own line and from another),
  ``line_changed(n)`` counts the line only if it is not the one running.

The hooks do the same per-line work as the other backends (csrc/lineprof.c).
The copy keeps the original's names, file, line numbers and positions; it
runs while the function's ``__code__`` is swapped for it, between the first
enable and the last disable, and the original is put back after. The code
objects defined inside it (functions, lambdas, comprehensions) are loaded
as their own instrumented copies, so that what it makes is profiled too.
"""

import types

from bytecode import Bytecode, Instr, Label, TryBegin, TryEnd

from memlens import _core

__all__ = ["instrument", "function_of"]

#: Instructions after which the next one is not reached by falling through.
_NO_FALL_THROUGH = frozenset({
    "RETURN_VALUE", "RAISE_VARARGS", "RERAISE", "JUMP_FORWARD",
    "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT", "JUMP_NO_INTERRUPT",
    "JUMP_ABSOLUTE", "JUMP",
})

#: Backward jumps after which a hook can count the line they go back to:
#: the unconditional one, and each conditional one with the forward jump
#: of the opposite test that skips the hook and the jump.
_OPPOSITE = {
    "JUMP_BACKWARD": None,
    "POP_JUMP_BACKWARD_IF_TRUE": "POP_JUMP_FORWARD_IF_FALSE",
    "POP_JUMP_BACKWARD_IF_FALSE": "POP_JUMP_FORWARD_IF_TRUE",
    "POP_JUMP_BACKWARD_IF_NONE": "POP_JUMP_FORWARD_IF_NOT_NONE",
    "POP_JUMP_BACKWARD_IF_NOT_NONE": "POP_JUMP_FORWARD_IF_NONE",
}

#: Kinds of line hook.
_ALWAYS, _IF_CHANGED = 1, 2


def _call(hook, arg, lineno):
    """A call of a C builtin that leaves the stack as it found it."""
    return [Instr("PUSH_NULL", lineno=lineno),
            Instr("LOAD_CONST", hook, lineno=lineno),
            Instr("LOAD_CONST", arg, lineno=lineno),
            Instr("PRECALL", 1, lineno=lineno),
            Instr("CALL", 1, lineno=lineno),
            Instr("POP_TOP", lineno=lineno)]


def _lineno(instr):
    lineno = instr.lineno
    return lineno if isinstance(lineno, int) and lineno > 0 else None


def _line_hooks(items):
    """{index of an instruction in `items`: (kind, line)} for every line
    start, and {index of a backward jump: line} for the backward jumps to
    an instruction of their own line that a conditional hook would miss."""
    label_at = {}  # id(label) -> position of the instruction it marks
    pending = []
    # Every way into each instruction: (line it comes from, backwards?,
    # position of the jump if it is one a hook can follow).
    edges = {}
    for pos, item in enumerate(items):
        if isinstance(item, Label):
            pending.append(item)
        elif isinstance(item, Instr):
            edges[pos] = []
            for label in pending:
                label_at[id(label)] = pos
            pending = []
    handlers = set()
    previous = None
    for pos, item in enumerate(items):
        if isinstance(item, TryBegin):
            target = label_at.get(id(item.target))
            if target is not None:
                handlers.add(target)
            continue
        if not isinstance(item, Instr):
            continue
        if previous is not None and previous.name not in _NO_FALL_THROUGH:
            source = _lineno(previous)
            if previous.name == "RESUME" and previous.arg == 0:
                # A frame's first instruction is always a line event, even
                # on the def line (a lambda, a comprehension, a one-line
                # def).
                source = None
            edges[pos].append((source, False, None))
        if isinstance(item.arg, Label):
            target = label_at.get(id(item.arg))
            if target is not None:
                edges[target].append((_lineno(item), target <= pos,
                                      pos if item.name in _OPPOSITE
                                      else None))
        previous = item
    hooks, back_jumps = {}, {}
    for pos, ways in edges.items():
        line = _lineno(items[pos])
        if line is None:
            continue
        if pos in handlers:
            # Entered from wherever the exception was raised.
            hooks[pos] = (_IF_CHANGED, line)
            continue
        fires = [src != line or back for src, back, _ in ways]
        if not ways or all(fires):
            hooks[pos] = (_ALWAYS, line)
        elif any(fires):
            hooks[pos] = (_IF_CHANGED, line)
            for src, back, jump in ways:
                if back and src == line and jump is not None:
                    back_jumps[jump] = line
    return hooks, back_jumps


def instrument(code, inner=None):
    """A copy of `code` that calls memlens's hooks; `code` must have been
    registered with the C engine (_core._line_add_code). `inner` maps the
    id of a code object among its constants to the copy to load in its
    place."""
    inner = inner or {}
    enter, line, line_changed, leave, resume = _core._line_ins_hooks(code)
    bc = Bytecode.from_code(code)
    items = list(bc)
    hooks, back_jumps = _line_hooks(items)
    unwind = Label()
    out = []
    started = False
    covered = False   # inside our own handler's range
    theirs = 0        # inside one of the code's own ranges
    for pos, item in enumerate(items):
        if isinstance(item, TryBegin):
            if covered:
                out.append(TryEnd(ours))
                covered = False
            theirs += 1
            out.append(item)
            continue
        if isinstance(item, TryEnd):
            theirs -= 1
            out.append(item)
            continue
        if not isinstance(item, Instr):
            out.append(item)
            continue
        lineno = _lineno(item) or code.co_firstlineno
        if started and not theirs and not covered:
            ours = TryBegin(unwind, push_lasti=True)
            out.append(ours)
            covered = True
        hook = hooks.get(pos)
        if started and hook is not None:
            kind, at = hook
            out += _call(line if kind == _ALWAYS else line_changed, at, at)
        if pos in back_jumps:
            opposite = _OPPOSITE[item.name]
            if opposite is None:
                out += _call(line, back_jumps[pos], lineno)
            else:
                # Counted only when the jump is taken.
                skip = Label()
                out.append(Instr(opposite, skip, lineno=lineno))
                out += _call(line, back_jumps[pos], lineno)
                out.append(Instr("JUMP_BACKWARD", item.arg, lineno=lineno))
                out.append(skip)
                continue
        if item.name in ("RETURN_VALUE", "YIELD_VALUE"):
            out += _call(leave, None, lineno)
        if (item.name == "LOAD_CONST" and isinstance(item.arg, types.CodeType)
                and id(item.arg) in inner):
            item = Instr("LOAD_CONST", inner[id(item.arg)],
                         location=item.location)
        out.append(item)
        if item.name == "RESUME":
            if item.arg == 0 and not started:
                started = True
                out.append(TryBegin(unwind, push_lasti=True))
                covered = True
                ours = out[-1]
                out += _call(enter, None, lineno)
            elif item.arg != 0:
                out += _call(resume, lineno, lineno)
    if covered:
        out.append(TryEnd(ours))
    # The handler: close the frame's line, then raise again from where the
    # exception came (RERAISE 1 restores the position saved below it).
    out.append(unwind)
    out += _call(leave, None, code.co_firstlineno)
    out.append(Instr("RERAISE", 1, lineno=code.co_firstlineno))
    bc.clear()
    bc.extend(out)
    new = bc.to_code()
    if len(new.co_freevars) != len(code.co_freevars):
        raise RuntimeError(f"memlens: instrumenting {code.co_name} changed "
                           f"its free variables")
    return new


def function_of(obj):
    """The plain function behind `obj` (a function, method, static or
    class method), or None."""
    for candidate in (obj, getattr(obj, "__func__", None)):
        if isinstance(candidate, types.FunctionType):
            return candidate
    return None

