"""The native test objects, built with this interpreter's C compiler.

- tests/native/nativealloc.c as the extension ``nativealloc``, and again
  as ``nativealloc_late``: the same functions under another name, for a
  test to import only once tracing runs;
- tests/native/nativelate.c as a plain shared library, in three link
  styles: calls through the PLT (``plt``, the usual build), the same
  bound at load with the offset table made read-only after (``now``, full
  RELRO), and no PLT at all, every call through a slot of the offset
  table that an address load would use (``noplt``).

A test that needs an object loaded fresh (opened after tracing started)
loads a copy of it at a path of its own: the dynamic linker hands back the
object already loaded for a path it has seen.
"""
import ctypes
import importlib.util
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

NATIVE = Path(__file__).resolve().parent / "native"
EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")

#: Link style of the plain library -> (its file name, extra flags).
LATE_LIBRARIES = {
    "plt": ("libnativelate.so", []),
    "now": ("libnativelate-now.so", ["-Wl,-z,relro,-z,now"]),
    "noplt": ("libnativelate-noplt.so", ["-fno-plt"]),
}


def _compile(source, target, flags):
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    command = cc + ["-shared", "-fPIC", "-O1", "-Wall", *flags,
                    str(NATIVE / source), "-o", str(target),
                    "-lpthread", "-ldl"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stderr}")


def _import(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(out_dir):
    """Builds every object into `out_dir`; (the imported ``nativealloc``
    module, the path of libnativelate.so)."""
    out_dir = Path(out_dir)
    include = "-I" + sysconfig.get_paths()["include"]
    _compile("nativealloc.c", out_dir / ("nativealloc" + EXT_SUFFIX),
             [include])
    _compile("nativealloc.c", out_dir / ("nativealloc_late" + EXT_SUFFIX),
             [include, "-DNATIVEALLOC_NAME=nativealloc_late"])
    for filename, flags in LATE_LIBRARIES.values():
        _compile("nativelate.c", out_dir / filename, flags)
    module = _import("nativealloc", out_dir / ("nativealloc" + EXT_SUFFIX))
    return module, out_dir / LATE_LIBRARIES["plt"][0]


def _fresh_copy(path, where):
    where = Path(where)
    where.mkdir(parents=True, exist_ok=True)
    target = where / Path(path).name
    if target.exists():
        raise RuntimeError(f"{target} was loaded before: use another folder")
    shutil.copyfile(path, target)
    return target


def import_late(out_dir, where):
    """Imports a fresh copy of ``nativealloc_late`` (built by build() into
    `out_dir`) from the folder `where`, which must not hold one yet."""
    name = "nativealloc_late"
    return _import(name, _fresh_copy(Path(out_dir) / (name + EXT_SUFFIX),
                                     where))


def load_late_library(out_dir, where, link="plt"):
    """ctypes.CDLL of a fresh copy of libnativelate in the link style
    `link`, from the folder `where`; its functions typed."""
    lib = ctypes.CDLL(str(_fresh_copy(
        Path(out_dir) / LATE_LIBRARIES[link][0], where)))
    lib.late_malloc.restype = ctypes.c_void_p
    lib.late_malloc.argtypes = [ctypes.c_size_t]
    lib.late_free.restype = None
    lib.late_free.argtypes = [ctypes.c_void_p]
    lib.late_mmap.restype = ctypes.c_void_p
    lib.late_mmap.argtypes = [ctypes.c_size_t]
    lib.late_munmap.restype = ctypes.c_int
    lib.late_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return lib
