"""The C readers of /proc/self: rss() and memory()."""
import errno
import os

import pytest

import memlens
from memlens import _core

from conftest import MiB, figures, spike

PAGE = os.sysconf("SC_PAGESIZE")


def statm_rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def test_rss_agrees_with_statm():
    before = statm_rss()
    value = memlens.rss()
    after = statm_rss()
    assert isinstance(value, int)
    assert min(before, after) - 64 * PAGE <= value <= max(before, after) + 64 * PAGE


@figures
def test_rss_follows_a_held_allocation():
    import numpy as np

    # Free heap pages left resident by earlier tests (glibc keeps up to
    # 64 MiB at the top once big blocks have come and gone) would take
    # the block without RSS moving: give them back first.
    _core._trim_heap()
    start = memlens.rss()
    block = np.ones(50 * MiB // 8)
    grown = memlens.rss() - start
    del block
    assert abs(grown - 50 * MiB) < 2 * MiB


def test_memory_fields():
    info = memlens.memory()
    assert info.rss > 0 and info.vms >= info.rss and info.shared >= 0
    assert info.peak >= info.rss
    assert (info.uss, info.pss, info.swap) == (None, None, None)
    assert set(info.to_dict()) == {"rss", "vms", "shared", "peak", "uss",
                                   "pss", "swap"}


def test_memory_detail_reads_smaps_rollup():
    info = memlens.memory(detail=True)
    assert 0 < info.uss <= info.rss + 64 * PAGE
    assert 0 < info.pss <= info.rss + 64 * PAGE
    assert info.swap >= 0


@figures
def test_memory_peak_survives_peak_window_resets():
    spike(200 * MiB)
    high = memlens.memory().peak
    with memlens.peak():
        pass
    assert memlens.memory().peak >= high
    assert high - memlens.rss() > 150 * MiB


def test_missing_file_raises_oserror_naming_it(proc_dir):
    with pytest.raises(FileNotFoundError) as info:
        memlens.rss()
    assert info.value.filename == str(proc_dir / "statm")
    assert "statm" in str(info.value)


def test_corrupt_statm_raises_oserror_naming_it(proc_dir):
    (proc_dir / "statm").write_text("not numbers\n")
    with pytest.raises(OSError) as info:
        memlens.rss()
    assert info.value.errno == errno.EINVAL
    assert info.value.filename == str(proc_dir / "statm")
    assert "cannot parse" in str(info.value)


def test_status_without_high_water_mark_raises(proc_dir):
    (proc_dir / "statm").write_text("100 50 10 1 0 40 0\n")
    (proc_dir / "status").write_text("Name: python\nVmRSS: 200 kB\n")
    with pytest.raises(OSError, match="VmHWM") as info:
        memlens.memory()
    assert info.value.filename == str(proc_dir / "status")


def test_reads_fake_files_exactly(proc_dir):
    (proc_dir / "statm").write_text("100 50 10 1 0 40 0\n")
    (proc_dir / "status").write_text("Name: x\nVmHWM:\t  4096 kB\n")
    (proc_dir / "smaps_rollup").write_text(
        "Rss: 200 kB\nPss: 150 kB\nPrivate_Clean: 10 kB\n"
        "Private_Dirty: 90 kB\nSwap: 7 kB\n")
    assert memlens.rss() == 50 * PAGE
    info = memlens.memory(detail=True)
    assert (info.rss, info.vms, info.shared) == (50 * PAGE, 100 * PAGE,
                                                 10 * PAGE)
    assert info.peak >= 4096 * 1024
    assert (info.uss, info.pss, info.swap) == (100 * 1024, 150 * 1024,
                                               7 * 1024)


def test_missing_smaps_rollup_raises_naming_it(proc_dir):
    (proc_dir / "statm").write_text("100 50 10 1 0 40 0\n")
    (proc_dir / "status").write_text("VmHWM: 10 kB\n")
    memlens.memory()
    with pytest.raises(FileNotFoundError) as info:
        memlens.memory(detail=True)
    assert info.value.filename == str(proc_dir / "smaps_rollup")


def test_proc_dir_needs_a_str():
    with pytest.raises(TypeError):
        _core._set_proc_dir(3)


@figures
def test_rss_after_fork_reads_the_childs_own_memory():
    import numpy as np

    memlens.rss()  # the cached descriptor is now open in the parent
    held = [np.ones(100 * MiB // 8)]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            held.clear()  # the child's RSS falls, the parent's does not
            ok = abs(memlens.rss() - statm_rss()) < 8 * MiB
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    answer = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    held.clear()
    assert answer == b"1"
