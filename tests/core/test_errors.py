"""errors.c, through the readers that raise its errors: an OSError built
as the interpreter builds its own (the subclass follows from errno, the
message is strerror's), naming the file, and EINVAL for text the kernel
gave that cannot be parsed."""
import errno
import os

import pytest

from memlens import _core


def test_a_syscall_failure_raises_the_oserror_subclass_of_its_errno(
        proc_dir):
    (proc_dir / "statm").mkdir()  # opens, but reading it fails: EISDIR
    with pytest.raises(IsADirectoryError) as info:
        _core.rss()
    assert info.value.errno == errno.EISDIR
    assert info.value.strerror == os.strerror(errno.EISDIR)
    assert info.value.filename == str(proc_dir / "statm")


def test_unparsable_text_raises_einval_saying_what_was_read(proc_dir):
    (proc_dir / "statm").write_text("100 50 10 1 0 40 0\n")
    (proc_dir / "status").write_text("VmHWM: 10 kB\n")
    (proc_dir / "smaps_rollup").write_text("nothing to read here\n")
    with pytest.raises(OSError) as info:
        _core.memory(True)
    assert type(info.value) is OSError
    assert info.value.errno == errno.EINVAL
    assert info.value.strerror == "cannot parse smaps_rollup"
    assert info.value.filename == str(proc_dir / "smaps_rollup")
