"""The data stage: validated train/eval splits and a calibration set drawn from train only.

Outputs `train.jsonl`, `eval.jsonl`, `calibration.jsonl` and `stats.json`. Calibration rows
carry the exact `input_ids` every quantizer must feed on, rendered with the same chat
template as training, so GPTQ, AWQ and the GGUF importance matrix all see the same tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from rich.progress import track

from trainer.config import CalibrationConfig, CalibrationSource, DataConfig, Policy
from trainer.conversations import Conversation, Problem, load_conversations
from trainer.errors import DataValidationError, TrainerError
from trainer.modeling import load_tokenizer
from trainer.pipeline import StageContext

log = logging.getLogger(__name__)


def render(tokenizer: Any, conversations: list[Conversation]) -> list[str]:
    return [tokenizer.apply_chat_template(c.messages, tokenize=False) for c in conversations]


def count_tokens(tokenizer: Any, texts: list[str], label: str) -> list[int]:
    """Token counts of rendered texts, exactly as `apply_chat_template(tokenize=True)` would give."""
    counts: list[int] = []
    batch = 256
    for start in track(range(0, len(texts), batch), description=f"tokenizing {label}", transient=True):
        encoded = tokenizer(texts[start : start + batch], add_special_tokens=False)["input_ids"]
        counts.extend(len(ids) for ids in encoded)
    return counts


def enforce(problems: list[Problem], cfg: DataConfig) -> Counter[str]:
    """Raise on the problems whose policy is `error` (listing them all); count the dropped ones."""
    fatal = [p for p in problems if cfg.on_problem.get(p.kind, Policy.error) is Policy.error]
    if fatal:
        kinds = Counter(p.kind for p in fatal)
        shown = "\n".join(f"  {p}" for p in fatal[: cfg.max_reported_problems])
        more = len(fatal) - cfg.max_reported_problems
        tail = f"\n  ... and {more} more" if more > 0 else ""
        counts = ", ".join(f"{k}={n}" for k, n in sorted(kinds.items()))
        fixes = ", ".join(f"data.on_problem.{k}=drop" for k in sorted(kinds))
        raise DataValidationError(
            f"{len(fatal)} invalid row(s) in the dataset ({counts}):\n{shown}{tail}\n"
            f"Fix these rows, or drop such rows and count them with {fixes}"
        )
    dropped = Counter(p.kind for p in problems)
    for kind, n in sorted(dropped.items()):
        log.warning("dropped %d row(s) with problem %s (data.on_problem.%s=drop)", n, kind, kind)
    return dropped


def split_key(conversation: Conversation, seed: int) -> str:
    """A seeded hash of the content: the split depends on what a row says, not where it sits."""
    blob = json.dumps(conversation.messages, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(f"{seed}\0{blob}".encode()).hexdigest()


def split(conversations: list[Conversation], cfg: DataConfig) -> tuple[list[int], list[int]]:
    n = len(conversations)
    n_eval = cfg.eval_size if cfg.eval_size is not None else max(1, round(cfg.eval_fraction * n))
    if n_eval >= n:
        raise DataValidationError(
            f"data.eval_size/eval_fraction: {n_eval} eval rows out of {n} leaves nothing to train on; "
            "lower it or give data.eval_path"
        )
    ranked = sorted(range(n), key=lambda i: split_key(conversations[i], cfg.split_seed))
    eval_ids = set(ranked[:n_eval])
    return [i for i in range(n) if i not in eval_ids], sorted(eval_ids)


def _generic_pool(tokenizer: Any, calib: CalibrationConfig) -> list[list[int]]:
    from trainer.generic_corpus import heldout_pydoc_texts

    pool = []
    for text in heldout_pydoc_texts():
        ids = tokenizer(text, add_special_tokens=True)["input_ids"][: calib.max_sample_tokens]
        pool.append(ids)
    return pool


def draw_calibration(
    tokenizer: Any, train_texts: list[str], eval_texts: set[str], calib: CalibrationConfig
) -> list[dict[str, Any]]:
    """Seeded, deduplicated samples, capped in count and total tokens, never an eval text."""
    rng = random.Random(calib.seed)
    n_generic = {
        CalibrationSource.train: 0,
        CalibrationSource.generic: calib.samples,
        CalibrationSource.mixed: round(calib.samples * calib.generic_fraction),
    }[calib.source]
    pools: list[tuple[str, list[list[int]], int]] = []
    if n_generic < calib.samples:
        unique = sorted({t for t in train_texts if t not in eval_texts})
        rng.shuffle(unique)
        encoded = tokenizer(unique, add_special_tokens=False)["input_ids"] if unique else []
        pools.append(("train", encoded, calib.samples - n_generic))
    if n_generic:
        generic = _generic_pool(tokenizer, calib)
        rng.shuffle(generic)
        pools.append(("generic", generic, n_generic))
    rows: list[dict[str, Any]] = []
    budget = calib.max_tokens
    seen: set[tuple[int, ...]] = set()
    for source, pool, wanted in pools:
        taken = 0
        for ids in pool:
            if taken == wanted or budget <= 0:
                break
            key = tuple(ids)
            if key in seen or len(ids) > budget:
                continue
            seen.add(key)
            text = tokenizer.decode(ids, skip_special_tokens=False) if source == "generic" else None
            rows.append(
                {"id": len(rows), "source": source, "tokens": len(ids), "text": text, "input_ids": ids}
            )
            budget -= len(ids)
            taken += 1
    if not rows:
        raise TrainerError(
            "data.calibration: no calibration sample fits; raise data.calibration.max_tokens "
            f"({calib.max_tokens}) or check that the {calib.source.value} source is not empty"
        )
    for row in rows:
        if row["text"] is None:
            row["text"] = tokenizer.decode(row["input_ids"], skip_special_tokens=False)
        if row["text"] in eval_texts:
            raise AssertionError("a calibration sample equals an eval conversation")
    return rows


def _length_stats(counts: list[int]) -> dict[str, float]:
    if not counts:
        return {"tokens": 0}
    return {
        "tokens": sum(counts),
        "min": min(counts),
        "mean": round(statistics.fmean(counts), 1),
        "max": max(counts),
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            line = json.dumps(row, ensure_ascii=False) + "\n"
            digest.update(line.encode("utf-8"))
            handle.write(line)
    return digest.hexdigest()


def _with_lengths(
    tokenizer: Any, conversations: list[Conversation], cfg: DataConfig, label: str
) -> tuple[list[Conversation], list[str], list[int], list[Problem]]:
    texts = render(tokenizer, conversations)
    counts = count_tokens(tokenizer, texts, label)
    keep, problems = [], []
    for index, (conversation, n) in enumerate(zip(conversations, counts, strict=True)):
        if n > cfg.max_length:
            problems.append(
                Problem("too_long", conversation.where, "", f"{n} tokens > data.max_length={cfg.max_length}")
            )
        else:
            keep.append(index)
    return (
        [conversations[i] for i in keep],
        [texts[i] for i in keep],
        [counts[i] for i in keep],
        problems,
    )


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg.data
    try:
        rows, problems = load_conversations(cfg.path, cfg.format, cfg.hub_split)
        eval_rows: list[Conversation] = []
        if cfg.eval_path:
            eval_rows, eval_problems = load_conversations(cfg.eval_path, cfg.format, cfg.hub_split)
            problems += eval_problems
    except (FileNotFoundError, ValueError) as exc:
        raise TrainerError(f"data.path: {exc}") from exc
    read = {"train": len(rows), "eval": len(eval_rows)}
    enforce([p for p in problems if p.kind != "too_long"], cfg)  # fail fast, before tokenizing

    tokenizer = load_tokenizer(ctx.cfg.model)
    rows, texts, counts, long_rows = _with_lengths(tokenizer, rows, cfg, "rows")
    if cfg.eval_path:
        eval_rows, eval_texts, eval_counts, long_eval = _with_lengths(tokenizer, eval_rows, cfg, "eval rows")
        long_rows += long_eval
    dropped = enforce(problems + long_rows, cfg)

    if not cfg.eval_path:
        train_ids, eval_ids = split(rows, cfg)
        eval_rows, eval_texts, eval_counts = ([seq[i] for i in eval_ids] for seq in (rows, texts, counts))
        rows, texts, counts = ([seq[i] for i in train_ids] for seq in (rows, texts, counts))
    eval_set = set(eval_texts)
    overlap = [i for i, text in enumerate(texts) if text in eval_set]
    if overlap:
        log.warning("dropped %d train conversation(s) identical to eval ones", len(overlap))
        keep = [i for i in range(len(rows)) if i not in set(overlap)]
        rows, texts, counts = ([seq[i] for i in keep] for seq in (rows, texts, counts))
    if not rows or not eval_rows:
        raise DataValidationError(
            f"data: {len(rows)} train and {len(eval_rows)} eval conversations remain; need both"
        )

    calibration = draw_calibration(tokenizer, texts, eval_set, cfg.calibration)
    out = ctx.out_dir
    write_jsonl(out / "train.jsonl", [{"messages": c.messages, "where": c.where} for c in rows])
    write_jsonl(out / "eval.jsonl", [{"messages": c.messages, "where": c.where} for c in eval_rows])
    calibration_sha = write_jsonl(out / "calibration.jsonl", calibration)
    calib_tokens = sum(r["tokens"] for r in calibration)
    stats = {
        "path": cfg.path,
        "eval_path": cfg.eval_path,
        "rows_read": read,
        "dropped": dict(sorted(dropped.items())),
        "train_eval_overlap_dropped": len(overlap),
        "train": {"conversations": len(rows), **_length_stats(counts)},
        "eval": {"conversations": len(eval_rows), **_length_stats(eval_counts)},
        "chat_template_sha256": hashlib.sha256(tokenizer.chat_template.encode()).hexdigest(),
        "calibration": {
            "source": cfg.calibration.source.value,
            "samples": len(calibration),
            "tokens": calib_tokens,
            "by_source": dict(Counter(r["source"] for r in calibration)),
            "sha256": calibration_sha,
            "path": "data/calibration.jsonl",
            "seed": cfg.calibration.seed,
        },
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info(
        "data: %d train / %d eval conversations, %d calibration samples (%d tokens, %s)",
        len(rows),
        len(eval_rows),
        len(calibration),
        calib_tokens,
        cfg.calibration.source.value,
    )
    return {
        "train": len(rows),
        "eval": len(eval_rows),
        "calibration": len(calibration),
        "calibration_tokens": calib_tokens,
        "dropped": sum(dropped.values()),
    }
