"""The package surface and the cost of importing it."""
import subprocess
import sys

import memlens

SPEC_NAMES = {"rss", "memory", "peak", "Sampler", "measure", "Measurement",
              "MemoryInfo", "PeakWindow"}


def test_import_has_no_side_effects():
    code = (
        "import sys, threading, memlens\n"
        "print('memlens._core' in sys.modules, threading.active_count(),\n"
        "      sys.gettrace() is None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["False", "1", "True"]


def test_public_names_are_the_specs():
    assert SPEC_NAMES <= set(memlens.__all__)
    for name in SPEC_NAMES:
        assert getattr(memlens, name) is not None
    assert memlens.__version__


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no_such_thing"):
        memlens.no_such_thing


def test_extension_is_a_real_module_not_a_namespace():
    from memlens import _core

    assert _core.__file__.endswith(".so")
