"""Domain (train split) against generic calibration, on a finished run's merged model.

For each calibration source and seed: draw the calibration set exactly as the data stage
does, quantize the run's merged BF16 model to each format, score every artifact in a fresh
process of its runtime on the run's eval split and on the recipe's task set (greedy replies,
scored by the recipe's checks), and report perplexity and task score against merged BF16.
GGUF Q4_K_M is also built once without an imatrix (source `none`: no calibration at all).
Usage (after `python -m trainer recipe=support-fr`, or on bench_e2e.py's run):

    python scripts/bench_calibration.py --run-dir runs/support-fr --seeds 0 1 2 --out docs/benchmarks/calibration.json
    python scripts/bench_calibration.py --run-dir runs/support-fr --seeds 0 1 2 --artifacts gptq-w2g128 \
        --out docs/benchmarks/calibration-gptq-w2g128.json   # any artifact the run's config names
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

import bench_util as bu
from rich.console import Console

from trainer.config import ArtifactConfig, CalibrationSource, QuantFormat, TrainerConfig, to_typed
from trainer.evaluation.tasks import load_rows
from trainer.evaluation.tasks import score as score_tasks
from trainer.runtimes import score_in_fresh_process
from trainer.stages import quantize as quantize_stage
from trainer.stages.data import draw_calibration, write_jsonl

ARTIFACTS = {
    "gptq-w4g128": ArtifactConfig(format=QuantFormat.gptq, group_size=128),
    "awq-w4g128": ArtifactConfig(format=QuantFormat.awq, group_size=128, sym=False),
    "gguf-q4_k_m": ArtifactConfig(format=QuantFormat.gguf, gguf_type="Q4_K_M", imatrix=True),
}
# The same GGUF type with no imatrix: llama.cpp's plain quantization, which needs no calibration.
UNCALIBRATED = {"gguf-q4_k_m": ArtifactConfig(format=QuantFormat.gguf, gguf_type="Q4_K_M", imatrix=False)}
SOURCES = ("train", "generic", "none")
RUNTIME = {QuantFormat.gptq: "gptqmodel", QuantFormat.awq: "gptqmodel", QuantFormat.gguf: "llama.cpp"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-calibration"))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/calibration.json"))
    parser.add_argument(
        "--artifacts",
        nargs="+",
        help=f"artifact names of the run's quantize.artifacts (e.g. gptq-w2g128); default: {', '.join(ARTIFACTS)}",
    )
    args = parser.parse_args()
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    saved = OmegaConf.load(args.run_dir / ".hydra" / "config.yaml")
    cfg = to_typed(OmegaConf.merge(OmegaConf.structured(TrainerConfig), saved))
    merged = args.run_dir / "merge" / "model"
    unknown = sorted(set(args.artifacts or []) - set(cfg.quantize.artifacts))
    if unknown:
        parser.error(
            f"--artifacts {unknown}: not in the run's quantize.artifacts ({', '.join(cfg.quantize.artifacts)})"
        )
    artifacts = (
        {name: cfg.quantize.artifacts[name] for name in args.artifacts} if args.artifacts else ARTIFACTS
    )
    uncalibrated = {k: v for k, v in UNCALIBRATED.items() if k in artifacts}
    eval_jsonl = args.run_dir / "data" / "eval.jsonl"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    train_rows = [
        json.loads(line) for line in (args.run_dir / "data" / "train.jsonl").read_text().splitlines()
    ]
    eval_rows = [json.loads(line) for line in eval_jsonl.read_text().splitlines()]
    train_texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in train_rows]
    eval_texts = {tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in eval_rows}
    tasks_cfg = cfg.eval.tasks
    if not tasks_cfg.path:
        parser.error(f"{args.run_dir}: the run's recipe sets no eval.tasks.path; the task score needs one")
    task_rows = load_rows(Path(tasks_cfg.path), tasks_cfg.limit, tasks_cfg.scorers, cfg.data.fold_system)
    prompts = [list(r.messages) for r in task_rows]

    def scored_with_tasks(runtime: str, target: Path) -> tuple[dict, dict]:
        scored = score_in_fresh_process(
            runtime,
            target,
            eval_jsonl,
            samples=0,
            max_new_tokens=tasks_cfg.max_new_tokens,
            tokenizer_dir=merged,
            prompts=prompts,
        )
        return scored, score_tasks(task_rows, scored["generations"], tasks_cfg.cut_off_fails)

    merged_score, merged_task = scored_with_tasks("transformers", merged)
    print(f"merged BF16: perplexity {merged_score['perplexity']:.3f}, task score {merged_task['score']:.3f}")
    rows = []

    def measure(source: str, seed: int | None, folder: Path, artifacts: dict, ids: list, digest: str) -> None:
        for name, spec in artifacts.items():
            info = quantize_stage.build(cfg, name, spec, merged, folder / name, ids, digest)
            target = folder / name / info["model_file"] if info.get("model_file") else folder / name
            scored, task = scored_with_tasks(RUNTIME[spec.format], target)
            row = {
                "source": source,
                "seed": seed,
                "artifact": name,
                "perplexity": scored["perplexity"],
                "delta_pct": (scored["perplexity"] / merged_score["perplexity"] - 1) * 100,
                "task_score": task["score"],
                "task_share": task["score"] / merged_task["score"] if merged_task["score"] else None,
                "self_ended": task["self_ended"],
                "per_check": task["per_check"],
                "quantize_seconds": info["seconds"],
                "calibration_sha256": digest,
            }
            rows.append(row)
            Console().print(row)

    for source in (CalibrationSource.train, CalibrationSource.generic):
        for seed in args.seeds:
            calib_cfg = replace(cfg.data.calibration, source=source, seed=seed)
            samples = draw_calibration(tokenizer, train_texts, eval_texts, calib_cfg)
            folder = fresh_folder(args.work / f"{source.value}-{seed}")
            digest = write_jsonl(folder / "calibration.jsonl", samples)
            measure(source.value, seed, folder, artifacts, [s["input_ids"] for s in samples], digest)
    if uncalibrated:
        measure("none", None, fresh_folder(args.work / "none"), uncalibrated, [], "")

    table, task_table = {}, {}
    for name in artifacts:
        for source in SOURCES:
            measured = [r for r in rows if r["artifact"] == name and r["source"] == source]
            if measured:
                table[f"{name}/{source}"] = statistics.median(r["delta_pct"] for r in measured)
                task_table[f"{name}/{source}"] = statistics.median(r["task_score"] for r in measured)
    payload = {
        "benchmark": "calibration source: train split vs generic text (and none), delta vs merged BF16",
        **bu.provenance("bench_calibration.py"),
        "run_dir": str(args.run_dir),
        "seeds": args.seeds,
        "calibration": {
            "samples": cfg.data.calibration.samples,
            "max_tokens": cfg.data.calibration.max_tokens,
        },
        "merged_perplexity": merged_score["perplexity"],
        "tasks": {"path": str(tasks_cfg.path), "rows": len(task_rows), "checks": merged_task["checks"]},
        "merged_task_score": merged_task["score"],
        "merged_self_ended": merged_task["self_ended"],
        "rows": rows,
        "median_delta_pct": table,
        "median_task_score": task_table,
    }
    bu.write_json(args.out, payload)
    print(
        f"merged BF16 perplexity {merged_score['perplexity']:.3f}, task score {merged_task['score']:.3f}; "
        f"medians over seeds {args.seeds} (perplexity Δ% / task score)"
    )
    print(f"{'artifact':<14}" + "".join(f"{source:>18}" for source in SOURCES))
    for name in artifacts:
        cells = [
            f"{table[k]:>+9.3f}% / {task_table[k]:.3f}"
            if (k := f"{name}/{source}") in table
            else f"{'-':>18}"
            for source in SOURCES
        ]
        print(f"{name:<14}" + "".join(cells))
    from bench_plot import plot_all

    plot_all(args.out.parent)


def fresh_folder(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


if __name__ == "__main__":
    main()
