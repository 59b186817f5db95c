"""ptrtable.h: the table of live blocks (pointer -> size) behind the exact
hooks. Reached through the hooks: every block handed out while they listen
is put in the table, and its free is sized by finding it again, so the
bytes counted freed equal those counted allocated only if every lookup
finds its block, with its size, however the table grew and whatever was
removed before it."""
import random

import pytest

from memlens import _core

from conftest import counting_hooks


@pytest.mark.parametrize("n", [10, 1000, 50_000])
def test_every_block_freed_in_random_order_is_found_with_its_size(n):
    # 50,000 blocks: the table (from 1,024 slots) doubles six times.
    order = list(range(n))
    random.Random(n).shuffle(order)
    with counting_hooks() as h:
        blocks = [bytes(100 + i % 400) for i in range(n)]
        for i in order:
            blocks[i] = None
        del blocks
    made = sum(100 + i % 400 for i in range(n))
    assert h.allocated >= made
    # everything made inside was freed inside: the few bytes between are
    # the counters' own tuple and the loop's small ints
    assert 0 <= h.allocated - h.freed < 4096


def test_blocks_removed_between_others_leave_the_rest_findable():
    # Removing entries shifts colliding ones back; those must stay found.
    with counting_hooks() as h:
        keep = [bytearray(64 + i % 64) for i in range(20_000)]
        for i in range(0, len(keep), 3):
            keep[i] = None  # a third removed, scattered over the table
        for i in range(len(keep)):
            keep[i] = None  # then the rest
        del keep
    assert 0 <= h.allocated - h.freed < 4096


def test_a_resized_block_is_found_under_its_new_address_and_size():
    with counting_hooks() as h:
        buf = bytearray(1000)
        for size in (5000, 100_000, 300, 2_000_000):
            buf.extend(bytes(size))
        del buf
    assert h.allocated > 2_000_000
    assert 0 <= h.allocated - h.freed < 4096


def test_the_table_is_emptied_when_the_last_exact_user_goes():
    with counting_hooks() as first:
        blocks = [bytes(200) for _ in range(5000)]
    assert first.allocated >= 5000 * 200
    # A later user did not see them made: their frees are not its to count.
    with counting_hooks() as later:
        del blocks
    assert later.freed < 4096
