"""Memory handed back between stages (trainer.memory).

Why: all stages share one process, so a stage that leaves its memory resident shrinks what
merge, quantize and evaluate can use. The test builds the two ways memory stays behind after a
stage (a reference cycle only the cycle collector frees, and freed heap pages glibc keeps
because a live allocation sits above them) and checks that `release` gives it back. It runs in
a fresh interpreter: a heap that other tests have already fragmented would reuse its free
chunks and make the setup hold nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

from trainer import memory

SCENARIO = """
import gc, json
import numpy as np
from trainer import memory

CHUNK = 64 * 1024  # below glibc's mmap threshold: these come from the heap


class Holder:
    def __init__(self):
        self.me = self  # a cycle: refcounting alone never frees it
        self.chunks = [np.ones(CHUNK, dtype=np.uint8) for _ in range(3200)]  # 200 MiB


gc.collect()
gc.disable()
start = memory.rss_mib()
holder = Holder()
pin = np.ones(CHUNK, dtype=np.uint8)  # allocated last: keeps the heap's top in use
del holder
held = memory.rss_mib()
memory.release(after="test")
print(json.dumps({"start": start, "held": held, "released": memory.rss_mib(), "pin": int(pin.sum())}))
"""


@pytest.mark.skipif(sys.platform != "linux" or memory._glibc() is None, reason="needs glibc and /proc")
def test_release_frees_cycles_and_returns_heap_pages() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    assert rss["held"] - rss["start"] > 150, f"the setup should hold about 200 MiB: {rss}"
    assert rss["held"] - rss["released"] > 150, f"release gave back too little: {rss}"


def test_rss_is_read_from_proc() -> None:
    value = memory.rss_mib()
    if sys.platform == "linux":
        assert value is not None and value > 10
    else:
        assert value is None


PEAK_OF_A_CHILD = """
import json, resource
from trainer import memory
print(json.dumps({"peak": memory.peak_rss_mib(), "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="needs /proc")
def test_a_child_reports_its_own_peak_not_its_parents() -> None:
    """Why VmHWM: a scoring child started by a 2 GB run reported the run's 2 GB through ru_maxrss."""
    held = bytearray(600 * 2**20)
    held[::4096] = b"x" * len(held[::4096])  # touch every page
    command = [sys.executable, "-c", PEAK_OF_A_CHILD]
    child = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO).stdout)
    assert child["peak"] < 300
    del held


@pytest.mark.skipif(sys.platform != "linux", reason="needs /proc")
def test_reset_restarts_the_peak_from_the_current_resident_set() -> None:
    scenario = """
import json
from trainer import memory
block = bytearray(300 * 2**20); block[::4096] = b"x" * len(block[::4096])
before = memory.peak_rss_mib()
del block
memory.reset_peak_rss()
print(json.dumps({"before": before, "after": memory.peak_rss_mib()}))
"""
    result = subprocess.run(
        [sys.executable, "-c", scenario], capture_output=True, text=True, check=True, cwd=REPO
    )
    peaks = json.loads(result.stdout)
    assert peaks["before"] > 300 and peaks["after"] < peaks["before"] - 250
