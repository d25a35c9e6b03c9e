"""Hand a finished stage's memory back before the next stage starts.

Why: the stages run one after another in one process, so whatever the train stage leaves
behind is still resident while merge, quantize and evaluate need room. Three things hold it:
the trainer, its accelerator and callbacks reference one another, so only the cycle collector
frees them; glibc keeps freed heap pages in its arenas rather than giving them back; and
torch's CUDA caching allocator keeps freed blocks reserved. bench_e2e.py measured the default
recipe's process still holding the train stage's 4.4 GiB through every later stage.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import sys
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@cache
def _glibc() -> Any | None:
    """glibc, for `malloc_trim`; None elsewhere (musl, macOS), where the trim is skipped."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def _status_mib(key: str) -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return None


def rss_mib() -> float | None:
    """This process's resident set (VmRSS), or None where /proc is absent."""
    return _status_mib("VmRSS")


def reset_peak_rss() -> None:
    """Restart this process's resident high-water mark from its current RSS (Linux 4.0+; else a no-op)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """This process's peak resident set since it started or since `reset_peak_rss`.

    VmHWM belongs to the process's own address space, so a child started by a large parent
    reports its own peak; `getrusage`'s ru_maxrss survives fork and exec and would report the
    parent's (measured: every scoring child read the 2.3 GB of the run that started it). Falls
    back to ru_maxrss where /proc is absent.
    """
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def release(after: str = "") -> None:
    """Collect cycles, empty torch's CUDA cache and return free heap pages to the system."""
    before = rss_mib()
    gc.collect()
    torch = sys.modules.get("torch")  # never import torch just to empty a cache it never filled
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
    now = rss_mib()
    if before is not None and now is not None:
        log.debug("memory after %s: resident %.0f MiB -> %.0f MiB", after or "release", before, now)
