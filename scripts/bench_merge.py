"""Peak resident memory of the streaming merge against peft's `merge_and_unload`, side by side.

Builds (once, cached in --work) a random-init Llama of a few hundred million parameters saved
as several bf16 safetensors shards, and a LoRA adapter with random A and B on every linear
layer. Then runs each merge in its own fresh process, alternating, `--repeats` times, and
reports the median peak RSS of each, the ratio, and the wall time. Usage:

    python scripts/bench_merge.py --work /tmp/bench-merge --repeats 3 --out docs/benchmarks/merge.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench_util as bu

SHARD = "250MB"


def build(work: Path, hidden: int, layers: int, vocab: int) -> tuple[Path, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    base, adapter = work / "base", work / "adapter"
    if (base / "config.json").exists() and (adapter / "adapter_config.json").exists():
        return base, adapter
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 256,
        vocab_size=vocab,
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(base, max_shard_size=SHARD)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(adapter)
    return base, adapter


def ours(base: Path, adapter: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig

    from trainer.config import MergeBase
    from trainer.stages.merge import merge_into

    config = AutoConfig.from_pretrained(base)
    names = {
        f"model.layers.{i}.{part}"
        for i in range(config.num_hidden_layers)
        for part in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    }
    merge_into(base, adapter, out, MergeBase.original, names, torch.bfloat16, "nf4", True)


def peft_merge(base: Path, adapter: Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(out, max_shard_size=SHARD)


def high_water_mib() -> float:
    """This process's peak RSS (VmHWM): unlike ru_maxrss it is not inherited from the parent at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(which: str, base: Path, adapter: Path, out: Path) -> None:
    import peft  # noqa: F401 - both merges import the same libraries before the clock starts
    import torch  # noqa: F401
    import transformers  # noqa: F401

    idle = high_water_mib()
    started = time.perf_counter()
    {"ours": ours, "peft": peft_merge}[which](base, adapter, out)
    seconds = time.perf_counter() - started
    print(json.dumps({"peak_rss_mib": high_water_mib(), "after_imports_mib": idle, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-merge"))
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/merge.json"))
    parser.add_argument("--child", choices=["ours", "peft"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    base, adapter = args.work / "base", args.work / "adapter"
    if args.child:
        child(args.child, base, adapter, args.work / f"out-{args.child}")
        return
    base, adapter = build(args.work, args.hidden, args.layers, args.vocab)
    quiet = bu.wait_quiet()
    shards = sorted(p.name for p in base.glob("*.safetensors"))
    params = json.loads((base / "model.safetensors.index.json").read_text())["metadata"]["total_size"] // 2
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "peft": []}
    for repeat in range(args.repeats):
        for which in ("ours", "peft") if repeat % 2 == 0 else ("peft", "ours"):
            result = subprocess.run(
                [sys.executable, __file__, "--work", str(args.work), "--child", which],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[which].append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"run {repeat + 1} {which:>4}: {runs[which][-1]}", flush=True)
    median = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    ratio = median["ours"]["peak_rss_mib"] / median["peft"]["peak_rss_mib"]
    above = (median["ours"]["peak_rss_mib"] - median["ours"]["after_imports_mib"]) / (
        median["peft"]["peak_rss_mib"] - median["peft"]["after_imports_mib"]
    )
    report = {
        "benchmark": "merge peak RSS, streaming merge vs peft merge_and_unload",
        **bu.provenance("bench_merge.py"),
        "waited_for_quiet": quiet,
        "model": {"parameters": params, "shards": len(shards), "shard_size": SHARD, "dtype": "bfloat16"},
        "repeats": args.repeats,
        "runs": runs,
        "median": median,
        "peak_ratio": ratio,
        "peak_above_imports_ratio": above,
    }
    bu.write_json(args.out, report)
    print(f"\n{'':<6}{'peak RSS MiB':>14}{'after imports':>15}{'seconds':>10}")
    for which in ("ours", "peft"):
        m = median[which]
        print(f"{which:<6}{m['peak_rss_mib']:>14.0f}{m['after_imports_mib']:>15.0f}{m['seconds']:>10.1f}")
    print(
        f"peak ratio ours/peft: {ratio:.2f} (above imports: {above:.2f}); {params / 1e6:.0f}M params, {len(shards)} shards"
    )
    from bench_plot import plot_all

    plot_all(args.out.parent)


if __name__ == "__main__":
    main()
