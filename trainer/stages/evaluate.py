"""The evaluate stage: every model of the run judged in the runtime that will serve it.

Base, merged and every quantized artifact are scored on the assistant tokens of the eval
split, each loaded in a fresh process by its own runtime, over the identical token set
(the counts must agree): perplexity, KL divergence and top-1 agreement against merged BF16
(merged is scored first and leaves its top-k as the reference), the task score, perplexity on
generic text, and serving figures. The export stage judges these figures against `eval.gates`
(trainer/evaluation/gates.py): an artifact ships when it passes every gate, the best one per
serving target is recommended, and a new threshold re-judges without scoring again. A model whose
runtime crashes or fails is recorded with the reason (and fails the gate); the others are still
scored.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from trainer.config import QuantFormat, Stage
from trainer.evaluation.drift import drift_texts
from trainer.evaluation.tasks import TaskRow, load_rows
from trainer.evaluation.tasks import score as score_tasks
from trainer.pipeline import StageContext
from trainer.progress import stage_bar
from trainer.runtimes import Extras, ScoringFailed, score_in_fresh_process

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


# The figures of a model whose scoring failed.
UNSCORED = {
    "nll": None,
    "perplexity": None,
    "tokens": None,
    "replies": [],
    "seconds": None,
    "task": None,
    "fidelity": None,
    "drift": None,
    "serving": None,
}


def write_replies(
    path: Path, rows: list[TaskRow], generations: list[dict[str, Any]], task: dict[str, Any]
) -> None:
    """Every reply of one model with its checks' verdicts, for reading what the score stands for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row, generation, verdicts in zip(rows, generations, task["rows"], strict=True):
            line = {"id": row.id, "task": row.task, "prompt": row.messages[-1]["content"], **generation}
            handle.write(json.dumps({**line, "checks": verdicts["checks"]}, ensure_ascii=False) + "\n")


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    eval_jsonl = ctx.stage_dir(Stage.data) / "eval.jsonl"
    tokenizer_dir = ctx.stage_dir(Stage.merge) / "model"
    tasks_cfg = cfg.eval.tasks
    rows = (
        load_rows(Path(tasks_cfg.path), tasks_cfg.limit, tasks_cfg.scorers, cfg.data.fold_system)
        if tasks_cfg.path
        else []
    )
    texts = drift_texts(cfg.eval.drift.path) if cfg.eval.drift.tokens > 0 else []
    models = artifact_models(ctx)
    # Merged first: its top-k distributions are the reference every other model is measured against.
    scoring_order = sorted(models, key=lambda m: m["name"] != "merged")
    results: dict[str, dict[str, Any]] = {}
    # In the stage's partial folder, so a killed run leaves nothing behind outside it.
    reference = ctx.out_dir / ".merged-topk.npz"
    with stage_bar(ctx.console, "evaluate", len(models), "models") as bar:
        for model in scoring_order:
            bar.note(f"{model['name']} ({model['runtime']})")
            results[model["name"]] = score_model(
                ctx, model, rows, eval_jsonl, tokenizer_dir, texts, reference
            )
            bar.advance()
    reference.unlink(missing_ok=True)
    ordered = [results[m["name"]] for m in models]
    return finish(ctx, ordered, len(rows))


