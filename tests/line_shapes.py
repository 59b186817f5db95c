"""Functions of many shapes for the line tracer's backends to agree on.

Line numbers matter to the tests: add new shapes at the end.
"""
import asyncio


def conditional(n):
    out = []
    for i in range(n):
        x = i if i % 2 else -i
        y = (i > 2 and
             i < 5)
        if x > 0 and y:
            out.append(x)
        elif x < -3:
            continue
        else:
            pass
    return out


def one_line_loops(n):
    s = 0
    for i in range(n): s += i
    while s > 0: s -= 7
    return s


def while_loop(n):
    i = 0
    while i < n:
        i += 1
        if i == 3:
            break
    else:
        i = -1
    return i


def try_shapes(n):
    total = 0
    for i in range(n):
        try:
            if i % 3 == 0:
                raise ValueError(i)
            total += i
        except ValueError:
            total -= 1
        finally:
            total *= 1
    with open(__file__) as f:
        f.read(1)
    try:
        return total
    finally:
        total = 0


def multi_line(n):
    data = dict(a=n,
                b=[i for i in range(n)],
                c=str(
                    n))
    return (data["a"]
            + len(data["b"]))


def gen(n):
    for i in range(n):
        x = yield i
        if x:
            yield from range(x)
    return n


def use_gen(n):
    g = gen(n)
    out = [next(g)]
    out.append(g.send(2))
    out.extend(g)
    g2 = gen(5)
    next(g2)
    try:
        g2.throw(KeyError("k"))
    except KeyError:
        pass
    return out


async def coro(n):
    await asyncio.sleep(0)
    total = 0
    for i in range(n):
        await asyncio.sleep(0)
        total += i
    return total


def recurse(n):
    if n <= 0:
        return 0
    return n + recurse(n - 1)


def raises(n):
    x = [0] * n
    if n:
        raise RuntimeError("boom")
    return x


def catches_raises(n):
    try:
        raises(n)
    except RuntimeError:
        pass
    return recurse(3)


def closure(n):
    k = n

    def inner(j):
        return j + k
    return [inner(i) for i in range(n)]


def match_shapes(n):
    out = []
    for v in (n, [n, 1], {"k": n}, "s"):
        match v:
            case int() if v > 2:
                out.append(1)
            case [a, b]:
                out.append(a + b)
            case {"k": k}:
                out.append(k)
            case _:
                out.append(0)
    return out


PROFILED = [conditional, one_line_loops, while_loop, try_shapes, multi_line,
            gen, use_gen, coro, recurse, raises, catches_raises, closure,
            match_shapes]


def run_all(n=6):
    """Calls every shape (the generator through use_gen)."""
    for func in (conditional, one_line_loops, while_loop, try_shapes,
                 multi_line, use_gen, catches_raises, closure, match_shapes):
        func(n)
    asyncio.run(coro(4))
