"""One QLoRA training step of the embedded model in bfloat16 against float32 compute, on this CPU.

`train.qlora.compute_dtype=auto` computes in bfloat16 only where the device runs it natively
(`trainer/precision.py`); this measures why. Each side runs in a fresh process (alternating),
loads the tiny base in NF4 with LoRA on every linear layer as the train stage does, and times
forward + backward on a fixed batch (8 x 256 tokens) after one warm-up step.

    python scripts/bench_precision.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_util

OUT = Path("docs/benchmarks/precision.json")
STEPS = 2


def child(dtype_name: str, out: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from trainer.config import ASSETS_DIR

    dtype = getattr(torch, dtype_name)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    model = AutoModelForCausalLM.from_pretrained(
        ASSETS_DIR / "tiny-base", quantization_config=quantization, device_map="cpu", dtype=dtype
    )
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    batch = torch.randint(10, 4000, (8, 256), generator=torch.Generator().manual_seed(0))
    seconds = []
    for _ in range(STEPS + 1):
        started = time.perf_counter()
        model(input_ids=batch, labels=batch).loss.backward()
        seconds.append(time.perf_counter() - started)
    out.write_text(
        json.dumps(
            {
                "step_s": bench_util.median(seconds[1:]),
                "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    work = Path("/tmp/bench_precision")
    runs: dict[str, list[dict]] = {"bfloat16": [], "float32": []}
    for repeat in range(args.repeats):
        for name in list(runs) if repeat % 2 == 0 else list(reversed(runs)):
            out = work / f"{name}-{repeat}.json"
            out.unlink(missing_ok=True)
            argv = [sys.executable, __file__, "--child", name, str(out)]
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
            result, info = bench_util.measured(argv, work / f"{name}-{repeat}.log", env=env)
            runs[name].append({**json.loads(out.read_text()), "wall_s": result.wall_s, **info})
            bench_util.log(f"{name} #{repeat}: {runs[name][-1]['step_s']:.2f} s per step")
    medians = {name: bench_util.median([r["step_s"] for r in rows]) for name, rows in runs.items()}
    payload = {
        **bench_util.provenance("bench_precision.py"),
        "batch": [8, 256],
        "native_bf16": runs["float32"][0]["native_bf16"],
        "cpu_capability": runs["float32"][0]["cpu_capability"],
        "median_step_s": medians,
        "bf16_over_fp32_step_time": medians["bfloat16"] / medians["float32"],
        "contended_runs": sum(r["contended"] for rows in runs.values() for r in rows),
        "runs": runs,
    }
    bench_util.write_json(args.out, payload)
    print(
        f"bf16 / fp32 step time: {payload['bf16_over_fp32_step_time']:.2f} (native bf16: {payload['native_bf16']})"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
