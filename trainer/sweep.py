"""The summary of a Hydra multirun: one row per job, ranked, at the sweep directory's root.

Every job writes its own row (`sweep_job.json` in its directory) when it starts and when it
ends, and then rewrites `sweep_summary.{md,csv,json}` from all rows under a file lock. So the
summary exists and is current whatever the launcher (basic, Ray, SLURM: the callback runs
where the job runs, on the shared filesystem), and even when jobs fail or the sweep itself
dies: a job that never reported an end stays `running`.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

JOB_FILE = "sweep_job.json"
SUMMARY = "sweep_summary"


# Figures `eval.key_metric` can rank by (`MODEL:FIGURE`), read from a report's artifact, and
# whether higher is better.
FIGURES: dict[str, tuple[tuple[str, ...], bool]] = {
    "perplexity": (("perplexity",), False),
    "delta_pct": (("delta_pct",), False),
    "mean_kld": (("fidelity", "mean_kld"), False),
    "top1_agreement": (("fidelity", "top1_agreement"), True),
    "task_score": (("task", "score"), True),
    "self_ended": (("task", "self_ended"), True),
    "drift_perplexity": (("drift", "perplexity"), False),
}


def split_metric(name: str) -> tuple[str, str]:
    """`MODEL[:FIGURE]` as (model, figure); the figure defaults to perplexity."""
    model, _, figure = name.partition(":")
    return model, figure or "perplexity"


def higher_is_better(name: str) -> bool:
    return FIGURES.get(split_metric(name)[1], ((), False))[1]


def _figure(artifact: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = artifact
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def key_metric(report: dict[str, Any], name: str = "best_quantized") -> float | None:
    """The figure `eval.key_metric` names; None when it was not measured.

    `MODEL[:FIGURE]`: MODEL is `best_quantized` (the best quantized artifact on that figure),
    `merged`, `base` or an artifact's name; FIGURE one of FIGURES (default perplexity). Lower is
    better except for top-1 agreement, task score and self-ended share.
    """
    model, figure = split_metric(name)
    path, higher = FIGURES[figure]
    artifacts = report.get("artifacts", [])
    if model == "best_quantized":
        values = [_figure(a, path) for a in artifacts if a.get("name") not in ("base", "merged")]
    else:
        values = [_figure(a, path) for a in artifacts if a.get("name") == model]
    numbers = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not numbers:
        return None
    return max(numbers) if higher else min(numbers)


def read_report(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "report.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


@contextmanager
def _locked(sweep_dir: Path):
    with open(sweep_dir / ".sweep_summary.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def job_row(config: DictConfig, status: str, error: str | None = None, seconds: float | None = None) -> dict:
    job_dir = Path(config.hydra.runtime.output_dir)
    run_dir = Path(OmegaConf.select(config, "run_dir") or job_dir)
    report = read_report(run_dir) if status != "running" else {}
    metric_name = OmegaConf.select(config, "eval.key_metric") or "best_quantized"
    artifacts = {
        a["name"]: {
            "perplexity": a.get("perplexity"),
            "delta_pct": a.get("delta_pct"),
            "passed_gate": a.get("passed_gate"),
            "task_score": _figure(a, ("task", "score")),
            "mean_kld": _figure(a, ("fidelity", "mean_kld")),
        }
        for a in report.get("artifacts", [])
    }
    return {
        "job": int(config.hydra.job.num),
        "overrides": list(config.hydra.overrides.task),
        "status": status,
        "error": error,
        "seconds": None if seconds is None else round(seconds, 1),
        "run_dir": str(run_dir),
        "metric": metric_name,
        "value": key_metric(report, metric_name),
        "artifacts": artifacts,
    }


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job's row, best first: finished jobs by their metric, then the rest by job number."""
    rows = []
    for path in sorted(sweep_dir.glob(f"*/{JOB_FILE}")):
        try:
            rows.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            log.warning("unreadable sweep row %s", path)
    sign = -1.0 if rows and higher_is_better(rows[0]["metric"]) else 1.0
    rows.sort(
        key=lambda r: (r["value"] is None, sign * r["value"] if r["value"] is not None else 0.0, r["job"])
    )
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank if row["value"] is not None else None
    return rows


