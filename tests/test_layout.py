"""The Python layer's layout stays as drawn: every module sits in a layer,
no import (at module level or inside a function) runs back up the layers,
and the imports between memlens's modules form no cycle.

The graph is read from the sources (ast), so that the check sees the
imports made where they are used, which importing the modules would not
run."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "memlens"

#: Lowest first. A module belongs to the layer of the longest name here
#: that is it or a package holding it.
LAYERS = (
    # Units, formats, argument checks, errors, wrappers, and the C core.
    ("base", ("memlens._core", "memlens._report", "memlens._flamegraph",
              "memlens._checks", "memlens._errors", "memlens._wrap")),
    # The capabilities, each driving its C unit.
    ("capabilities", ("memlens._readings", "memlens._peak",
                      "memlens._npmem", "memlens._sizeof", "memlens._census",
                      "memlens._tracing", "memlens.lineprof",
                      "memlens._usage")),
    # What users run: the public API, the command line, the magics, the
    # pytest plugin, the points.
    ("front", ("memlens", "memlens.__main__", "memlens.cli",
               "memlens.ipython", "memlens.pytest_plugin", "memlens.points",
               "memlens.builtins", "memlens.dask")),
)


def modules(package):
    """Dotted name -> path of every module under `package`."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name, path, known):
    """The memlens modules `name` (at `path`) imports anywhere in it."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".")
                if not is_package:
                    here.pop()
                here = here[:len(here) - (node.level - 1)]
                base = ".".join(here + ([base] if base else []))
            # `from package import module` imports the module.
            targets = [f"{base}.{alias.name}"
                       if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "memlens" or target.startswith("memlens."):
                # `import memlens.a.b` imports memlens.a.b; a name that is
                # no module of ours (the C core) counts as itself.
                found.add(target)
    found.discard(name)
    return found


def layer_of(name):
    best = None
    for rank, (_, names) in enumerate(LAYERS):
        for owner in names:
            if name == owner or (owner != "memlens"
                                 and name.startswith(owner + ".")):
                if best is None or len(owner) > len(best[1]):
                    best = rank, owner
    return None if best is None else best[0]


def graph(package=PACKAGE):
    found = modules(package)
    known = set(found) | {"memlens._core"}  # the C extension
    return {name: imports(name, path, known) for name, path in found.items()}


def problems(package=PACKAGE):
    """Every breach of the layout, as sentences (none when it holds)."""
    edges = graph(package)
    out = [f"{name} is in no layer" for name in sorted(edges)
           if layer_of(name) is None]
    for name in sorted(edges):
        for target in sorted(edges[name]):
            low, high = layer_of(target), layer_of(name)
            if low is None:
                out.append(f"{name} imports {target}, which is in no layer")
            elif high is not None and low > high:
                out.append(f"{name} ({LAYERS[high][0]}) imports {target} "
                           f"({LAYERS[low][0]}): an import up the layers")
    # Cycles: a depth-first walk, each one reported once by its path.
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                out.append("import cycle: " + " -> ".join(cycle))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return out


def test_every_module_is_in_a_layer_and_imports_only_down_or_across():
    assert problems() == []


def test_the_graph_sees_imports_made_inside_functions():
    edges = graph()
    # cli imports the run command where it runs it; the line profiler
    # its 3.11 instrumenter when that backend is chosen.
    assert "memlens.cli.run" in edges["memlens.cli"]
    assert "memlens.lineprof.instrument" in edges["memlens.lineprof.backends"]
    assert "memlens._core" in edges["memlens._peak"]


@pytest.mark.parametrize("source, expected", [
    ("from memlens import cli\n", "memlens._report (base) imports memlens.cli"
     " (front): an import up the layers"),
    ("def f():\n    from memlens.lineprof import profiler\n",
     "memlens._report (base) imports memlens.lineprof.profiler "
     "(capabilities): an import up the layers"),
])
def test_an_import_up_the_layers_is_found(tmp_path, source, expected):
    copy = tmp_path / "memlens"
    for path in PACKAGE.rglob("*.py"):
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text(encoding="utf-8")
        if path.name == "_report.py":
            text += "\n\n" + source
        target.write_text(text, encoding="utf-8")
    assert expected in problems(copy)


def test_a_cycle_is_found(tmp_path):
    copy = tmp_path / "memlens"
    for path in PACKAGE.rglob("*.py"):
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text(encoding="utf-8")
        if path.name == "_errors.py":
            text += "\n\nfrom memlens import _checks\n"
        if path.name == "_checks.py":
            text += "\n\nfrom memlens import _errors\n"
        target.write_text(text, encoding="utf-8")
    assert ("import cycle: memlens._checks -> memlens._errors -> "
            "memlens._checks") in problems(copy)
