"""`python -m trainer.doctor [overrides]`: what this machine can run, checked in seconds.

Prints the library versions, the devices, the CPU features llama.cpp cares about, and runs
every runtime's preflight check (trainer/preflight.py) fresh, for the artifacts the composed
config enables (the same overrides as `python -m trainer`, e.g. `recipe=support-fr`). Exits 0
when every runtime works, 2 otherwise.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from trainer import preflight
from trainer.config import STAGE_ORDER

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the one `python -m trainer` composes


def _devices() -> str:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"CPU only (torch {torch.__version__}, {torch.get_num_threads()} threads)"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"CUDA {torch.version.cuda}: " + ", ".join(names)


def main(argv: list[str]) -> int:
    from hydra import compose, initialize_config_dir

    from trainer.config import register_schema, to_typed

    register_schema()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = to_typed(compose("config", overrides=argv))
    console = Console()
    console.print(f"[bold]trainer doctor[/bold]  Python {platform.python_version()} on {platform.platform()}")
    console.print(
        f"CPU: {preflight.cpu_model()}; features: {' '.join(preflight.cpu_flags()) or 'none of note'}"
    )
    console.print(f"devices: {_devices()}")
    versions = preflight.versions()
    console.print("packages: " + ", ".join(f"{k} {v or '[red]missing[/red]'}" for k, v in versions.items()))
    outcomes = preflight.run_checks(preflight.checks_for(cfg, STAGE_ORDER), cache_dir=None)
    table = Table(title=f"runtimes for recipe {cfg.name}")
    for column in ("runtime", "serves", "works", "seconds", "detail"):
        table.add_column(column)
    for outcome in outcomes:
        table.add_row(
            outcome.runtime,
            preflight.FORMATS[outcome.runtime],
            "[green]yes[/green]" if outcome.ok else "[red]NO[/red]",
            f"{outcome.seconds:.1f}",
            outcome.detail if outcome.ok else f"{outcome.detail}\nfix: {outcome.fix}",
        )
    console.print(table)
    system_info = next((o.info.get("system_info") for o in outcomes if o.info.get("system_info")), None)
    if system_info:
        console.print(f"llama.cpp build: {system_info}", soft_wrap=True)
    return 0 if all(o.ok for o in outcomes) else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