def score_model(
    ctx: StageContext,
    model: dict[str, Any],
    rows: list[TaskRow],
    eval_jsonl: Path,
    tokenizer_dir: Path,
    texts: list[str],
    reference: Path,
) -> dict[str, Any]:
    """One model scored in a fresh process of its runtime, its replies written and task-scored."""
    cfg = ctx.cfg
    tasks_cfg = cfg.eval.tasks
    is_merged = model["name"] == "merged"
    log.info("scoring %s with %s", model["name"], model["runtime"])
    record = {**model, "dir": str(model["dir"]), "size_bytes": dir_size(Path(model["dir"]))}
    extras = Extras(
        reference=None if is_merged or not reference.exists() else str(reference),
        write_reference=str(reference) if is_merged else None,
        drift_texts=texts,
        drift_tokens=cfg.eval.drift.tokens,
        context_length=cfg.data.max_length,
    )
    started = time.perf_counter()
    try:
        scored = score_in_fresh_process(
            model["runtime"],
            model["dir"],
            eval_jsonl,
            samples=cfg.eval.generate_samples,
            max_new_tokens=tasks_cfg.max_new_tokens if rows else cfg.eval.max_new_tokens,
            tokenizer_dir=tokenizer_dir,
            prompts=[list(r.messages) for r in rows] if rows else None,
            extras=extras,
        )
    except ScoringFailed as exc:
        log.error("%s", exc)
        ctx.console.print(f"[red]{model['name']}: {exc.reason}[/red] (recorded as failed; scoring the rest)")
        return {**record, **UNSCORED, "error": exc.reason, "error_output": exc.tail}
    scored["wall_seconds"] = round(time.perf_counter() - started, 2)
    generations = scored.pop("generations")
    if rows:
        task = score_tasks(rows, generations, tasks_cfg.cut_off_fails)
        write_replies(ctx.out_dir / "replies" / f"{model['name']}.jsonl", rows, generations, task)
        scored["task"] = {k: v for k, v in task.items() if k != "rows"}
        log.info(
            "%s: task score %.3f (%d/%d checks), self-ended %.0f%%",
            model["name"],
            task["score"],
            task["passed"],
            task["checks"],
            100 * task["self_ended"],
        )
    log.info("%s: perplexity %.3f over %d tokens", model["name"], scored["perplexity"], scored["tokens"])
    return {**record, **scored, "error": None}


def seconds_by_part(results: list[dict[str, Any]]) -> dict[str, float]:
    """Where the stage's time went, summed over the scored models: each gate's measurement, the
    models' loads, and the rest of each child's wall time (process start, imports, tokenizing)."""
    totals: dict[str, float] = {}
    for result in results:
        parts = result.get("seconds_by_part") or {}
        for part, value in parts.items():
            totals[part] = totals.get(part, 0.0) + value
        if result.get("wall_seconds") is not None:
            rest = result["wall_seconds"] - sum(parts.values())
            totals["process start"] = totals.get("process start", 0.0) + rest
    return {part: round(value, 1) for part, value in totals.items()}


def finish(ctx: StageContext, results: list[dict[str, Any]], task_rows: int) -> dict[str, Any]:
    """Deltas against merged; results.json (measurements only: the export stage judges them against
    `eval.gates`, so a new threshold never scores a model again) and the summary."""
    counts = {r["name"]: r["tokens"] for r in results if r["error"] is None}
    if len(set(counts.values())) > 1:
        raise AssertionError(f"runtimes scored different token sets: {counts}")
    merged = next(r for r in results if r["name"] == "merged")
    for result in results:
        quantized = result["name"] not in ("base", "merged")
        if result["error"] is None and merged["error"] is None and result["name"] != "base":
            result["delta_pct"] = (result["perplexity"] / merged["perplexity"] - 1) * 100
        else:
            result["delta_pct"] = None
        if quantized and result["error"] is None and merged["error"] is not None:
            result["error"] = "no reference: merged BF16 could not be scored"
    merged_ppl = merged["perplexity"]
    seconds = seconds_by_part(results)
    payload = {
        "metric": "perplexity on the assistant tokens of the eval split",
        "tokens": next(iter(counts.values()), None),
        "task_rows": task_rows,
        "seconds_by_part": seconds,
        "results": results,
    }
    (ctx.out_dir / "results.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    log.info("evaluate seconds by part: %s", ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return {
        "tokens": payload["tokens"],
        "failed_to_score": sum(r["error"] is not None for r in results),
        "merged_perplexity": None if merged_ppl is None else round(merged_ppl, 3),
    }