def _artifact_names(rows: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for row in rows:
        names += [n for n in row["artifacts"] if n not in names]
    return names


def _number(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def common_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """Overrides every job shares; the table shows each job's others (what the sweep varies)."""
    if len(rows) < 2:
        return []
    shared = set.intersection(*(set(r["overrides"]) for r in rows))
    return [o for o in rows[0]["overrides"] if o in shared]


def flat_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The table every format shares: one column per key figure and per artifact's perplexity."""
    names = _artifact_names(rows)
    shared = set(common_overrides(rows))
    metric = rows[0]["metric"] if rows else "best_quantized"
    columns = ["rank", "job", "overrides", "status", metric, "seconds"]
    columns += [f"{n} ppl" for n in names] + [f"{n} Δ%" for n in names if n not in ("base", "merged")]
    columns += [f"{n} task" for n in names]
    table = []
    for row in rows:
        cells = [
            _number(row["rank"], "d"),
            str(row["job"]),
            " ".join(o for o in row["overrides"] if o not in shared),
            row["status"] + (f" ({row['error']})" if row.get("error") else ""),
            _number(row["value"], ".3f" if split_metric(metric)[1] != "mean_kld" else ".4g"),
            _number(row["seconds"], ".0f"),
        ]
        cells += [_number(row["artifacts"].get(n, {}).get("perplexity"), ".3f") for n in names]
        cells += [
            _number(row["artifacts"].get(n, {}).get("delta_pct"), "+.2f")
            for n in names
            if n not in ("base", "merged")
        ]
        cells += [_number(row["artifacts"].get(n, {}).get("task_score"), ".3f") for n in names]
        table.append(cells)
    return columns, table


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    from trainer.stages.export import markdown_table

    with _locked(sweep_dir):
        rows = collect(sweep_dir)
        columns, table = flat_rows(rows)
        done = sum(r["status"] == "completed" for r in rows)
        failed = sum(r["status"] == "failed" for r in rows)
        metric = rows[0]["metric"] if rows else "best_quantized"
        cells = [tuple(c.replace("|", "\\|") for c in row) for row in table]
        numeric = frozenset(
            c for c in columns if c.endswith(("ppl", "Δ%", "task")) or c in ("rank", "job", "seconds", metric)
        )
        markdown = (
            f"# Sweep {sweep_dir}\n\n{len(rows)} jobs: {done} completed, {failed} failed, "
            f"{len(rows) - done - failed} running or unfinished. Ranked by `{metric}` "
            f"(eval.key_metric; {'higher' if higher_is_better(metric) else 'lower'} is better)."
        )
        shared = common_overrides(rows)
        if shared:
            markdown += " Every job also has: " + " ".join(f"`{o}`" for o in shared) + "."
        markdown += "\n\n" + markdown_table(columns, cells, numeric) + "\n"
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows(table)
        _write_atomic(sweep_dir / f"{SUMMARY}.md", markdown)
        _write_atomic(sweep_dir / f"{SUMMARY}.csv", buffer.getvalue())
        _write_atomic(
            sweep_dir / f"{SUMMARY}.json",
            json.dumps({"metric": metric, "common_overrides": shared, "jobs": rows}, indent=2) + "\n",
        )
    return rows


def _in_sweep() -> bool:
    """A job of a multirun, on its main rank (a distributed job's other ranks do not report)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from trainer import distributed

    return HydraConfig.get().mode is RunMode.MULTIRUN and distributed.is_main()


class SweepSummary(Callback):
    """Hydra callback keeping `sweep_summary.*` current as the jobs of a multirun start and end."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    @staticmethod
    def _record(config: DictConfig, row: dict[str, Any]) -> None:
        _write_atomic(Path(config.hydra.runtime.output_dir) / JOB_FILE, json.dumps(row, indent=2) + "\n")
        write_summary(Path(config.hydra.sweep.dir).resolve())

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _in_sweep():
            return
        self._started[config.hydra.runtime.output_dir] = time.time()
        self._record(config, job_row(config, "running"))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _in_sweep():
            return
        started = self._started.pop(config.hydra.runtime.output_dir, None)
        seconds = None if started is None else time.time() - started
        if job_return.status is JobStatus.COMPLETED:
            row = job_row(config, "completed", seconds=seconds)
        else:
            error = job_return._return_value
            row = job_row(
                config, "failed", error=str(error).splitlines()[0] if error else None, seconds=seconds
            )
        self._record(config, row)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        if sweep_dir.exists():
            rows = write_summary(sweep_dir)
            log.info("sweep summary (%d jobs): %s", len(rows), sweep_dir / f"{SUMMARY}.md")
