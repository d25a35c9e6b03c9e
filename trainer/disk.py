"""Free-disk checks before the large writes, so a full disk stops a stage before it starts.

A stage that runs out of space half-way loses its time and leaves a partial folder; checking
against an estimate first turns that into a message that says how much is needed where.
The estimates err high: a margin of 10% plus 64 MiB.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from trainer.errors import TrainerError

MARGIN = 1.10
SLACK = 64 << 20


def _gib(size: float) -> str:
    return f"{size / (1 << 30):.2f} GiB"


def require_free(folder: Path, needed: int, what: str) -> None:
    """Stop with the sizes and the fix when `folder`'s filesystem cannot take `needed` bytes."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    wanted = int(needed * MARGIN) + SLACK
    if free < wanted:
        raise TrainerError(
            f"not enough free disk for {what}: it writes about {_gib(needed)} into {folder}, whose filesystem has "
            f"{_gib(free)} free (wanted {_gib(wanted)} with a margin). Free some space there, or put the run on "
            "another disk with hydra.run.dir=<path>"
        )


def parameter_count(checkpoint: Path) -> int:
    """Elements of every tensor in a folder's safetensors, read from their headers only."""
    from trainer.safetensors_stream import ShardReader

    total = 0
    for shard in sorted(checkpoint.glob("*.safetensors")):
        for entry in ShardReader(shard).entries.values():
            total += math.prod(entry["shape"])
    return total


def merged_bytes(checkpoint: Path, candidates: int) -> int:
    """The merge writes every candidate base in bf16 (two with merge.base=auto) before keeping one."""
    return 2 * parameter_count(checkpoint) * candidates


def quantized_bytes(merged: Path, bits: list[int], ggufs: int) -> int:
    """Each artifact at its bit width (plus scales), and the 16-bit GGUF the GGUF artifacts start from."""
    params = parameter_count(merged)
    total = sum(params * (b + 1) // 8 for b in bits)
    if ggufs:
        total += 2 * params
    return total
