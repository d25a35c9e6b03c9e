"""Shared helpers: composing the real config, running the real entry point in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from trainer.config import TrainerConfig, register_schema, to_typed

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "trainer" / "assets"

register_schema()


@pytest.fixture(scope="session", autouse=True)
def private_data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tests share one data cache of their own, never the user's `~/.cache/trainer`."""
    folder = tmp_path_factory.mktemp("trainer-cache")
    os.environ["TRAINER_CACHE_DIR"] = str(folder)
    return folder


def compose_raw(overrides: list[str] | None = None, config_dir: Path | None = None, **options):
    with initialize_config_dir(config_dir=str(config_dir or REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides or [], **options)


def compose_typed(overrides: list[str] | None = None) -> TrainerConfig:
    return to_typed(compose_raw(overrides))


def run_trainer(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python -m trainer ...` as a user runs it, offline, with a wide terminal so messages stay on one line."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "COLUMNS": "200",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ASSETS / "tiny-base")


# ---------------------------------------------------------------- the reliability table (tests/reliability.py)


def pytest_configure(config: pytest.Config) -> None:
    """Register the `reliability` marker and the plugin that writes docs/RELIABILITY.md after a full run."""
    import reliability

    config.addinivalue_line(
        "markers", "reliability: records rows of docs/RELIABILITY.md with reliability.record()"
    )
    if not config.pluginmanager.has_plugin("reliability-table"):
        config.pluginmanager.register(reliability.TablePlugin(config), "reliability-table")


@pytest.fixture(autouse=True)
def _reliability_scope(request: pytest.FixtureRequest):
    """Lets reliability.record() know which test is recording, and refuse tests without the marker."""
    import reliability

    reliability.begin(request.node.nodeid, request.node.get_closest_marker("reliability") is not None)
    yield
    reliability.end()
