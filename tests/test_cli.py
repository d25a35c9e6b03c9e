"""The command as a user runs it: a subset of stages, the skip on re-run, errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_trainer


def test_data_stage_runs_then_is_skipped(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["recipe=support-fr", "stages=[data]", f"hydra.run.dir={run_dir}"]
    first = run_trainer(args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    for name in ("train.jsonl", "eval.jsonl", "calibration.jsonl", "stats.json", "DONE.json"):
        assert (run_dir / "data" / name).exists(), name
    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    assert stats["calibration"]["samples"] == 128 and stats["calibration"]["source"] == "train"
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert (run_dir / "trainer.log").exists()
    run_id = json.loads((run_dir / "data" / "DONE.json").read_text())["run_id"]
    second = run_trainer(args, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "stage data: done, skipped" in second.stdout
    assert json.loads((run_dir / "data" / "DONE.json").read_text())["run_id"] == run_id


def test_run_dir_holds_hydras_files_and_no_runs_folder_is_made(tmp_path: Path) -> None:
    """`run_dir=` moves the whole run: Hydra's config and the log land beside the stages, and
    `runs/<recipe>` (another run's, perhaps) is left alone."""
    run_dir = tmp_path / "elsewhere"
    result = run_trainer(["recipe=support-fr", "stages=[data]", f"run_dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (run_dir / "data" / "DONE.json").exists()
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert (run_dir / "trainer.log").exists()
    assert not (tmp_path / "runs").exists()


def test_bad_rows_stop_the_run_naming_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
        '{"messages": [{"role": "user", "content": "a"}]}\n',
        encoding="utf-8",
    )
    run_dir = tmp_path / "run"
    result = run_trainer(
        [f"data.path={data}", "data.eval_path=null", f"hydra.run.dir={run_dir}"], cwd=tmp_path
    )
    assert result.returncode == 2
    assert (
        f"{data}:2: messages[0]: the last message must be the assistant's [no_final_assistant]"
        in result.stdout
    )
    assert "Traceback" not in result.stdout + result.stderr
    assert not (run_dir / "data").exists()
    # The run's log holds the reason it stopped, not only the console.
    logged = (run_dir / "trainer.log").read_text(encoding="utf-8")
    assert "[ERROR] stopped: " in logged and f"{data}:2: messages[0]: the last message" in logged


def test_config_error_exits_2_before_any_stage(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_trainer(["data.eval_fraction=2", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "data.eval_fraction: 2.0 must be in (0, 1)" in result.stdout
    assert not (run_dir / "data").exists()
