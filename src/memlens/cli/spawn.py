"""The ``profile`` builtin in the children multiprocessing starts under
``memlens run`` with the spawn and forkserver methods.

Such a child is a new interpreter: it runs the program's main module again
(as ``__mp_main__``), where ``@profile`` would be a NameError, and a Pool
would start dying workers for ever. The parent's preparation data, which
the child unpickles before it runs the main module, carries a call of
:func:`prepared` that gives the child a ``profile`` that takes every form
the parent's does and records nothing (a child's spans are not recorded,
as with fork).

From 3.14 the fork server itself imports the main module before it forks
any child (its preload list names ``__main__``): under ``memlens run`` the
server is given the builtin first (it imports :mod:`memlens.cli.forkserver`)
and leaves the main module to each child, as it did before 3.14.

The hook on multiprocessing is installed by ``memlens run`` for the run
only; multiprocessing is not imported for it: the hook waits on
``sys.meta_path`` for the program to import ``multiprocessing.spawn`` and
``multiprocessing.forkserver``.
"""

import builtins
import sys

#: What the fork server imports first under ``memlens run``.
SERVER_MODULE = "memlens.cli.forkserver"


def prepared(data):
    """Unpickled in the child: installs the builtin, returns the data."""
    if not hasattr(builtins, "profile"):
        from memlens.lineprof.builtin import ProfileBuiltin

        # Every form the parent's builtin takes (decorator, ``with
        # profile:``, enable_by_count()), recording nothing.
        builtins.profile = ProfileBuiltin()
    return data


class _Preparation(dict):
    """The preparation data, pickled as a call of prepared()."""

    def __reduce__(self):
        return prepared, (dict(self),)


class _Loader:
    """The loader of a module the hook waits for, which patches it once
    run."""

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
        self._patched = []  # (owner, name, original, wrapper)
        self._waiting = {}

    def install(self):
        self._waiting = {"multiprocessing.spawn": self._patch_spawn,
                         "multiprocessing.forkserver": self._patch_server}
        for name in list(self._waiting):
            module = sys.modules.get(name)
            if module is not None:
                self.patch(module)
        if self._waiting:
            sys.meta_path.insert(0, self)

    def find_spec(self, name, path=None, target=None):
        if name not in self._waiting:
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
        patcher = self._waiting.pop(module.__name__, None)
        if patcher is not None:
            patcher(module)
        if not self._waiting:
            self.uninstall_finder()

    def _replace(self, owner, name, wrapper):
        self._patched.append((owner, name, getattr(owner, name), wrapper))
        setattr(owner, name, wrapper)

    def _patch_spawn(self, module):
        original = module.get_preparation_data

        def get_preparation_data(name):
            return _Preparation(original(name))

        self._replace(module, "get_preparation_data", get_preparation_data)

    def _patch_server(self, module):
        original = module.ForkServer.ensure_running

        def ensure_running(server):
            preload = server._preload_modules
            if "__main__" not in preload:
                return original(server)
            server._preload_modules = [SERVER_MODULE] + [
                name for name in preload if name != "__main__"]
            try:
                return original(server)
            finally:
                server._preload_modules = preload

        self._replace(module.ForkServer, "ensure_running", ensure_running)

    def uninstall_finder(self):
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass

    def uninstall(self):
        self.uninstall_finder()
        self._waiting = {}
        for owner, name, original, wrapper in reversed(self._patched):
            if getattr(owner, name) is wrapper:
                setattr(owner, name, original)
        self._patched = []
