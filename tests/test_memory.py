"""Memory handed back between stages (trainer.memory).

Why: all stages share one process, so a stage that leaves its memory resident shrinks what
merge, quantize and evaluate can use. The test builds the two ways memory stays behind after a
stage (a reference cycle only the cycle collector frees, and freed heap pages glibc keeps
because a live allocation sits above them) and checks that `release` gives it back.
"""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

from trainer import memory

CHUNK = 64 * 1024  # below glibc's mmap threshold: these come from the heap
CHUNKS = 3200  # 200 MiB


class Holder:
    def __init__(self) -> None:
        self.me = self  # a cycle: refcounting alone never frees it
        self.chunks = [np.ones(CHUNK, dtype=np.uint8) for _ in range(CHUNKS)]


@pytest.mark.skipif(sys.platform != "linux" or memory._glibc() is None, reason="needs glibc and /proc")
def test_release_frees_cycles_and_returns_heap_pages() -> None:
    gc.collect()
    gc.disable()
    try:
        start = memory.rss_mib()
        holder = Holder()
        pin = np.ones(CHUNK, dtype=np.uint8)  # allocated last: keeps the heap's top in use
        del holder
        held = memory.rss_mib()
        assert held - start > 150, "the setup should hold about 200 MiB"
        memory.release(after="test")
        released = memory.rss_mib()
    finally:
        gc.enable()
    assert pin.sum() == CHUNK
    assert held - released > 150, f"resident {start:.0f} -> {held:.0f} -> {released:.0f} MiB"


def test_rss_is_read_from_proc() -> None:
    value = memory.rss_mib()
    if sys.platform == "linux":
        assert value is not None and value > 10
    else:
        assert value is None
