"""Native memory (issue 20): every loaded object's malloc family and
anonymous mappings, hooked by rewriting its offset-table slots, attributed
to the Python line that caused them, counted in resident bytes beside the
allocated ones, and every slot put back when tracing stops.

The memory comes from tests/native/nativealloc.c and nativelate.c, built
by tests/nativebuild.py with this interpreter's compiler. Their slots()
and got() read an object's offset table on their own, to check memlens's
account of what it patched and that it put everything back."""
import ctypes
import json
import os
import signal
import tracemalloc

import numpy as np
import pytest

import memlens
from memlens import _core

import nativebuild
from conftest import MiB, SANITIZED, figures, fork_beside_threads

HERE = os.path.abspath(__file__)
PAGE = os.sysconf("SC_PAGE_SIZE")

KINDS = ["malloc", "calloc", "realloc", "reallocarray", "posix_memalign",
         "aligned_alloc", "memalign", "valloc", "pvalloc", "mmap", "mmap64"]
#: The functions memlens hooks that the extension calls.
HOOKED = ["malloc", "calloc", "realloc", "reallocarray", "posix_memalign",
          "aligned_alloc", "memalign", "valloc", "pvalloc", "free", "mmap",
          "mmap64", "munmap", "mremap"]
NATIVE_THREAD = "<native thread>"


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """(the nativealloc module, the folder of every built object)."""
    out = tmp_path_factory.mktemp("nativebuild")
    module, _ = nativebuild.build(out)
    return module, out


@pytest.fixture
def native(built):
    return built[0]


@pytest.fixture(autouse=True)
def nothing_left_patched():
    yield
    assert not memlens.is_tracing(), "tracing left running"
    assert not memlens.tracing_native(), "native hooks left installed"
    assert _core._native_slots() == [], "slots left patched"


def line_of(snapshot, text):
    """The Statistic of the line of this file whose source is `text`."""
    for stat in snapshot.statistics("lineno"):
        if stat.filename == HERE and stat.line == text:
            return stat
    return None


def gone(snapshot, text):
    """Whether the line holds no native block any more."""
    row = line_of(snapshot, text)
    return row is None or (row.native_size == 0 and row.native_count == 0)


