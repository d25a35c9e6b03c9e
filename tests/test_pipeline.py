"""The stage runner: order, atomic folders, skip, force, invalidation, crash recovery.

The stages themselves are replaced by small functions that write a file: the runner is
what is under test here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import compose_raw
from rich.console import Console

from trainer import pipeline
from trainer.config import Stage, to_typed
from trainer.errors import StageNotBuilt, TrainerError
from trainer.pipeline import MARKER, Runner, StageContext


class FakeStages:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.crash_in: str | None = None
        self.unbuilt: str | None = None

    def __call__(self, stage: Stage):
        def run(ctx: StageContext) -> dict[str, Any]:
            self.calls.append(stage.value)
            (ctx.out_dir / "part.txt").write_text("half")
            if stage.value == self.crash_in:
                raise RuntimeError("killed mid-stage")
            if stage.value == self.unbuilt:
                raise StageNotBuilt(stage.value, issue=99)
            if stage is not Stage.data:
                previous = pipeline.STAGE_ORDER[pipeline.STAGE_ORDER.index(stage) - 1]
                assert (ctx.stage_dir(previous) / MARKER).exists()
            (ctx.out_dir / "part.txt").write_text("complete")
            return {"wrote": 1}

        return run


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStages:
    stages = FakeStages()
    monkeypatch.setattr(pipeline, "stage_function", stages)
    return stages


def make_runner(run_dir: Path, overrides: list[str] | None = None) -> Runner:
    raw = compose_raw(
        [
            "model.name_or_path=/unused",
            "data.path=/unused.jsonl",
            "data.eval_path=null",
            "preflight=false",
            *(overrides or []),
        ]
    )
    return Runner(to_typed(raw), raw, run_dir, Console(quiet=True))


def test_stages_run_in_order_and_each_folder_is_complete(tmp_path: Path, fake: FakeStages) -> None:
    results = make_runner(tmp_path, ["stages=[train,data,merge]"]).run()
    assert fake.calls == ["data", "train", "merge"]
    assert [r.status for r in results] == ["done"] * 3
    for stage in ("data", "train", "merge"):
        assert (tmp_path / stage / "part.txt").read_text() == "complete"
        marker = json.loads((tmp_path / stage / MARKER).read_text())
        assert marker["stage"] == stage and marker["summary"] == {"wrote": 1}
    assert not list(tmp_path.glob(".*.partial"))


def test_rerun_skips_done_stages(tmp_path: Path, fake: FakeStages) -> None:
    make_runner(tmp_path, ["stages=[data,train]"]).run()
    results = make_runner(tmp_path, ["stages=[data,train]"]).run()
    assert fake.calls == ["data", "train"]
    assert [r.status for r in results] == ["skipped", "skipped"]


def test_crash_leaves_no_done_folder_and_rerun_finishes(tmp_path: Path, fake: FakeStages) -> None:
    fake.crash_in = "train"
    with pytest.raises(RuntimeError):
        make_runner(tmp_path, ["stages=[data,train,merge]"]).run()
    assert (tmp_path / "data" / MARKER).exists()
    assert not (tmp_path / "train").exists()
    assert (tmp_path / ".train.partial" / "part.txt").read_text() == "half"
    fake.crash_in = None
    fake.calls.clear()
    make_runner(tmp_path, ["stages=[data,train,merge]"]).run()
    assert fake.calls == ["train", "merge"]
    assert (tmp_path / "train" / "part.txt").read_text() == "complete"


def test_memory_is_released_after_every_stage_run_even_a_failed_one(
    tmp_path: Path, fake: FakeStages, monkeypatch: pytest.MonkeyPatch
) -> None:
    released: list[str] = []
    monkeypatch.setattr(pipeline.memory, "release", lambda after="": released.append(after))
    make_runner(tmp_path, ["stages=[data,train]"]).run()
    assert released == ["data", "train"]
    released.clear()
    fake.crash_in = "merge"
    with pytest.raises(RuntimeError):
        make_runner(tmp_path, ["stages=[data,train,merge]"]).run()
    assert released == ["merge"]  # data and train were done: skipped, nothing to release


def test_force_reruns_the_stage_and_those_after_it(tmp_path: Path, fake: FakeStages) -> None:
    make_runner(tmp_path, ["stages=[data,train,merge]"]).run()
    first_train = json.loads((tmp_path / "train" / MARKER).read_text())["run_id"]
    fake.calls.clear()
    make_runner(tmp_path, ["stages=[data,train,merge]", "force=[train]"]).run()
    assert fake.calls == ["train", "merge"]
    assert json.loads((tmp_path / "train" / MARKER).read_text())["run_id"] != first_train
    assert not list(tmp_path.glob(".*.old-*"))


def test_changed_config_reruns_that_stage_and_downstream(tmp_path: Path, fake: FakeStages) -> None:
    make_runner(tmp_path, ["stages=[data,train,merge]"]).run()
    fake.calls.clear()
    make_runner(tmp_path, ["stages=[data,train,merge]", "lora.r=4"]).run()
    assert fake.calls == ["train", "merge"]
    fake.calls.clear()
    make_runner(tmp_path, ["stages=[data,train,merge]", "lora.r=4", "hardware=cpu"]).run()
    assert fake.calls == []  # hardware does not change what a stage computes


def test_a_new_quality_threshold_rejudges_in_export_without_scoring_again() -> None:
    before = compose_raw(["recipe=support-fr"])
    after = compose_raw(["recipe=support-fr", "eval.gates.max_ppl_delta_pct=0", "eval.gate=warn"])
    assert pipeline.fingerprint(before, Stage.evaluate) == pipeline.fingerprint(after, Stage.evaluate)
    assert pipeline.fingerprint(before, Stage.export) != pipeline.fingerprint(after, Stage.export)
    rescored = compose_raw(["recipe=support-fr", "eval.tasks.limit=1"])
    assert pipeline.fingerprint(before, Stage.evaluate) != pipeline.fingerprint(rescored, Stage.evaluate)


def test_upstream_rerun_invalidates_a_stage_not_selected(tmp_path: Path, fake: FakeStages) -> None:
    make_runner(tmp_path, ["stages=[data,train]"]).run()
    make_runner(tmp_path, ["stages=[data]", "force=[data]"]).run()
    fake.calls.clear()
    with pytest.raises(TrainerError, match=r"needs stage 'train'.*upstream stage ran again"):
        make_runner(tmp_path, ["stages=[merge]"]).run()
    make_runner(tmp_path, ["stages=[train]"]).run()
    assert fake.calls == ["train"]


def test_subset_needing_an_undone_stage_is_refused_before_running(tmp_path: Path, fake: FakeStages) -> None:
    with pytest.raises(TrainerError, match=r"stages=\[data,train\]"):
        make_runner(tmp_path, ["stages=[train]"]).run()
    assert fake.calls == []


def test_a_later_stage_missing_its_upstream_is_refused_before_the_first_runs(
    tmp_path: Path, fake: FakeStages
) -> None:
    """Evaluate without quantize: named before data and train spend their time, not after them."""
    with pytest.raises(
        TrainerError, match=r"needs stage 'quantize'.*not run yet.*stages=\[quantize,evaluate\]"
    ):
        make_runner(tmp_path, ["stages=[data,train,merge,evaluate]"]).run()
    assert fake.calls == []


def test_an_upstream_a_rerun_will_invalidate_is_refused_before_the_first_runs(
    tmp_path: Path, fake: FakeStages
) -> None:
    make_runner(tmp_path, ["stages=[data,train,merge,quantize]"]).run()
    fake.calls.clear()
    with pytest.raises(TrainerError, match=r"needs stage 'merge'.*stage 'train' runs again before it"):
        make_runner(tmp_path, ["stages=[train,quantize]", "force=[train]"]).run()
    assert fake.calls == []
    make_runner(tmp_path, ["stages=[train,merge,quantize]", "force=[train]"]).run()
    assert fake.calls == ["train", "merge", "quantize"]


def test_unbuilt_stage_stops_the_flow_and_says_so(tmp_path: Path, fake: FakeStages) -> None:
    fake.unbuilt = "merge"
    results = make_runner(tmp_path).run()
    assert [r.status for r in results] == ["done", "done", "not built"]
    assert "issue #99" in results[-1].note
    assert not (tmp_path / "merge").exists() and not (tmp_path / ".merge.partial").exists()


def test_resumable_partial_survives_a_crash_unless_its_config_changed(
    tmp_path: Path, fake: FakeStages, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    crash = [True]

    def train(ctx: StageContext) -> dict[str, Any]:
        checkpoint = ctx.out_dir / "checkpoint"
        seen.append(checkpoint.read_text() if checkpoint.exists() else "none")
        checkpoint.write_text("step 4")
        if crash[0]:
            raise RuntimeError("killed")
        return {}

    monkeypatch.setattr(pipeline, "stage_function", lambda s: train if s is Stage.train else fake(s))
    with pytest.raises(RuntimeError):
        make_runner(tmp_path, ["stages=[data,train]"]).run()
    crash[0] = False
    make_runner(tmp_path, ["stages=[data,train]"]).run()
    assert seen == ["none", "step 4"]  # the second attempt found the first one's checkpoint
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["DONE.json", "checkpoint"]
    assert not (tmp_path / ".train.identity").exists()

    crash[0] = True
    with pytest.raises(RuntimeError):
        make_runner(tmp_path, ["stages=[data,train]", "lora.r=4"]).run()
    crash[0] = False
    make_runner(tmp_path, ["stages=[data,train]", "lora.r=8"]).run()
    assert seen[-2:] == ["none", "none"]  # a partial started for other settings is discarded


def test_preflight_checks_the_stages_about_to_run_before_the_first_one(
    tmp_path: Path, fake: FakeStages, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer import preflight

    asked: list[list[str]] = []
    monkeypatch.setattr(
        preflight, "require", lambda cfg, stages, console=None: asked.append([s.value for s in stages])
    )
    make_runner(tmp_path, ["preflight=true"]).run()
    assert asked == [["data", "train", "merge", "quantize", "evaluate", "export"]]
    make_runner(tmp_path, ["preflight=true"]).run()
    assert asked[-1] == []  # everything done: no runtime will load a model
    make_runner(tmp_path, ["preflight=true", "force=[quantize]"]).run()
    assert asked[-1] == ["quantize", "evaluate", "export"]

    def fails(cfg, stages, console=None) -> None:
        raise TrainerError("preflight failed before any stage ran: llama.cpp ...")

    monkeypatch.setattr(preflight, "require", fails)
    fake.calls.clear()
    with pytest.raises(TrainerError, match="preflight failed"):
        make_runner(tmp_path / "other", ["preflight=true"]).run()
    assert fake.calls == [] and not (tmp_path / "other" / ".data.partial").exists()
