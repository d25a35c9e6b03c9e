"""Preflight and doctor: every runtime the run needs is proven in a child before any stage runs.

The crash tests inject the fault into the real child processes (`conftest.fault_env`):
llama.cpp's `Llama.eval` kills its own process with SIGILL, as a llama.cpp built for CPU
features the machine forbids does. The preflight and the entry that react to it are the real ones.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import compose_typed, fault_env

from trainer import preflight
from trainer.child import describe_exit
from trainer.config import STAGE_ORDER, Stage


def test_a_child_killed_by_a_signal_is_named_with_its_meaning() -> None:
    assert describe_exit(1) == "exit 1"
    assert describe_exit(-signal.SIGILL) == (
        "killed by SIGILL, an illegal instruction: the native library was built for CPU features "
        "this machine does not allow"
    )
    assert describe_exit(-signal.SIGKILL).startswith("killed by SIGKILL, killed from outside")
    assert describe_exit(-signal.SIGUSR1) == "killed by SIGUSR1"
    assert describe_exit(-200) == "killed by signal 200"


def test_checks_follow_the_stages_and_the_enabled_artifacts() -> None:
    cfg = compose_typed()
    checks = {c.runtime: c for c in preflight.checks_for(cfg, STAGE_ORDER)}
    assert list(checks) == ["transformers", "gptqmodel", "llama.cpp"]
    assert checks["gptqmodel"].quantized == (("awq", 4, 128, False, False), ("gptq", 4, 128, True, False))
    assert checks["llama.cpp"].gguf_types == ("Q4_K_M",)
    assert preflight.checks_for(cfg, [Stage.data]) == []
    assert [c.runtime for c in preflight.checks_for(cfg, [Stage.data, Stage.train])] == ["transformers"]
    gguf_only = compose_typed(["quantize.enabled=[gguf-q4_k_m]"])
    assert [c.runtime for c in preflight.checks_for(gguf_only, [Stage.evaluate])] == [
        "transformers",
        "llama.cpp",
    ]


@pytest.mark.slow
def test_every_runtime_passes_its_check_on_this_machine(tmp_path: Path) -> None:
    cfg = compose_typed()
    outcomes = preflight.run_checks(preflight.checks_for(cfg, STAGE_ORDER), cache_dir=str(tmp_path))
    assert [(o.runtime, o.ok) for o in outcomes] == [
        ("transformers", True),
        ("gptqmodel", True),
        ("llama.cpp", True),
    ], outcomes
    kernels = next(o for o in outcomes if o.runtime == "gptqmodel").info["kernels"]
    assert any(k.startswith("gptq") for k in kernels) and any(k.startswith("awq") for k in kernels)
    assert "Q4_K_M" in next(o for o in outcomes if o.runtime == "llama.cpp").detail
    again = preflight.run_checks(preflight.checks_for(cfg, STAGE_ORDER), cache_dir=str(tmp_path))
    assert all(o.cached and o.ok for o in again)  # a later run of the same environment skips them


@pytest.mark.slow
def test_a_runtime_that_dies_of_sigill_stops_the_run_before_the_data_stage(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    started = time.time()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "recipe=support-fr",
            f"hydra.run.dir={run_dir}",
            f"cache_dir={tmp_path / 'cache'}",
        ],
        cwd=tmp_path,
        env=fault_env(tmp_path, "SIGILL"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.time() - started
    assert result.returncode == 2, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "preflight failed before any stage ran" in out
    assert (
        "llama.cpp (serves gguf) cannot run on this machine: killed by SIGILL, an illegal instruction" in out
    )
    assert "fix: rebuild llama-cpp-python for a portable x86-64 + AVX2 CPU" in out and "--no-cache-dir" in out
    assert "Traceback" not in result.stdout + result.stderr
    assert not (run_dir / "data").exists() and not (run_dir / ".data.partial").exists()
    assert seconds < 300, f"the preflight took {seconds:.0f} s"


@pytest.mark.slow
def test_doctor_reports_every_runtime_and_fails_on_a_crashing_one(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "trainer.doctor", "recipe=support-fr"]
    healthy = subprocess.run(
        command, cwd=tmp_path, env=fault_env(tmp_path, ""), capture_output=True, text=True
    )
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    for expected in (
        "CPU:",
        "packages: torch",
        "llama-cpp-python",
        "transformers",
        "gptqmodel",
        "llama.cpp build:",
    ):
        assert expected in healthy.stdout, expected
    broken = subprocess.run(
        command, cwd=tmp_path, env=fault_env(tmp_path, "SIGILL"), capture_output=True, text=True
    )
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert "killed by SIGILL" in broken.stdout and "NO" in broken.stdout
