"""Domain (train split) against generic calibration, on a finished run's merged model.

For each calibration source and seed: draw the calibration set exactly as the data stage
does, quantize the run's merged BF16 model to each format, score every artifact in a fresh
process on the run's eval split, and report perplexity and the delta against merged BF16.
Usage (after `python -m trainer recipe=support-fr`):

    python scripts/bench_calibration.py --run-dir runs/support-fr --seeds 0 1 --out docs/benchmarks/calibration.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from trainer.config import ArtifactConfig, CalibrationSource, QuantFormat, TrainerConfig, to_typed
from trainer.runtimes import score_in_fresh_process
from trainer.stages import quantize as quantize_stage
from trainer.stages.data import draw_calibration, write_jsonl

ARTIFACTS = {
    "gptq-w4g128": ArtifactConfig(format=QuantFormat.gptq, group_size=128),
    "awq-w4g128": ArtifactConfig(format=QuantFormat.awq, group_size=128, sym=False),
    "gguf-q4_k_m": ArtifactConfig(format=QuantFormat.gguf, gguf_type="Q4_K_M", imatrix=True),
}
RUNTIME = {QuantFormat.gptq: "gptqmodel", QuantFormat.awq: "gptqmodel", QuantFormat.gguf: "llama.cpp"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-calibration"))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/calibration.json"))
    args = parser.parse_args()
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    saved = OmegaConf.load(args.run_dir / ".hydra" / "config.yaml")
    cfg = to_typed(OmegaConf.merge(OmegaConf.structured(TrainerConfig), saved))
    merged = args.run_dir / "merge" / "model"
    eval_jsonl = args.run_dir / "data" / "eval.jsonl"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    train_rows = [
        json.loads(line) for line in (args.run_dir / "data" / "train.jsonl").read_text().splitlines()
    ]
    eval_rows = [json.loads(line) for line in eval_jsonl.read_text().splitlines()]
    train_texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in train_rows]
    eval_texts = {tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in eval_rows}
    merged_score = score_in_fresh_process("transformers", merged, eval_jsonl, samples=0)
    rows = []
    for source in (CalibrationSource.train, CalibrationSource.generic):
        for seed in args.seeds:
            calib_cfg = replace(cfg.data.calibration, source=source, seed=seed)
            samples = draw_calibration(tokenizer, train_texts, eval_texts, calib_cfg)
            folder = args.work / f"{source.value}-{seed}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            digest = write_jsonl(folder / "calibration.jsonl", samples)
            ids = [s["input_ids"] for s in samples]
            for name, spec in ARTIFACTS.items():
                info = quantize_stage.build(cfg, name, spec, merged, folder / name, ids, digest)
                target = folder / name / info["model_file"] if info.get("model_file") else folder / name
                scored = score_in_fresh_process(
                    RUNTIME[spec.format], target, eval_jsonl, samples=0, tokenizer_dir=merged
                )
                row = {
                    "source": source.value,
                    "seed": seed,
                    "artifact": name,
                    "perplexity": scored["perplexity"],
                    "delta_pct": (scored["perplexity"] / merged_score["perplexity"] - 1) * 100,
                    "quantize_seconds": info["seconds"],
                    "calibration_sha256": digest,
                }
                rows.append(row)
                Console().print(row)
    table = {}
    for name in ARTIFACTS:
        for source in ("train", "generic"):
            deltas = [r["delta_pct"] for r in rows if r["artifact"] == name and r["source"] == source]
            table[f"{name}/{source}"] = statistics.median(deltas)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"merged_perplexity": merged_score["perplexity"], "rows": rows, "median_delta_pct": table}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"merged BF16 perplexity {merged_score['perplexity']:.3f}")
    print(f"{'artifact':<14}{'train Δ%':>10}{'generic Δ%':>12}")
    for name in ARTIFACTS:
        print(f"{name:<14}{table[f'{name}/train']:>10.3f}{table[f'{name}/generic']:>12.3f}")


if __name__ == "__main__":
    main()
