"""The export stage: deployable packages, the report and the manifest.

`export/<artifact>/` holds the weights with tokenizer, chat template and generation config,
and a model card with the measured table. `report.json` (the contract in
docs/ARCHITECTURE.md), `report.md`, `report.png` and `manifest.json` are written inside the
stage folder and published to the run root once the stage is done, so a report at the root
always describes a finished export.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Any

from trainer.config import Stage
from trainer.evaluation import gates
from trainer.model_card import model_card
from trainer.pipeline import StageContext

PUBLISHED = ("report.json", "report.md", "report.png", "manifest.json")
LIBRARIES = (
    "trainer",
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "bitsandbytes",
    "gptqmodel",
    "llama_cpp_python",
    "hydra-core",
)
SECRET_KEY = re.compile(r"token|secret|password|api[_-]?key|credential", re.IGNORECASE)
SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9]{20,})\b")


def scrub(value: Any) -> Any:
    """The config as plain data, with anything that looks like a secret replaced."""
    if dataclasses.is_dataclass(value):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: "<redacted>" if SECRET_KEY.search(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, str):
        return SECRET_VALUE.sub("<redacted>", value)
    return value


def sha256(path: Path) -> str:
    """Hashed once per file content on disk: exports are hard links of the stages' files."""
    stat = path.stat()
    return _sha256_of(stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, str(path))


