"""The top-k KL divergence against the exact one, on a finished run's merged model and artifacts.

The evaluate stage measures KL(merged || artifact) from merged's top-k tokens per position plus one
"any other token" bin (trainer/evaluation/fidelity.py), so its memory does not grow with the
vocabulary. This script keeps both models' full distributions on the first eval conversations,
computes the exact figures beside the top-k ones for several k, and reports the error:

    python scripts/bench_fidelity.py --run-dir runs/support-fr --out docs/benchmarks/fidelity.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import bench_util as bu
import numpy as np

from trainer.evaluation.fidelity import TopK, coarse_kld, exact_kld, top_k
from trainer.perplexity import eval_tokens, score_transformers

KS = (8, 32, 128)


class FullRows:
    """Collects every scored position's full log-softmax row, laid out by sequence (float32)."""

    def __init__(self, scored_per_sequence: list[int]) -> None:
        self.rows: list[np.ndarray | None] = [None] * len(scored_per_sequence)

    def add(self, sequence: int, logprobs: np.ndarray) -> None:
        self.rows[sequence] = logprobs.astype(np.float32)

    def stacked(self) -> np.ndarray:
        return np.concatenate(self.rows)


def artifact_rows(run_dir: Path, name: str, tokens: Any) -> np.ndarray:
    from trainer.gguf import gguf_file, score_gguf
    from trainer.runtimes import load

    folder = run_dir / "quantize" / name
    rows = FullRows(tokens.scored_per_sequence())
    if any(folder.glob("*.gguf")):
        score_gguf(gguf_file(folder), tokens, fidelity=rows)  # type: ignore[arg-type]
    else:
        score_transformers(load("gptqmodel", folder), tokens, fidelity=rows)  # type: ignore[arg-type]
    return rows.stacked()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--conversations", type=int, default=60, help="first eval conversations kept in full")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/fidelity.json"))
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged_dir = args.run_dir / "merge" / "model"
    eval_jsonl = args.out.parent / ".bench-fidelity-eval.jsonl"
    lines = (args.run_dir / "data" / "eval.jsonl").read_text(encoding="utf-8").splitlines()
    eval_jsonl.write_text("\n".join(lines[: args.conversations]) + "\n", encoding="utf-8")
    tokens = eval_tokens(eval_jsonl, AutoTokenizer.from_pretrained(merged_dir))
    eval_jsonl.unlink()
    reference = FullRows(tokens.scored_per_sequence())
    score_transformers(AutoModelForCausalLM.from_pretrained(merged_dir), tokens, fidelity=reference)  # type: ignore[arg-type]
    ref = reference.stacked()
    ref_top = {k: TopK(*top_k(ref, k)) for k in KS}
    results = []
    for folder in sorted(
        p for p in (args.run_dir / "quantize").iterdir() if (p / "quantize_info.json").exists()
    ):
        rows = artifact_rows(args.run_dir, folder.name, tokens)
        exact = exact_kld(ref, rows)
        entry = {
            "artifact": folder.name,
            "positions": len(exact),
            "exact_mean_kld": float(exact.mean()),
            "exact_p99_kld": float(np.percentile(exact, 99)),
            "top1_agreement": float((rows.argmax(1) == ref.argmax(1)).mean()),
            "top_k": {},
        }
        for k, top in ref_top.items():
            approx = coarse_kld(top, rows)
            entry["top_k"][str(k)] = {
                "reference_mass": float(np.exp(top.logprobs.astype(np.float64)).sum(1).mean()),
                "mean_kld": float(approx.mean()),
                "p99_kld": float(np.percentile(approx, 99)),
                "mean_error_pct": float((approx.mean() / exact.mean() - 1) * 100),
            }
        results.append(entry)
        bu.log(json.dumps(entry))
    payload = {
        "benchmark": "top-k KL divergence (evaluate stage) against the exact one",
        **bu.provenance("bench_fidelity.py"),
        "run_dir": str(args.run_dir),
        "conversations": args.conversations,
        "results": results,
    }
    bu.write_json(args.out, payload)


if __name__ == "__main__":
    main()