def ceiling(size):
    """The most a block of `size` bytes may count: rounded up to a whole
    page (valloc, pvalloc, mmap), and a page of slack."""
    return -(-size // PAGE) * PAGE + PAGE


def assert_one_block(row, size):
    assert row is not None
    assert row.native_count == 1, row
    assert size <= row.native_size <= ceiling(size), row
    assert row.python_size == row.size - row.native_size


def into_memlens(address):
    """Whether `address` lies in memlens's C extension (one of its hooks).
    Comparing with dlsym() would not do: in a program that is not
    position-independent, a function's address is the program's own PLT
    stub, which the slots of libraries do not hold."""
    core = os.path.realpath(_core.__file__)
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == core:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if start <= address < end:
                    return True
    return False


def unpatched(module, path=None):
    """{symbol: slot values} of the symbols whose slots in the object are
    missing or still lead into memlens; empty when nothing is
    redirected."""
    left = {}
    for symbol in module.SYMBOLS:
        values = [value for _, value in module.slots(symbol, path)]
        if not values or any(into_memlens(v) for v in values):
            left[symbol] = values
    return left


def test_the_extension_knows_every_kind_and_reaches_each_hooked_symbol(
        native):
    # Checks the test objects themselves, without memlens.
    assert list(native.KINDS) == KINDS
    assert set(HOOKED) <= set(native.SYMBOLS)
    assert unpatched(native) == {}
    for symbol in HOOKED:
        assert len(native.slots(symbol)) == 1, symbol


@pytest.mark.parametrize("size", [1000, 3 * MiB + 1], ids=["small", "large"])
@pytest.mark.parametrize("kind", [
    # valgrind aborts the program at any call of pvalloc: not in its run
    pytest.param(kind, marks=() if kind == "pvalloc"
                 else pytest.mark.valgrind)
    for kind in KINDS])
def test_each_kind_lands_on_the_calling_line_and_its_release_is_seen(
        native, kind, size):
    with memlens.tracing(native=True) as t:
        address = native.alloc(kind, size)  # the block
        during = memlens.take_snapshot()
        native.release(kind, address, size)  # given back
    assert during.native
    assert_one_block(line_of(during, "address = native.alloc(kind, size)  "
                                     "# the block"), size)
    assert gone(t.snapshot, "address = native.alloc(kind, size)  # the block")
    assert gone(t.snapshot, "native.release(kind, address, size)  "
                            "# given back")


def test_a_mapping_moved_by_mremap_is_followed(native):
    small, big = 4 * MiB, 64 * MiB
    with memlens.tracing(native=True) as t:
        first = native.alloc("mmap", small)  # mapped
        moved = native.remap(first, small, big)  # grown
        during = memlens.take_snapshot()
        native.release("mmap", moved, big)
    rows = [line_of(during, 'first = native.alloc("mmap", small)  # mapped'),
            line_of(during, "moved = native.remap(first, small, big)  "
                            "# grown")]
    live = [row for row in rows if row is not None]
    assert sum(row.native_count for row in live) == 1
    assert big <= sum(row.native_size for row in live) <= ceiling(big)
    assert gone(t.snapshot, 'first = native.alloc("mmap", small)  # mapped')
    assert gone(t.snapshot, "moved = native.remap(first, small, big)  "
                            "# grown")


def test_unmapping_part_of_a_mapping_leaves_the_rest_counted(native):
    size = 64 * MiB
    with memlens.tracing(native=True) as t:
        address = native.alloc("mmap", size)  # to be cut
        native.unmap_part(address, 16 * MiB, 16 * MiB)
        holed = memlens.take_snapshot()
        native.unmap_part(address, 0, 16 * MiB)
        native.unmap_part(address, 32 * MiB, 32 * MiB)
    row = line_of(holed, 'address = native.alloc("mmap", size)  # to be cut')
    assert row is not None
    assert 48 * MiB <= row.native_size <= ceiling(48 * MiB), row
    assert gone(t.snapshot, 'address = native.alloc("mmap", size)  '
                            '# to be cut')


def test_a_block_made_without_the_gil_lands_on_the_calling_line(native):
    size = 5 * MiB
    with memlens.tracing(native=True) as t:
        address = native.alloc_nogil("malloc", size)  # GIL released
        during = memlens.take_snapshot()
        native.release("malloc", address, size)
    assert_one_block(line_of(during, 'address = native.alloc_nogil('
                                     '"malloc", size)  # GIL released'),
                     size)
    assert gone(t.snapshot, 'address = native.alloc_nogil("malloc", size)  '
                            '# GIL released')


def test_a_thread_created_on_a_line_while_tracing_lands_there(native):
    size = 5 * MiB
    with memlens.tracing(native=True) as t:
        address = native.alloc_in_thread("mmap", size)  # its own thread
        during = memlens.take_snapshot()
        native.release("mmap", address, size)
    assert_one_block(line_of(during, 'address = native.alloc_in_thread('
                                     '"mmap", size)  # its own thread'),
                     size)
    assert gone(t.snapshot, 'address = native.alloc_in_thread("mmap", '
                            'size)  # its own thread')


@pytest.mark.valgrind
def test_a_thread_started_while_tracing_allocates_on_the_starting_line(
        native):
    size = 6 * MiB
    with memlens.tracing(native=True) as t:
        handle = native.start_thread()  # started while tracing
        try:
            address = native.thread_alloc(handle, "malloc", size)  # later
            during = memlens.take_snapshot()
            native.thread_release(handle, "malloc", address, size)
        finally:
            native.stop_thread(handle)
    row = line_of(during, "handle = native.start_thread()  "
                          "# started while tracing")
    assert_one_block(row, size)
    assert gone(during, 'address = native.thread_alloc(handle, "malloc", '
                        'size)  # later')
    # The worker's free is seen too.
    assert gone(t.snapshot, "handle = native.start_thread()  "
                            "# started while tracing")


def test_a_thread_started_before_tracing_lands_on_the_native_thread_row(
        native):
    size = 6 * MiB
    handle = native.start_thread()
    try:
        with memlens.tracing(native=True) as t:
            address = native.thread_alloc(handle, "mmap64", size)  # old one
            during = memlens.take_snapshot()
            native.thread_release(handle, "mmap64", address, size)
    finally:
        native.stop_thread(handle)
    rows = [s for s in during.statistics() if s.filename == NATIVE_THREAD]
    assert len(rows) == 1, rows
    assert rows[0].lineno == 0
    assert size <= rows[0].native_size <= ceiling(size) + MiB, rows
    assert gone(during, 'address = native.thread_alloc(handle, "mmap64", '
                        'size)  # old one')
    after = [s for s in t.snapshot.statistics()
             if s.filename == NATIVE_THREAD]
    assert not after or after[0].native_size < size


@pytest.mark.parametrize("link", sorted(nativebuild.LATE_LIBRARIES))
def test_a_library_opened_after_tracing_started_is_covered(
        built, tmp_path, link):
    native, out = built
    size = 4 * MiB
    with memlens.tracing(native=True) as t:
        lib = nativebuild.load_late_library(out, tmp_path, link)
        block = lib.late_malloc(size)  # late malloc
        mapping = lib.late_mmap(size)  # late mmap
        during = memlens.take_snapshot()
        lib.late_free(block)
        assert lib.late_munmap(mapping, size) == 0
        redirected = native.got("malloc", lib._name)
    assert into_memlens(redirected)
    for text in ["block = lib.late_malloc(size)  # late malloc",
                 "mapping = lib.late_mmap(size)  # late mmap"]:
        row = line_of(during, text)
        assert row is not None, text
        assert size <= row.native_size <= ceiling(size), (text, row)
        assert gone(t.snapshot, text)
    for symbol in ["malloc", "free", "mmap", "munmap"]:
        values = [value for _, value in native.slots(symbol, lib._name)]
        assert values and not any(into_memlens(v) for v in values), symbol


def test_an_extension_imported_after_tracing_started_is_covered(
        built, tmp_path):
    _, out = built
    size = 3 * MiB
    with memlens.tracing(native=True) as t:
        late = nativebuild.import_late(out, tmp_path)
        address = late.alloc("calloc", size)  # late extension
        during = memlens.take_snapshot()
        late.release("calloc", address, size)
        redirected = late.got("calloc")
    assert late.__name__ == "nativealloc_late"
    assert into_memlens(redirected)
    assert_one_block(line_of(during, 'address = late.alloc("calloc", size)  '
                                     '# late extension'), size)
    assert gone(t.snapshot, 'address = late.alloc("calloc", size)  '
                            '# late extension')
    assert unpatched(late) == {}


SQLITE_FILL = ("with recursive c(n) as (select 1 union all select n + 1 "
               "from c where n < 4096) insert into t select randomblob(1000) "
               "from c")


def test_a_library_working_without_the_gil_loses_no_change():
    # SQLite runs the query with the GIL released: its tens of thousands
    # of mallocs and frees wait in the queue for a call holding the GIL.
    sqlite3 = pytest.importorskip("sqlite3")
    db = sqlite3.connect(":memory:")
    try:
        with memlens.tracing(native=True):
            db.execute("create table t(x)")
            db.execute(SQLITE_FILL)  # without the GIL
            during = memlens.take_snapshot()
            stats = _core._trace_stats()
    finally:
        db.close()
    assert stats["queue_lost"] == 0, stats
    assert during.lost_records == 0 and during.lost_frees == 0
    row = line_of(during, "db.execute(SQLITE_FILL)  # without the GIL")
    assert row is not None
    assert row.native_size >= 4096 * 1000, row


def loaded(path):
    """Whether the object at `path` is mapped in this process."""
    with open("/proc/self/maps") as maps:
        return any(line.rstrip("\n").endswith(str(path)) for line in maps)


@pytest.mark.valgrind
def test_a_second_start_writes_the_known_slots_without_reading_again(
        built, tmp_path):
    native, out = built
    size = 2 * MiB
    with memlens.tracing(native=True):
        first = _core._native_slots()
    with memlens.tracing(native=True) as t:
        read = _core._native_stats()["objects_read"]
        again = _core._native_slots()
        address = native.alloc("malloc", size)  # known slots
        during = memlens.take_snapshot()
        native.release("malloc", address, size)
    assert read == 0
    assert sorted(again) == sorted(first)
    assert_one_block(line_of(during, 'address = native.alloc("malloc", '
                                     'size)  # known slots'), size)
    assert gone(t.snapshot, 'address = native.alloc("malloc", size)  '
                            '# known slots')
    assert unpatched(native) == {}
    # A library loaded between two starts is the only object read.
    lib = nativebuild.load_late_library(out, tmp_path)
    with memlens.tracing(native=True):
        read = _core._native_stats()["objects_read"]
        redirected = native.got("malloc", lib._name)
    assert read == 1
    assert into_memlens(redirected)
    values = [value for _, value in native.slots("malloc", lib._name)]
    assert values and not any(into_memlens(v) for v in values)


@pytest.mark.valgrind
def test_an_object_unloaded_between_two_starts_has_every_object_read(
        built, tmp_path):
    import _ctypes

    native, out = built
    size = 2 * MiB
    lib = nativebuild.load_late_library(out, tmp_path / "first")
    path = lib._name
    with memlens.tracing(native=True):
        assert into_memlens(native.got("malloc", path))
    _ctypes.dlclose(lib._handle)
    del lib
    assert not loaded(path)
    # The next object may take the same addresses: nothing known of the
    # first may be written into it, and everything is read again.
    other = nativebuild.load_late_library(out, tmp_path / "second")
    with memlens.tracing(native=True) as t:
        read = _core._native_stats()["objects_read"]
        redirected = native.got("malloc", other._name)
        block = other.late_malloc(size)  # after an unload
        during = memlens.take_snapshot()
        other.late_free(block)
    assert read > 1
    assert into_memlens(redirected)
    row = line_of(during, "block = other.late_malloc(size)  # after an unload")
    assert row is not None and size <= row.native_size <= ceiling(size), row
    assert gone(t.snapshot, "block = other.late_malloc(size)  "
                            "# after an unload")
    values = [value for _, value in native.slots("malloc", other._name)]
    assert values and not any(into_memlens(v) for v in values)


@pytest.mark.valgrind
def test_every_patched_slot_is_put_back_at_stop(native):
    before = {symbol: native.slots(symbol) for symbol in native.SYMBOLS}
    assert unpatched(native) == {}
    with memlens.tracing(native=True):
        assert memlens.tracing_native()
        patched = _core._native_slots()
        ours = {symbol: native.slots(symbol) for symbol in HOOKED}
        redirected = native.got("malloc")
    assert into_memlens(redirected)
    assert not memlens.tracing_native()
    assert _core._native_slots() == []
    by_slot = {}
    for path, symbol, slot, now, original in patched:
        assert now != original, (path, symbol)
        by_slot[slot] = (symbol, now, original)
    # memlens's account of our object agrees with our own reading of it.
    for symbol, slots in ours.items():
        for slot, value in slots:
            assert slot in by_slot, symbol
            assert by_slot[slot][0] == symbol
            assert by_slot[slot][1] == value
            assert (slot, by_slot[slot][2]) in before[symbol]
    # Every slot memlens rewrote, in every object, holds its old value.
    for path, symbol, slot, now, original in patched:
        assert ctypes.c_size_t.from_address(slot).value == original, (
            path, symbol)
    assert {symbol: native.slots(symbol) for symbol in native.SYMBOLS} \
        == before


def test_nothing_stays_patched_after_an_exception(native):
    size = MiB
    with pytest.raises(ZeroDivisionError):
        with memlens.tracing(native=True):
            address = native.alloc("malloc", size)
            assert into_memlens(native.got("malloc"))
            1 / 0
    native.release("malloc", address, size)
    assert not memlens.is_tracing()
    assert not memlens.tracing_native()
    assert _core._native_slots() == []
    assert unpatched(native) == {}
    # and tracing starts again as new
    with memlens.tracing(native=True):
        again = native.alloc("malloc", size)  # after the exception
        during = memlens.take_snapshot()
        native.release("malloc", again, size)
    assert_one_block(line_of(during, 'again = native.alloc("malloc", size)  '
                                     '# after the exception'), size)
    assert unpatched(native) == {}


def test_native_tracing_off_patches_nothing(native):
    with memlens.tracing() as t:
        assert not memlens.tracing_native()
        assert _core._native_slots() == []
        assert unpatched(native) == {}
        address = native.alloc("malloc", 2 * MiB)  # not hooked
        native.release("malloc", address, 2 * MiB)
    row = line_of(t.snapshot, 'address = native.alloc("malloc", 2 * MiB)  '
                              '# not hooked')
    assert row is None or row.native_size == 0


@pytest.mark.parametrize("child_action", ["continue", "stop"])
def test_a_forked_child_goes_on_or_stops_and_puts_every_slot_back(
        native, child_action):
    size = 2 * MiB
    memlens.start_tracing(native=True)
    try:
        read, write = os.pipe()
        pid = fork_beside_threads()
        if pid == 0:
            os.close(read)
            signal.alarm(20)
            report = {"error": "the child failed"}
            try:
                address = native.alloc("malloc", size)  # in the child
                if child_action == "continue":
                    row = line_of(memlens.take_snapshot(),
                                  'address = native.alloc("malloc", size)  '
                                  '# in the child')
                    report = {"native_size": row and row.native_size,
                              "native_count": row and row.native_count}
                else:
                    memlens.stop_tracing()
                    report = {"tracing": memlens.is_tracing(),
                              "native": memlens.tracing_native(),
                              "slots": len(_core._native_slots()),
                              "unpatched": unpatched(native)}
                native.release("malloc", address, size)
            except BaseException as exc:
                report = {"error": repr(exc)}
            finally:
                os.write(write, json.dumps(report).encode())
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            said = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, said
        report = json.loads(said)
        # The parent goes on, its slots still redirected.
        assert memlens.tracing_native()
        assert into_memlens(native.got("malloc"))
    finally:
        memlens.stop_tracing()
    if child_action == "continue":
        assert report["native_count"] == 1, report
        assert size <= report["native_size"] <= ceiling(size), report
    else:
        assert report == {"tracing": False, "native": False, "slots": 0,
                          "unpatched": {}}


@pytest.mark.parametrize("first", ["memlens", "tracemalloc"])
def test_native_blocks_are_attributed_beside_tracemalloc(native, first):
    size = 3 * MiB
    starts = {"memlens": lambda: memlens.start_tracing(native=True),
              "tracemalloc": lambda: tracemalloc.start()}
    stops = {"memlens": lambda: memlens.stop_tracing(),
             "tracemalloc": lambda: tracemalloc.stop()}
    second = "tracemalloc" if first == "memlens" else "memlens"
    starts[first]()
    try:
        starts[second]()
        try:
            address = native.alloc("posix_memalign", size)  # both on
            during = memlens.take_snapshot()
            native.release("posix_memalign", address, size)
        finally:
            stops[second]()
    finally:
        stops[first]()
    # As in test_tracing: a hook left passing calls through by the order
    # of the stops is unlinked by the next use.
    _core._hooks_acquire(False)
    _core._hooks_release(False)
    assert_one_block(line_of(during, 'address = native.alloc('
                                     '"posix_memalign", size)  # both on'),
                     size)
    assert unpatched(native) == {}


def test_native_blocks_are_attributed_inside_measure(native):
    size = 32 * MiB
    with memlens.tracing(native=True):
        with memlens.measure() as m:
            address = native.alloc("mmap", size)  # measured
        during = memlens.take_snapshot()
        native.release("mmap", address, size)
    assert_one_block(line_of(during, 'address = native.alloc("mmap", size)  '
                                     '# measured'), size)
    assert m.done
    if not SANITIZED:
        assert m.peak_delta >= 0.9 * size


def profiled_native(native, size):
    block = native.alloc("mmap", size)  # profiled
    return block


def test_native_blocks_are_attributed_under_the_line_profiler(native):
    size = 32 * MiB
    profiler = memlens.LineProfiler(profiled_native, alloc=True)
    with memlens.tracing(native=True):
        with profiler:
            address = profiled_native(native, size)
        during = memlens.take_snapshot()
        native.release("mmap", address, size)
    assert_one_block(line_of(during, 'block = native.alloc("mmap", size)  '
                                     '# profiled'), size)
    increments = {rec.contents.strip(): rec.increment or 0
                  for rec in profiler.results[0].lines}
    if not SANITIZED:
        assert increments['block = native.alloc("mmap", size)  '
                          '# profiled'] >= 0.9 * size


def test_an_untouched_mapping_counts_allocated_but_not_resident(native):
    reserved_size, used_size = 256 * MiB, 32 * MiB
    with memlens.tracing(native=True):
        reserved = native.alloc("mmap", reserved_size, False)  # reserved
        used = native.alloc("mmap", used_size)  # written
        during = memlens.take_snapshot()
        native.release("mmap", reserved, reserved_size)
        native.release("mmap", used, used_size)
    reserved_row = line_of(during, 'reserved = native.alloc("mmap", '
                                   'reserved_size, False)  # reserved')
    used_row = line_of(during, 'used = native.alloc("mmap", used_size)  '
                               '# written')
    assert_one_block(reserved_row, reserved_size)
    assert reserved_row.resident < 8 * MiB
    assert_one_block(used_row, used_size)
    assert used_size <= used_row.resident <= used_row.size
    # A native snapshot ranks by what the kernel charges, and still tells
    # what was allocated.
    assert during.top(1)[0].lineno == used_row.lineno
    assert during.top(1, by="size")[0].lineno == reserved_row.lineno
    assert during.resident <= during.total - reserved_size + 8 * MiB
    assert during.resident == sum(s.resident for s in during.statistics())


@figures
def test_an_untouched_big_malloc_counts_allocated_but_not_resident(native):
    size = 64 * MiB
    with memlens.tracing(native=True):
        address = native.alloc("malloc", size, False)  # never written
        during = memlens.take_snapshot()
        native.release("malloc", address, size)
    row = line_of(during, 'address = native.alloc("malloc", size, False)  '
                          '# never written')
    assert_one_block(row, size)
    assert row.resident < 8 * MiB


@figures
def test_a_native_snapshot_adds_up_to_the_rss_rise(native):
    size = 128 * MiB
    with memlens.tracing(native=True) as t:
        address = native.alloc("mmap", size)  # most of the rise
        during = memlens.take_snapshot()
        native.release("mmap", address, size)
    for snapshot in (during, t.peak):
        assert snapshot.native
        assert snapshot.rss_rise >= 0.95 * size
        # memlens's own tables are counted apart from the program's rise
        assert 0 < snapshot.overhead < 8 * MiB
        assert snapshot.untracked == (snapshot.rss_rise - snapshot.overhead
                                      - snapshot.resident)
        assert snapshot.explained == pytest.approx(
            snapshot.resident / (snapshot.rss_rise - snapshot.overhead))
    row = line_of(during, 'address = native.alloc("mmap", size)  '
                          '# most of the rise')
    assert size <= row.resident <= ceiling(size) + PAGE
    assert during.explained >= 0.9


def test_a_snapshot_without_native_tracing_has_no_rss_figures():
    with memlens.tracing() as t:
        kept = bytearray(2 * MiB)
    for snapshot in (t.snapshot, t.peak):
        assert snapshot.native is False
        assert snapshot.resident == snapshot.total
        assert snapshot.rss_rise is None
        assert snapshot.untracked is None
        assert snapshot.explained is None
    for row in t.snapshot.statistics():
        assert row.native_size == 0 and row.native_count == 0
        assert row.resident == row.size
    del kept


def test_python_and_numpy_blocks_are_counted_once(native):
    with memlens.tracing(native=True) as t:
        blob = bytearray(8 * MiB)  # Python's allocator
        array = np.ones(MiB)  # NumPy's handler
    for text in ["blob = bytearray(8 * MiB)  # Python's allocator",
                 "array = np.ones(MiB)  # NumPy's handler"]:
        row = line_of(t.snapshot, text)
        assert row is not None, text
        assert 8 * MiB <= row.size < 8 * MiB + 64 * 1024, (text, row)
        assert row.native_size < 64 * 1024, (text, row)
    del blob, array
