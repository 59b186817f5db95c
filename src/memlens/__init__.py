"""memlens: exact, fast memory profiling for Python, measured in C.

Importing memlens has no side effects: no hook, no thread, and not even
the C core is loaded until one of the public names is first used.
"""

__version__ = "0.1.0"

# Public name -> module that defines it. Loaded on first use (PEP 562), so
# that `import memlens` (and the pytest plugin) costs nothing.
_LAZY = {
    "rss": "memlens._readings",
    "memory": "memlens._readings",
    "MemoryInfo": "memlens._readings",
    "peak": "memlens._readings",
    "PeakWindow": "memlens._readings",
    "Sampler": "memlens._readings",
    "measure": "memlens._peak",
    "Measurement": "memlens._peak",
    "profile": "memlens.lineprof",
    "LineProfiler": "memlens.lineprof",
    "show_results": "memlens.lineprof",
    "LogFile": "memlens.lineprof",
    "start_tracing": "memlens._tracing",
    "stop_tracing": "memlens._tracing",
    "is_tracing": "memlens._tracing",
    "tracing": "memlens._tracing",
    "tracing_native": "memlens._tracing",
    "traced_memory": "memlens._tracing",
    "reset_peak": "memlens._tracing",
    "take_snapshot": "memlens._tracing",
    "peak_snapshot": "memlens._tracing",
    "Snapshot": "memlens._tracing",
    "asizeof": "memlens._sizeof",
    "asizesof": "memlens._sizeof",
    "SizeWarning": "memlens._sizeof",
    "heap": "memlens._census",
    "HeapCensus": "memlens._census",
    "memory_usage": "memlens._usage",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'memlens' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(module_name)
    # Every name of the module at once: a name first used while tracing
    # would otherwise be looked up (an AttributeError made and dropped) on
    # the program's line.
    for other, where in _LAZY.items():
        if where == module_name:
            globals()[other] = getattr(module, other)
    return globals()[name]


def load_ipython_extension(ip):
    """``%load_ext memlens``: register the magics (IPython is imported here)."""
    from memlens.ipython import load_ipython_extension as load

    load(ip)


def unload_ipython_extension(ip):
    """``%unload_ext memlens``: remove everything loading installed."""
    from memlens.ipython import unload_ipython_extension as unload

    unload(ip)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
