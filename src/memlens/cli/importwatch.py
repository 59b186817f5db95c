"""Waiting on ``sys.meta_path`` for the program to import a module, to
patch it once it has run: what ``memlens run`` does to multiprocessing's
spawn and forkserver modules (:mod:`memlens.cli.spawn`) and, under
``--trace``, to NumPy (:mod:`memlens.cli.tracefile`). Nothing is imported
for it: the watcher only sees the import the program makes.

A subclass says which names it waits for (:meth:`ImportWatch.watches`) and
what to do with each module (:meth:`ImportWatch.patch`).
"""

import sys


class _Loader:
    """The loader of a module the watcher waits for, which patches it once
    run."""

    def __init__(self, watch, loader):
        self._watch = watch
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._watch.patch(module)


class ImportWatch:
    """A finder first on ``sys.meta_path`` that finds nothing itself: it
    asks the other finders and wraps the loader of a module it waits
    for."""

    def watches(self, name):
        raise NotImplementedError

    def patch(self, module):
        raise NotImplementedError

    def link(self):
        sys.meta_path.insert(0, self)

    def unlink(self):
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass

    def find_spec(self, name, path=None, target=None):
        if not self.watches(name):
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
