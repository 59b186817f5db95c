"""The ``profile`` builtin in the children multiprocessing starts under
``memlens run`` with the spawn and forkserver methods.

Such a child is a new interpreter: it runs the program's main module again
(as ``__mp_main__``), where ``@profile`` would be a NameError, and a Pool
would start dying workers for ever. The parent's preparation data, which
the child unpickles before it runs the main module, carries a call of
:func:`prepared` that gives the child a ``profile`` that leaves functions
as they are (a child's spans are not recorded, as with fork).

The hook on multiprocessing is installed by ``memlens run`` for the run
only; multiprocessing is not imported for it: the hook waits on
``sys.meta_path`` for the program to import ``multiprocessing.spawn``.
"""

import builtins
import sys

_MODULE = "multiprocessing.spawn"


def profile(func=None, **options):
    """``@profile`` and ``@profile(...)``: the function, unchanged."""
    if func is None:
        return profile
    return func


def prepared(data):
    """Unpickled in the child: installs the builtin, returns the data."""
    if not hasattr(builtins, "profile"):
        builtins.profile = profile
    return data


class _Preparation(dict):
    """The preparation data, pickled as a call of prepared()."""

    def __reduce__(self):
        return prepared, (dict(self),)


class _Loader:
    """The loader of multiprocessing.spawn, which patches it once run."""

    def __init__(self, hook, loader):
        self._hook = hook
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._hook.patch(module)


class SpawnHook:
    """While installed, spawned and forkserver children get ``profile``."""

    def __init__(self):
        self._module = None
        self._original = None
        self._wrapper = None

    def install(self):
        module = sys.modules.get(_MODULE)
        if module is not None:
            self.patch(module)
        else:
            sys.meta_path.insert(0, self)

    def find_spec(self, name, path=None, target=None):
        if name != _MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader,
                                                       "exec_module"):
                    spec.loader = _Loader(self, spec.loader)
                return spec
        return None

    def patch(self, module):
        self.uninstall_finder()
        original = module.get_preparation_data

        def get_preparation_data(name):
            return _Preparation(original(name))

        self._module, self._original = module, original
        self._wrapper = get_preparation_data
        module.get_preparation_data = get_preparation_data

    def uninstall_finder(self):
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass

    def uninstall(self):
        self.uninstall_finder()
        module = self._module
        if module is not None and module.get_preparation_data is \
                self._wrapper:
            module.get_preparation_data = self._original
        self._module = self._original = self._wrapper = None