@functools.cache
def _sha256_of(device: int, inode: int, size: int, mtime_ns: int, path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def package(source: Path, target: Path) -> None:
    """The artifact's files (weights, tokenizer, chat template, generation config), readable by all."""
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for file in files:
        relative = file.name if source.is_file() else file.relative_to(source)
        if str(relative).startswith(".") or relative.name in ("quant_log.csv",):
            continue
        link_or_copy(file, target / relative)
        os.chmod(target / relative, 0o644)


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


COLUMNS = (
    "artifact",
    "format",
    "runtime",
    "size MB",
    "perplexity",
    "Δ vs merged",
    "task score",
    "self-ended",
    "gate",
)
NUMERIC = frozenset({"size MB", "perplexity", "Δ vs merged", "task score", "self-ended"})


def table_rows(artifacts: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The measured table's cells, shared by report.md, the model cards and the console."""
    rows = []
    for a in artifacts:
        delta = "" if a["delta_pct"] is None else f"{a['delta_pct']:+.2f}%"
        passed = {True: "pass", False: "fail", None: ""}[a["passed_gate"]]
        size = f"{a['size_bytes'] / 1e6:.1f}"
        perplexity = "not scored" if a["perplexity"] is None else f"{a['perplexity']:.3f}"
        task = a.get("task") or {}
        score = f"{task['score']:.3f}" if task else ""
        ended = f"{100 * task['self_ended']:.0f}%" if task else ""
        # The compute type beside the runtime (bf16 where native, float32 elsewhere; GPTQModel bf16
        # everywhere): speed and training differ by it between machines, so a reader comparing runs sees it.
        runtime = f"{a['runtime']} ({a['compute_dtype']})" if a.get("compute_dtype") else a["runtime"]
        rows.append((a["name"], a["format"], runtime, size, perplexity, delta, score, ended, passed))
    return rows


def markdown_table(
    columns: list[str], rows: list[tuple[str, ...]], numeric: frozenset[str] = frozenset()
) -> str:
    aligns = ["---:" if column in numeric else "---" for column in columns]
    lines = [f"| {' | '.join(columns)} |", f"|{'|'.join(aligns)}|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def table_markdown(artifacts: list[dict[str, Any]]) -> str:
    return markdown_table(list(COLUMNS), table_rows(artifacts), frozenset(NUMERIC))


def report_table(run_dir: Path) -> Any:
    """The published report as a rich table for the end of the run."""
    from rich.table import Table

    table = Table(title=f"report: {run_dir / 'report.json'}")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in NUMERIC else "left")
    for row in table_rows(json.loads((run_dir / "report.json").read_text())["artifacts"]):
        table.add_row(*row[:-1], {"pass": "[green]pass[/]", "fail": "[red]fail[/]", "": ""}[row[-1]])
    return table


def tasks_markdown(artifacts: list[dict[str, Any]]) -> str:
    """Task score per task and per check, one column per model, then the first replies side by side."""
    scored = [a for a in artifacts if a.get("task")]
    if not scored:
        return ""
    names = [a["name"] for a in scored]
    rows = []
    for group, label in (("per_task", "task"), ("per_check", "check")):
        keys = sorted({k for a in scored for k in a["task"][group]})
        rows += [(f"{label}: {k}", *(f"{a['task'][group].get(k, 0):.2f}" for a in scored)) for k in keys]
    rows.append(
        (
            "chrF vs reference",
            *(f"{a['task']['chrf']:.3f}" if a["task"]["chrf"] is not None else "" for a in scored),
        )
    )
    out = "## Task checks (share passed)\n\n"
    if any(a["task"].get("cut_off_fails") for a in scored):
        out += "A reply cut at the token limit fails every check of its row (`eval.tasks.cut_off_fails`).\n\n"
    out += markdown_table(["", *names], rows, frozenset(names)) + "\n\n"
    shown = min(len(a["replies"]) for a in scored)
    if shown:
        prompts = [scored[0]["replies"][index]["prompt"] for index in range(shown)]
        replies = {
            a["name"]: [(r["reply"], r.get("finish_reason", ""), _speed(a)) for r in a["replies"][:shown]]
            for a in scored
        }
        out += side_by_side_markdown("Replies side by side", prompts, replies)
    return out


def side_by_side_markdown(
    title: str, prompts: list[str], replies: dict[str, list[tuple[str, str, str]]]
) -> str:
    """Per prompt, one row per model: its reply, how it ended and its tokens/s (report.md, compare.md)."""
    out = f"## {title} (greedy, each model in its own runtime)\n\n"
    for index, prompt in enumerate(prompts):
        out += f"**Prompt {index + 1}:** {_cell(prompt)}\n\n"
        lines = [(name, _cell(r[index][0]), r[index][1], r[index][2]) for name, r in replies.items()]
        out += markdown_table(["model", "reply", "ended", "tokens/s"], lines, frozenset({"tokens/s"}))
        out += "\n\n"
    return out


def _speed(artifact: dict[str, Any]) -> str:
    """The model's generation speed at batch 1 in its runtime on this machine."""
    speed = (artifact.get("serving") or {}).get("generation_tokens_per_s")
    return "" if speed is None else f"{speed:.0f}"


def _cell(text: str) -> str:
    """Text fit for one markdown table cell."""
    return " ".join(text.replace("|", "\\|").split()) or "(empty)"


def gates_markdown(report: dict[str, Any]) -> str:
    """Every gate's figure, threshold and verdict per model, then the recommendation per serving target."""
    artifacts = [a for a in report["artifacts"] if a.get("gates")]
    if not artifacts:
        return ""
    names = [a["name"] for a in artifacts]
    rows = []
    for index, first in enumerate(artifacts[0]["gates"]):
        threshold = first["threshold"]
        bound = (
            "off" if threshold is None else f"{'≤' if first['key'].startswith('max_') else '≥'} {threshold:g}"
        )
        cells = []
        for a in artifacts:
            verdict = a["gates"][index]
            figure = "" if verdict["figure"] is None else f"{verdict['figure']:.4g}"
            mark = {True: " ✓", False: " ✗", None: ""}[
                verdict["passed"] if a["name"] not in ("base", "merged") else None
            ]
            cells.append(figure + mark)
        rows.append((first["gate"], bound, *cells))
    out = "## Gates (against merged BF16, each model in its own runtime)\n\n"
    out += markdown_table(["gate", "threshold", *names], rows, frozenset(names)) + "\n\n"
    out += "## Recommendation\n\n"
    for pick in report["recommendation"]:
        if pick["artifact"]:
            out += f"- **{pick['target']}**: `{pick['artifact']}`: {pick['reason']}.\n"
        else:
            stopped = "; ".join(f"`{name}`: {why}" for name, why in pick["stopped"].items())
            out += (
                f"- **{pick['target']}**: none, {pick['reason']}"
                + (f" ({stopped})" if stopped else "")
                + ".\n"
            )
    seconds = report.get("evaluate_seconds_by_part") or {}
    if seconds:
        spent = ", ".join(f"{part} {value:.0f} s" for part, value in seconds.items())
        out += f"\nMeasuring took (all models together): {spent}.\n"
    return out + "\n"


def failures_markdown(artifacts: list[dict[str, Any]]) -> str:
    """Why a model has no figures: its runtime crashed or failed while scoring it."""
    failed = [a for a in artifacts if a.get("error")]
    if not failed:
        return ""
    lines = "\n".join(f"- `{a['name']}` ({a['runtime']}): {a['error']}" for a in failed)
    return f"Not scored, so failed the gate:\n\n{lines}\n\n"


def report_png(report: dict[str, Any], loss_curve: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    artifacts = report["artifacts"]
    names = [a["name"] for a in artifacts]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = ["tab:red" if a["passed_gate"] is False else "tab:blue" for a in artifacts]
    axes[0].bar(names, [a["perplexity"] or 0 for a in artifacts], color=colors)
    axes[0].set_title("eval perplexity (assistant tokens)")
    axes[0].set_yscale("log")
    axes[0].tick_params(axis="x", rotation=30)
    # Quality against size: each artifact's KL divergence from merged BF16 (lower is closer).
    measured = [a for a in artifacts if (a.get("fidelity") or {}).get("mean_kld") is not None]
    measured = [a for a in measured if a["name"] != "base"]
    for a in measured:
        x, y = a["size_bytes"] / 1e6, max(a["fidelity"]["mean_kld"], 1e-6)
        axes[1].scatter(x, y, color="tab:red" if a["passed_gate"] is False else "tab:blue")
        axes[1].annotate(a["name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    threshold = report["gate"]["thresholds"].get("max_mean_kld")
    if threshold is not None and measured:
        axes[1].axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label="gate")
        axes[1].legend(loc="upper right")
    axes[1].set_yscale("log")
    axes[1].set_title("quality vs size: mean KLD from merged (red: failed a gate)")
    axes[1].set_xlabel("size (MB)")
    if loss_curve:
        axes[2].plot([p["step"] for p in loss_curve], [p["loss"] for p in loss_curve])
    axes[2].set_title("training loss")
    axes[2].set_xlabel("step")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def exported_path(result: dict[str, Any]) -> str:
    """Relative to the run dir; the base stays where the config names it."""
    if result["name"] == "base":
        return str(result["dir"])
    source = Path(result["dir"])
    suffix = f"/{source.name}" if source.is_file() else ""
    return f"{Stage.export.value}/{result['name']}{suffix}"


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, run_dir, out = ctx.cfg, ctx.run_dir, ctx.out_dir
    evaluated = json.loads((ctx.stage_dir(Stage.evaluate) / "results.json").read_text())
    # Judged here, under this command's thresholds: a change to eval.gates re-runs export alone.
    judgement = gates.judge_all(evaluated["results"], cfg.eval.gates)
    gates.log_judgement(judgement)
    stats = json.loads((ctx.stage_dir(Stage.data) / "stats.json").read_text())
    merge_info = json.loads((ctx.stage_dir(Stage.merge) / "info.json").read_text())
    training = json.loads((ctx.stage_dir(Stage.train) / "metrics.json").read_text())
    artifacts = []
    for result in judgement.results:
        target = out / result["name"]
        if result["name"] != "base":
            source = Path(result["dir"])
            package(source.parent if source.is_file() else source, target)  # a GGUF comes with its Modelfile
        settings = None
        info_path = ctx.stage_dir(Stage.quantize) / result["name"] / "quantize_info.json"
        if info_path.exists():
            settings = json.loads(info_path.read_text()).get("settings")
        artifacts.append(
            {
                "name": result["name"],
                "format": result["format"],
                "path": exported_path(result),
                "size_bytes": result["size_bytes"],
                "perplexity": result["perplexity"],
                "delta_pct": result["delta_pct"],
                "runtime": result["runtime"],
                "compute_dtype": result.get("compute_dtype"),
                "passed_gate": result["passed_gate"],
                "tokens": result["tokens"],
                "replies": result["replies"],
                "task": result.get("task"),
                "fidelity": result.get("fidelity"),
                "drift": result.get("drift"),
                "serving": result.get("serving"),
                "gates": result.get("gates", []),
                "gate_failures": result.get("gate_failures", []),
                "settings": settings,
                "error": result.get("error"),
            }
        )
    report = {
        "recipe": cfg.name,
        "base_model": cfg.model.name_or_path,
        "calibration": {
            "source": stats["calibration"]["source"],
            "samples": stats["calibration"]["samples"],
            "tokens": stats["calibration"]["tokens"],
            "path": stats["calibration"]["path"],
            "sha256": stats["calibration"]["sha256"],
        },
        "merge": {
            "base": merge_info["base"],
            "reason": merge_info["reason"],
            "eval_loss": merge_info["eval_loss"],
        },
        "training": {
            "eval_loss_before": training["eval_loss_before"],
            "eval_loss_after": training["eval_loss_after"],
            "steps": training["global_step"],
        },
        "metric": evaluated["metric"],
        "eval_tokens": evaluated["tokens"],
        "tasks": {"path": cfg.eval.tasks.path, "rows": evaluated.get("task_rows", 0)},
        "gate": {
            "mode": cfg.eval.gate.value,
            "thresholds": dataclasses.asdict(cfg.eval.gates),
            "failed": judgement.failed,
            "reasons": judgement.reasons,
        },
        "recommendation": judgement.recommendation,
        "evaluate_seconds_by_part": evaluated.get("seconds_by_part", {}),
        "artifacts": artifacts,
    }
    for artifact in artifacts:
        if artifact["name"] == "base":
            continue
        folder = out / artifact["name"]
        files = {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
        sections = f"{table_markdown(artifacts)}\n\n{failures_markdown(artifacts)}{gates_markdown(report)}"
        card = model_card(cfg, artifact, report, files, sections)
        (folder / "README.md").write_text(card, encoding="utf-8")
    (out / "report.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out / "report.md").write_text(
        f"# Run report: {cfg.name}\n\nBase `{cfg.model.name_or_path}`; merge base {merge_info['base']}; "
        f"calibration {report['calibration']['source']} ({report['calibration']['samples']} samples, "
        f"{report['calibration']['tokens']} tokens); {evaluated['tokens']} eval tokens scored per model.\n\n"
        f"{table_markdown(artifacts)}\n\n{failures_markdown(artifacts)}{gates_markdown(report)}"
        f"{tasks_markdown(artifacts)}"
        "![report](report.png)\n",
        encoding="utf-8",
    )
    report_png(report, training.get("train_loss_curve", []), out / "report.png")
    manifest_files = {}
    for path in sorted(run_dir.rglob("*")):
        relative = path.relative_to(run_dir)
        top = relative.parts[0]
        # runner internals (.partial, .identity), an earlier export this one replaces (its files are
        # listed from `out` below), files published from export/, logs that keep growing
        hidden = top.startswith(".") and top != ".hydra"
        replaced = top == Stage.export.value
        if not path.is_file() or hidden or replaced or top in PUBLISHED or path.suffix == ".log":
            continue
        manifest_files[str(relative)] = {"sha256": sha256(path), "size_bytes": path.stat().st_size}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            relative = Path(Stage.export.value) / path.relative_to(out)
            manifest_files[str(relative)] = {"sha256": sha256(path), "size_bytes": path.stat().st_size}
    manifest = {
        "recipe": cfg.name,
        "git_revision": git_revision(),
        "versions": versions(),
        "config": scrub(cfg),
        "files": manifest_files,
    }
    (out / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return {
        "artifacts": len(artifacts) - 1,
        "failed_gate": len(judgement.failed),
        "files": len(manifest_files),
    }


def publish(run_dir: Path) -> None:
    """Put the finished export's report and manifest at the run root, each by an atomic replace."""
    export = run_dir / Stage.export.value
    for name in PUBLISHED:
        source = export / name
        if source.exists():
            tmp = run_dir / f".{name}.tmp"
            shutil.copy2(source, tmp)
            os.replace(tmp, run_dir / name)
