"""npmem.c, through _core._numpy_hook_install and _numpy_hook_restore:
NumPy's array data routed through memlens's data-memory handler, in this
context, and back."""
import warnings

import numpy as np
import pytest

from memlens import _core

MiB = 2**20


def handler_name():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from numpy._core.multiarray import get_handler_name
        except ImportError:
            from numpy.core.multiarray import get_handler_name
    return get_handler_name()


@pytest.fixture
def hooked():
    before = handler_name()
    saved = _core._numpy_hook_install()
    assert saved is not None and saved is not True
    try:
        yield before
    finally:
        assert _core._numpy_hook_restore(saved) is True
    assert handler_name() == before


def test_the_handler_is_ours_while_installed_and_put_back(hooked):
    assert handler_name() == "memlens"
    arr = np.ones(10)
    assert arr.sum() == 10


def test_restoring_when_ours_is_not_there_changes_nothing():
    before = handler_name()
    saved = _core._numpy_hook_install()
    assert _core._numpy_hook_restore(saved) is True
    assert _core._numpy_hook_restore(saved) is False
    assert handler_name() == before


def test_installing_twice_says_ours_is_there_already(hooked):
    assert _core._numpy_hook_install() is True
    assert handler_name() == "memlens"


def test_restoring_needs_a_handler():
    with pytest.raises(TypeError, match="mem_handler"):
        _core._numpy_hook_restore(object())


def test_tracing_counts_array_data_once_until_freed(hooked):
    # Once: NumPy's own allocator may take the memory from the Python
    # allocators' raw domain (NumPy 2.x on 3.13 does), whose hook must
    # then leave it to the handler.
    _core._trace_start(1, 0)
    try:
        start = _core._trace_memory()[0]
        arr = np.ones(10 * MiB // 8)
        held = _core._trace_memory()[0] - start
        del arr
        after = _core._trace_memory()[0] - start
    finally:
        _core._trace_stop()
    assert 10 * MiB <= held < 10 * MiB + 64 * 1024
    assert after < 64 * 1024


def test_an_array_outlives_the_handler_that_made_it():
    saved = _core._numpy_hook_install()
    try:
        arr = np.arange(1000.0)
    finally:
        _core._numpy_hook_restore(saved)
    # freed through the handler that made it, ours, now passing through
    resized = np.resize(arr, 10**6)
    assert arr.sum() == 499500.0 and resized.shape == (10**6,)
    del arr, resized
