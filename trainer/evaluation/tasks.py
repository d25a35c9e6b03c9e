"""Task sets: held-out prompts with what a good reply must hold, and a model's score on them.

A task file is JSONL, one row per prompt:

    {"id": "eval-00000/answer", "task": "answer",
     "messages": [{"role": "system", ...}, {"role": "user", ...}, ...],   # ends with a user turn
     "reference": "the reply a good agent gave",                          # optional
     "checks": [{"type": "contains_all", "values": ["CMD-915778"], "name": "order number"}]}

The recipe's `eval.tasks.scorers` adds checks per task name (e.g. chrF against the reference for
every `answer` row). A model's task score is the share of all checks its replies pass; it is
also given per task and per check name, with the share of replies that ended by themselves
(an end-of-generation token before `max_new_tokens`). A reply cut at `max_new_tokens` fails every
check of its row unless `cut_off_fails` is off: no agent sends half a reply, and a model that
never stops would otherwise pass on its first sentences (the default fine-tune's garbled invoice
answer, drifting into a tracking answer until the limit, passed all five of its checks).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trainer.conversations import fold_system
from trainer.errors import ConfigError
from trainer.evaluation import scorers

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class TaskRow:
    id: str
    task: str
    messages: tuple[Mapping[str, str], ...]
    checks: tuple[Mapping[str, Any], ...]
    reference: str | None = None


def _row(raw: Any, where: str, extra: Mapping[str, Sequence[Mapping[str, Any]]]) -> TaskRow:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a task row is a JSON object")
    messages = raw.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        raise ConfigError(f"{where}: `messages` must be a list of {{role, content}} with roles {ROLES}")
    if messages[-1]["role"] != "user":
        raise ConfigError(
            f"{where}: `messages` must end with a user turn (the reply is what the model writes)"
        )
    task = raw.get("task", "default")
    reference = raw.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise ConfigError(f"{where}: `reference` must be a string")
    checks = list(raw.get("checks", [])) + [dict(c) for c in extra.get(task, [])]
    if not checks:
        raise ConfigError(
            f"{where}: no checks for task {task!r}: give the row `checks`, or add scorers for it in eval.tasks.scorers"
        )
    for index, check in enumerate(checks):
        try:
            scorers.validate_check(check, reference)
        except scorers.CheckError as exc:
            raise ConfigError(f"{where}: checks[{index}]: {exc}") from exc
    return TaskRow(str(raw.get("id", where)), str(task), tuple(messages), tuple(checks), reference)


def load_rows(
    path: Path,
    limit: int | None = None,
    scorers_per_task: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    fold: bool = False,
) -> list[TaskRow]:
    """Every row checked (file and line in each error) before any model loads; the first `limit` kept.
    `fold`: each prompt's system message opens its first user message (`data.fold_system`)."""
    if not path.is_file():
        raise ConfigError(f"eval.tasks.path: no such file {path}")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: not valid JSON ({exc.msg})") from exc
            row = _row(raw, where, scorers_per_task or {})
            rows.append(replace(row, messages=tuple(fold_system(row.messages))) if fold else row)
    if not rows:
        raise ConfigError(f"eval.tasks.path: {path} holds no task rows")
    return rows[:limit] if limit else rows


def score(
    rows: Sequence[TaskRow], generations: Sequence[Mapping[str, Any]], cut_off_fails: bool = True
) -> dict[str, Any]:
    """The task score of one model's replies (one generation per row, in order); with `cut_off_fails`,
    a reply that ran into `max_new_tokens` (finish_reason `length`) fails every check of its row."""
    if len(rows) != len(generations):
        raise ValueError(f"{len(generations)} replies for {len(rows)} task rows")
    passed_by_task: dict[str, list[bool]] = defaultdict(list)
    passed_by_check: dict[str, list[bool]] = defaultdict(list)
    chrf: list[float] = []
    per_row = []
    for row, generation in zip(rows, generations, strict=True):
        verdicts = []
        cut_off = generation["finish_reason"] == "length"
        for check in row.checks:
            verdict = scorers.apply(generation["reply"], check, row.reference)
            passed = verdict.passed and not (cut_off and cut_off_fails)
            name = str(check.get("name", check["type"]))
            passed_by_task[row.task].append(passed)
            passed_by_check[name].append(passed)
            if check["type"] == "chrf":
                chrf.append(verdict.score)
            verdicts.append({"name": name, "passed": passed, "score": round(verdict.score, 4)})
        per_row.append({"id": row.id, "cut_off": cut_off, "checks": verdicts})
    everything = [p for values in passed_by_task.values() for p in values]
    return {
        "score": sum(everything) / len(everything),
        "checks": len(everything),
        "passed": sum(everything),
        "per_task": {task: sum(v) / len(v) for task, v in sorted(passed_by_task.items())},
        "per_check": {name: sum(v) / len(v) for name, v in sorted(passed_by_check.items())},
        "self_ended": sum(g["finish_reason"] == "stop" for g in generations) / len(generations),
        "cut_off_fails": cut_off_fails,
        "chrf": sum(chrf) / len(chrf) if chrf else None,
        "rows": per_row,
    }
