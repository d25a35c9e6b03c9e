"""The Hydra entry: compose the recipe, check it, run the stages, return the key metric."""

from __future__ import annotations

import json
import logging
import sys
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich import get_console
from rich.console import Console
from rich.text import Text

from trainer import distributed
from trainer.config import GateMode, TrainerConfig, register_schema, to_typed
from trainer.errors import JobFailed, TrainerError
from trainer.evaluation.gates import judge_all
from trainer.logs import console_shows_own_records, keep_console_on_terminal, log_to_file_only
from trainer.pipeline import Runner, StageResult, summary_table
from trainer.run_lock import RunLock
from trainer.stages.export import publish, report_table
from trainer.sweep import key_metric, read_report

log = logging.getLogger("trainer")

register_schema()


def stop(code: int, reason: str) -> None:
    """Exit with the code in a single run; in a sweep, fail this job only, so the others go on.
    The reason goes to the run's log file too (the console has shown it already)."""
    log_to_file_only(log, logging.ERROR, f"stopped: {reason}")
    if HydraConfig.get().mode is RunMode.MULTIRUN:
        raise JobFailed(code, reason)
    sys.exit(code)


def gate_failures(run_dir: Path, cfg: TrainerConfig) -> dict[str, str]:
    """Each artifact that fails the quality gate under this command's thresholds, with why."""
    results = run_dir / "evaluate" / "results.json"
    if not results.exists():
        return {}
    return judge_all(json.loads(results.read_text())["results"], cfg.eval.gates).reasons


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(raw_cfg: DictConfig) -> float | None:
    keep_console_on_terminal()
    console = get_console()
    try:
        cfg = to_typed(raw_cfg)
        console_shows_own_records(cfg.verbose)
        run_dir = Path(cfg.run_dir or HydraConfig.get().runtime.output_dir).resolve()
        # Rank 0 holds the run directory for the whole run; other ranks work under its lock.
        with RunLock(run_dir) if distributed.is_main() else nullcontext():
            console.print(f"[bold]trainer[/bold] recipe [cyan]{cfg.name}[/cyan] -> {run_dir}")
            return finish(cfg, run_dir, Runner(cfg, raw_cfg, run_dir, console).run(), console)
    except TrainerError as exc:
        console.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        stop(2, str(exc))
    return None


def finish(cfg: TrainerConfig, run_dir: Path, results: list[StageResult], console: Console) -> float | None:
    """Report the stages, publish a finished export, apply the quality gate, return the key metric."""
    if not distributed.is_main():
        return None  # rank 0 reports
    console.print(summary_table(results))
    unbuilt = [r for r in results if r.status == "not built"]
    if unbuilt:
        console.print(Text.assemble(("stopped: ", "yellow"), unbuilt[0].note), soft_wrap=True)
        stop(3, unbuilt[0].note)
    if (run_dir / "export" / "DONE.json").exists():
        publish(run_dir)
        console.print(report_table(run_dir))
    failed = gate_failures(run_dir, cfg)
    if failed and cfg.eval.gate is GateMode.fail:
        reason = (
            "; ".join(f"{name}: {why}" for name, why in failed.items()) + " (eval.gate=warn accepts them)"
        )
        console.print(Text.assemble(("quality gate failed: ", "bold red"), reason), soft_wrap=True)
        stop(4, f"quality gate failed: {reason}")
    return key_metric(read_report(run_dir), cfg.eval.key_metric)


if __name__ == "__main__":
    main()
