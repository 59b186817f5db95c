"""The C extension of memlens; everything else is in pyproject.toml.

Build switches (environment):
  MEMLENS_DEBUG=1     -O0 -g3, assertions on
  MEMLENS_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer
"""
import glob
import os
import sys
import sysconfig

from setuptools import Extension, setup

# The allocator hooks and the line tracer rely on the GIL to serialise
# their tables; a free-threaded interpreter has none. Refuse in one line
# before the compiler prints pages (common.h refuses too, for builds that
# bypass this file).
if sysconfig.get_config_var("Py_GIL_DISABLED"):
    sys.exit("memlens: free-threaded CPython (Py_GIL_DISABLED) is not "
             "supported yet; use the default build of this Python")

compile_args = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                "-Wno-missing-field-initializers", "-D_GNU_SOURCE",
                "-Werror=implicit-function-declaration",
                # Only PyInit__core is exported (PyMODINIT_FUNC says so):
                # the globals the allocator hooks read on every call are
                # then reached directly, not through the GOT.
                "-fvisibility=hidden"]
link_args = []
undef = []

if os.environ.get("MEMLENS_DEBUG"):
    compile_args += ["-O0", "-g3"]
    undef.append("NDEBUG")
if os.environ.get("MEMLENS_SANITIZE"):
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                "-fno-sanitize-recover=undefined",
                # CPython builds with -fwrapv, which would hide signed
                # overflow from UBSan.
                "-fno-wrapv"]
    compile_args += sanitize + ["-O1", "-g"]
    link_args += sanitize

setup(
    ext_modules=[
        Extension(
            "memlens._core",
            sources=sorted(glob.glob("csrc/*.c")),
            depends=sorted(glob.glob("csrc/*.h")),
            include_dirs=["csrc"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            undef_macros=undef,
            libraries=["pthread", "m"],
        )
    ],
)
