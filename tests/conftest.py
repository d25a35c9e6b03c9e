"""Shared helpers: composing the real config, running the real entry point in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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


# Imported by Python at start-up from PYTHONPATH (`fault_env`): makes llama.cpp's forward pass kill
# its own process with the signal TRAINER_TEST_FAULT names, as a native crash would, for models
# whose path holds TRAINER_TEST_FAULT_PATH (every model when it is empty).
SITECUSTOMIZE = """
import os, signal
if os.environ.get("TRAINER_TEST_FAULT"):
    import llama_cpp
    _eval = llama_cpp.Llama.eval
    def eval(self, tokens):
        if os.environ.get("TRAINER_TEST_FAULT_PATH", "") in str(self.model_path):
            os.kill(os.getpid(), getattr(signal, os.environ["TRAINER_TEST_FAULT"]))
        return _eval(self, tokens)
    llama_cpp.Llama.eval = eval
"""


def fault_env(tmp_path: Path, signal_name: str, path_part: str = "") -> dict[str, str]:
    """The environment of a run whose llama.cpp forward passes die of `signal_name` ('' for none)."""
    inject = tmp_path / "inject"
    inject.mkdir(exist_ok=True)
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{inject}",
        "TRAINER_TEST_FAULT": signal_name,
        "TRAINER_TEST_FAULT_PATH": path_part,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "COLUMNS": "200",
    }


@pytest.fixture(scope="session")
def builder() -> ModuleType:
    """scripts/make_support_fr.py, the support-fr generator, imported by path (scripts/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_support_fr", REPO / "scripts" / "make_support_fr.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


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
