"""The Hydra entry: compose the recipe, check it, run the stages, return the key metric."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich import get_console
from rich.text import Text

from trainer import distributed
from trainer.config import GateMode, register_schema, to_typed
from trainer.errors import JobFailed, TrainerError
from trainer.pipeline import Runner, summary_table
from trainer.stages.export import publish, report_table
from trainer.sweep import key_metric, read_report

log = logging.getLogger("trainer")

register_schema()


def stop(code: int, reason: str) -> None:
    """Exit with the code in a single run; in a sweep, fail this job only, so the others go on."""
    if HydraConfig.get().mode is RunMode.MULTIRUN:
        raise JobFailed(code, reason)
    sys.exit(code)


def gate_failures(run_dir: Path) -> list[str]:
    results = run_dir / "evaluate" / "results.json"
    return json.loads(results.read_text())["failed"] if results.exists() else []


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(raw_cfg: DictConfig) -> float | None:
    console = get_console()
    try:
        cfg = to_typed(raw_cfg)
        run_dir = Path(cfg.run_dir or HydraConfig.get().runtime.output_dir).resolve()
        console.print(f"[bold]trainer[/bold] recipe [cyan]{cfg.name}[/cyan] -> {run_dir}")
        results = Runner(cfg, raw_cfg, run_dir, console).run()
    except TrainerError as exc:
        console.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        stop(2, str(exc))
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
    failed = gate_failures(run_dir)
    if failed and cfg.eval.gate is GateMode.fail:
        reason = (
            f"{', '.join(failed)} lost more than eval.max_delta_pct={cfg.eval.max_delta_pct}% against merged "
            "BF16 (set eval.gate=warn to accept)"
        )
        console.print(Text.assemble(("quality gate failed: ", "bold red"), reason), soft_wrap=True)
        stop(4, f"quality gate failed: {reason}")
    return key_metric(read_report(run_dir), cfg.eval.key_metric)


if __name__ == "__main__":
    main()
