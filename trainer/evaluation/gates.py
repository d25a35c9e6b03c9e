"""Approve or reject each artifact on what deployment needs, then recommend one per serving target.

An artifact ships when, measured in its own runtime against merged BF16 on the same data, it keeps
the trained model's distributions (perplexity change, mean KL divergence, top-1 agreement), its
task (task score and self-ended share as fractions of merged's), its behaviour outside the domain
(perplexity change on generic text) and, when a recipe sets limits, fits the serving budget (peak
memory, generation speed). Each gate is a figure, a threshold from `eval.gates`, and a verdict; a
figure that cannot be measured (no task set, merged scored 0 on the task) is reported and not gated.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from trainer.config import GatesConfig

log = logging.getLogger(__name__)

Result = Mapping[str, Any]


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def _delta_pct(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else (value / reference - 1) * 100


def _get(result: Result, *path: str) -> Any:
    for key in path:
        if not isinstance(result, Mapping) or result.get(key) is None:
            return None
        result = result[key]
    return result


# (config key, what the figure is, how it is read from (result, merged), True when lower is better)
FIGURES: tuple[tuple[str, str, Callable[[Result, Result], float | None], bool], ...] = (
    ("max_ppl_delta_pct", "perplexity Δ%", lambda r, m: r.get("delta_pct"), True),
    ("max_mean_kld", "mean KLD", lambda r, m: _get(r, "fidelity", "mean_kld"), True),
    ("min_top1_agreement", "top-1 agreement", lambda r, m: _get(r, "fidelity", "top1_agreement"), False),
    (
        "min_task_share",
        "task score / merged's",
        lambda r, m: _ratio(_get(r, "task", "score"), _get(m, "task", "score")),
        False,
    ),
    (
        "min_self_ended_share",
        "self-ended / merged's",
        lambda r, m: _ratio(_get(r, "task", "self_ended"), _get(m, "task", "self_ended")),
        False,
    ),
    (
        "max_drift_delta_pct",
        "generic-text perplexity Δ%",
        lambda r, m: _delta_pct(_get(r, "drift", "perplexity"), _get(m, "drift", "perplexity")),
        True,
    ),
    ("max_peak_rss_mib", "peak RSS MiB", lambda r, m: _get(r, "serving", "peak_rss_mib"), True),
    (
        "min_generation_tokens_per_s",
        "generation tokens/s",
        lambda r, m: _get(r, "serving", "generation_tokens_per_s"),
        False,
    ),
)


@dataclass(frozen=True)
class Verdict:
    key: str  # the eval.gates key
    gate: str  # what the figure is
    figure: float | None
    threshold: float | None  # None: the gate is off
    passed: bool | None  # None: off, or the figure could not be measured

    def describe(self) -> str:
        bound = "max" if self.key.startswith("max_") else "min"
        figure = f"{self.figure:+.2f}" if self.key.endswith("_pct") else f"{self.figure:.4g}"
        return f"{self.gate} {figure} ({bound} {self.threshold:g})"


def judge(result: Result, merged: Result, gates: GatesConfig) -> list[Verdict]:
    """Every gate's verdict for one scored artifact."""
    verdicts = []
    for key, label, read, lower_is_better in FIGURES:
        figure = read(result, merged)
        threshold = getattr(gates, key)
        if figure is not None and math.isnan(figure):
            figure = None
        if threshold is None or figure is None:
            passed = None
        else:
            passed = figure <= threshold if lower_is_better else figure >= threshold
        verdicts.append(Verdict(key, label, figure, threshold, passed))
    return verdicts


def as_records(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    return [asdict(v) for v in verdicts]


def failures(verdicts: Sequence[Verdict]) -> list[str]:
    return [v.describe() for v in verdicts if v.passed is False]


# Where each format is served: GPTQ/AWQ on a GPU server (vLLM, transformers), GGUF on a CPU,
# a laptop or Ollama (llama.cpp).
TARGETS = {"GPU server (vLLM, transformers)": ("gptq", "awq"), "CPU / laptop / Ollama (llama.cpp)": ("gguf",)}


def recommend(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Per serving target, the best artifact that passed every gate: highest task score, then lowest
    mean KLD, then smallest file; or, when none passed, which gate stopped each candidate."""
    out = []
    for target, formats in TARGETS.items():
        candidates = [r for r in results if r.get("format") in formats]
        passed = [r for r in candidates if r.get("passed_gate")]
        if not passed:
            out.append(
                {
                    "target": target,
                    "artifact": None,
                    "reason": "no artifact passed every gate"
                    if candidates
                    else "no artifact of this format was built",
                    "stopped": {
                        r["name"]: r.get("error") or "; ".join(r.get("gate_failures", [])) for r in candidates
                    },
                }
            )
            continue

        def rank(r: Result) -> tuple[float, float, int]:
            task = _get(r, "task", "score")
            kld = _get(r, "fidelity", "mean_kld")
            return (
                -(task if task is not None else 0.0),
                kld if kld is not None else math.inf,
                r["size_bytes"],
            )

        best = min(passed, key=rank)
        task, kld = _get(best, "task", "score"), _get(best, "fidelity", "mean_kld")
        speed = _get(best, "serving", "generation_tokens_per_s")
        reason = ", ".join(
            part
            for part in (
                f"passed every gate ({len(passed)} of {len(candidates)} candidates did)",
                None if task is None else f"task score {task:.3f}",
                None if kld is None else f"mean KLD {kld:.4f}",
                f"{best['size_bytes'] / 2**20:.1f} MiB",
                None if speed is None else f"{speed:.0f} tokens/s here",
            )
            if part
        )
        out.append({"target": target, "artifact": best["name"], "reason": reason, "stopped": {}})
    return out


@dataclass(frozen=True)
class Judgement:
    """The verdicts on one evaluate stage's measurements under one set of thresholds."""

    results: list[dict[str, Any]]  # each measured result with its gates, gate_failures and passed_gate
    failed: list[str]  # the artifacts that failed a gate or could not be scored
    reasons: dict[str, str]  # why, per failed artifact
    recommendation: list[dict[str, Any]]


def judge_all(results: Sequence[Result], gates: GatesConfig) -> Judgement:
    """Every artifact judged against merged BF16; base and merged are measured, not gated.

    Judging reads the evaluate stage's measurements only, so new thresholds re-judge a run in
    milliseconds: the export stage and the exit code judge under the config of the command that
    runs them, and a change to `eval.gates` never scores a model again.
    """
    merged = next(r for r in results if r["name"] == "merged")
    judged = []
    for result in results:
        quantized = result["name"] not in ("base", "merged")
        verdicts = judge(result, merged, gates) if result.get("error") is None else []
        failing = failures(verdicts)
        judged.append(
            {
                **result,
                "gates": as_records(verdicts),
                "gate_failures": failing,
                "passed_gate": (result.get("error") is None and not failing) if quantized else None,
            }
        )
    reasons = {
        r["name"]: r.get("error") or "; ".join(r["gate_failures"])
        for r in judged
        if r["passed_gate"] is False
    }
    return Judgement(judged, list(reasons), reasons, recommend(judged))


def log_judgement(judgement: Judgement) -> None:
    for name, reason in judgement.reasons.items():
        log.warning("quality gate: %s failed: %s", name, reason)
    for pick in judgement.recommendation:
        line = (
            f"{pick['target']}: {pick['artifact']} ({pick['reason']})"
            if pick["artifact"]
            else f"{pick['target']}: none ({pick['reason']})"
        )
        log.info("recommended for %s", line)
