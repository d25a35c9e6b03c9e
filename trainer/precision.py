"""Which floating-point type runs fast on this device: bfloat16 only where the hardware has it.

bfloat16 is the right compute type on GPUs that have it and on CPUs whose oneDNN has native
bf16 kernels (AVX512-BF16 or AMX). Elsewhere torch emulates it: on an AVX2-only AMD EPYC (Zen 3)
one QLoRA step of the 8M default model took 34 s in bf16 and 1.8 s in float32, and a bf16 matmul
ran 7x slower than float32. So `auto` asks the hardware, never the build machine's flags.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def bf16_is_native(device: str) -> bool:
    """A GPU with bf16, or a CPU whose oneDNN runs bf16 in hardware (what torch itself asks)."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def fast_float(device: str) -> Any:
    """The torch dtype to run a model in on `device`: bfloat16 where native, float32 on other CPUs,
    float16 on GPUs without bf16."""
    import torch

    if bf16_is_native(device):
        return torch.bfloat16
    return torch.float16 if device.startswith("cuda") else torch.float32


def dtype_name(dtype: Any) -> str:
    """A torch dtype as configs and reports spell it: `bfloat16`, not `torch.bfloat16`."""
    return str(dtype).removeprefix("torch.")
