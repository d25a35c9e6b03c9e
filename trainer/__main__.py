"""The Hydra entry: compose the recipe, check it, run the stages, return the key metric."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich import get_console
from rich.text import Text

from trainer.config import GateMode, register_schema, to_typed
from trainer.errors import TrainerError
from trainer.pipeline import Runner, summary_table
from trainer.stages.export import publish, report_table

log = logging.getLogger("trainer")

register_schema()


def key_metric(run_dir: Path) -> float | None:
    """The best quantized artifact's perplexity, for sweepers that optimise; None before any exists."""
    report = run_dir / "report.json"
    if not report.exists():
        return None
    artifacts = json.loads(report.read_text()).get("artifacts", [])
    values = [
        a["perplexity"] for a in artifacts if a.get("name") not in ("base", "merged") and a.get("perplexity")
    ]
    return min(values) if values else None


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
        sys.exit(2)
    console.print(summary_table(results))
    unbuilt = [r for r in results if r.status == "not built"]
    if unbuilt:
        console.print(Text.assemble(("stopped: ", "yellow"), unbuilt[0].note), soft_wrap=True)
        sys.exit(3)
    if (run_dir / "export" / "DONE.json").exists():
        publish(run_dir)
        console.print(report_table(run_dir))
    failed = gate_failures(run_dir)
    if failed and cfg.eval.gate is GateMode.fail:
        console.print(
            Text.assemble(
                ("quality gate failed: ", "bold red"),
                f"{', '.join(failed)} lost more than eval.max_delta_pct={cfg.eval.max_delta_pct}% against merged "
                "BF16 (set eval.gate=warn to accept)",
            ),
            soft_wrap=True,
        )
        sys.exit(4)
    return key_metric(run_dir)


if __name__ == "__main__":
    main()
