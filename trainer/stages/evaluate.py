"""The evaluate stage: one metric for every model of the run, each in the runtime that will serve it.

Base, merged and every quantized artifact are scored on the assistant tokens of the eval
split, each loaded in a fresh process by its own runtime, over the identical token set
(the counts must agree). An artifact whose perplexity grew past `eval.max_delta_pct`
against the merged BF16 model fails the quality gate.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from trainer.config import QuantFormat, Stage
from trainer.pipeline import StageContext
from trainer.runtimes import score_in_fresh_process

log = logging.getLogger(__name__)

RUNTIME = {QuantFormat.gptq: "gptqmodel", QuantFormat.awq: "gptqmodel", QuantFormat.gguf: "llama.cpp"}


def dir_size(path: Path) -> int:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)


def artifact_models(ctx: StageContext) -> list[dict[str, Any]]:
    """Every model to score: name, format, where its files are, which runtime loads it."""
    from trainer.stages.merge import base_checkpoint

    merged = ctx.stage_dir(Stage.merge) / "model"
    models = [
        {
            "name": "base",
            "format": "hf-bf16",
            "dir": base_checkpoint(ctx.cfg.model),
            "runtime": "transformers",
        },
        {"name": "merged", "format": "hf-bf16", "dir": merged, "runtime": "transformers"},
    ]
    for name in ctx.cfg.quantize.enabled:
        spec = ctx.cfg.quantize.artifacts[name]
        folder = ctx.stage_dir(Stage.quantize) / name
        info = json.loads((folder / "quantize_info.json").read_text())
        model_path = folder / info["model_file"] if info.get("model_file") else folder
        models.append(
            {"name": name, "format": spec.format.value, "dir": model_path, "runtime": RUNTIME[spec.format]}
        )
    return models


def gate(delta_pct: float | None, max_delta_pct: float) -> bool | None:
    return None if delta_pct is None else delta_pct <= max_delta_pct


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    eval_jsonl = ctx.stage_dir(Stage.data) / "eval.jsonl"
    tokenizer_dir = ctx.stage_dir(Stage.merge) / "model"
    results: list[dict[str, Any]] = []
    for model in artifact_models(ctx):
        log.info("scoring %s with %s", model["name"], model["runtime"])
        scored = score_in_fresh_process(
            model["runtime"],
            model["dir"],
            eval_jsonl,
            samples=cfg.eval.generate_samples,
            max_new_tokens=cfg.eval.max_new_tokens,
            tokenizer_dir=tokenizer_dir,
        )
        results.append(
            {**model, "dir": str(model["dir"]), **scored, "size_bytes": dir_size(Path(model["dir"]))}
        )
        log.info("%s: perplexity %.3f over %d tokens", model["name"], scored["perplexity"], scored["tokens"])
    counts = {r["name"]: r["tokens"] for r in results}
    if len(set(counts.values())) != 1:
        raise AssertionError(f"runtimes scored different token sets: {counts}")
    merged_ppl = next(r["perplexity"] for r in results if r["name"] == "merged")
    for result in results:
        quantized = result["name"] not in ("base", "merged")
        result["delta_pct"] = (
            (result["perplexity"] / merged_ppl - 1) * 100 if result["name"] != "base" else None
        )
        result["passed_gate"] = gate(result["delta_pct"], cfg.eval.max_delta_pct) if quantized else None
    failed = [r["name"] for r in results if r["passed_gate"] is False]
    payload = {
        "metric": "perplexity on the assistant tokens of the eval split",
        "tokens": next(iter(counts.values())),
        "max_delta_pct": cfg.eval.max_delta_pct,
        "gate": cfg.eval.gate.value,
        "failed": failed,
        "results": results,
    }
    (ctx.out_dir / "results.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    if failed:
        log.warning(
            "quality gate: %s grew past %.1f%% against merged BF16", ", ".join(failed), cfg.eval.max_delta_pct
        )
    return {
        "tokens": payload["tokens"],
        "failed_gate": len(failed),
        "merged_perplexity": round(merged_ppl, 3),
    }
