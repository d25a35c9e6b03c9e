"""Reading and writing safetensors files one tensor at a time.

`safetensors.safe_open` maps the whole file (its pages count as resident once touched) and
`save_file` serialises a whole dict of tensors into one buffer, so patching a shard with them
holds about three shards in memory. The format is a little-endian u64 header length, a JSON
header (dtype, shape, byte offsets per tensor) and the raw bytes: reading each tensor with a
plain positioned read and writing each as soon as it is ready keeps one tensor in memory.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}


class ShardReader:
    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self.entries: dict[str, dict[str, Any]] = header
        self.data_start = 8 + length

    def keys(self) -> list[str]:
        """In file order, so reads move forward through the file."""
        return sorted(self.entries, key=lambda k: self.entries[k]["data_offsets"][0])

    def read(self, key: str) -> torch.Tensor:
        entry = self.entries[key]
        start, end = entry["data_offsets"]
        buffer = bytearray(end - start)
        with open(self.path, "rb") as handle:
            handle.seek(self.data_start + start)
            if handle.readinto(buffer) != len(buffer):
                raise OSError(f"{self.path}: truncated tensor {key}")
        if not buffer:
            return torch.empty(entry["shape"], dtype=DTYPES[entry["dtype"]])
        return torch.frombuffer(buffer, dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"])


class ShardWriter:
    """Declare every tensor up front (the header comes first), then write them in that order."""

    def __init__(
        self, path: Path, layout: dict[str, tuple[torch.dtype, list[int]]], metadata: dict[str, str]
    ) -> None:
        header: dict[str, Any] = {"__metadata__": metadata}
        offset = 0
        for key, (dtype, shape) in layout.items():
            size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
            header[key] = {
                "dtype": NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)
        self.layout = layout
        self.order = list(layout)
        self.handle = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.handle.write(struct.pack("<Q", len(encoded)) + encoded)
        self.nbytes = offset

    def write(self, key: str, tensor: torch.Tensor) -> None:
        expected = self.order.pop(0)
        dtype, shape = self.layout[key]
        if key != expected or tensor.dtype != dtype or list(tensor.shape) != list(shape):
            raise ValueError(
                f"tensor {key} ({tensor.dtype}, {list(tensor.shape)}) breaks the declared layout"
            )
        self.handle.write(memoryview(tensor.contiguous().view(torch.uint8).reshape(-1).numpy()))

    def close(self) -> None:
        if self.order:
            raise ValueError(f"tensors declared but not written: {self.order[:3]}")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
