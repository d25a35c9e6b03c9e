"""Scale-out: a DDP launch, sweeps through Hydra's launchers, their summary, the shared data cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, compose_raw, compose_typed, run_trainer

from trainer.config import Distributed
from trainer.data_cache import cache_key, cached
from trainer.errors import ConfigError
from trainer.sweep import JOB_FILE, key_metric, write_summary

# The smallest full flow: a few steps, one GGUF artifact, no sample generation.
QUICK = [
    "train.max_steps=4",
    "train.eval_steps=4",
    "data.eval_size=24",  # a quick eval pass (train, merge and evaluate all score it)
    "eval.drift.tokens=1024",
    "quantize.enabled=[gguf-q4_k_m-noimatrix]",
    "eval.generate_samples=0",
    "eval.tasks.limit=2",
    "eval.tasks.max_new_tokens=8",
    "eval.gate=warn",  # 4 steps leave a model whose quantized copy may miss the gate; the flow is the point
]


def data_section(raw) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(raw.data, resolve=True, enum_to_str=True)


@pytest.mark.slow
def test_two_process_ddp_run_trains_on_both_ranks_and_exports_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
        "PYTHONPATH": str(REPO),
    }
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", "0", "-m", "trainer", "hardware=ddp", *QUICK,
        # A timestamped run dir down to microseconds: ranks agree only through rank 0's clock.
        f"hydra.run.dir={runs}/" + "${now:%H-%M-%S-%f}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = list(runs.iterdir())
    metrics = json.loads((run_dir / "train" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["distributed"] == "ddp"
    assert metrics["global_step"] == 4
    # 4 steps of 8 rows on each of 2 ranks: 64 of the 2400 train rows.
    assert metrics["epochs"] == pytest.approx(64 / 2400, rel=1e-3)
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    report = json.loads((run_dir / "report.json").read_text())
    assert [a["name"] for a in report["artifacts"]] == ["base", "merged", "gguf-q4_k_m-noimatrix"]
    assert all(a["perplexity"] > 1 for a in report["artifacts"])
    assert (run_dir / "manifest.json").exists() and (run_dir / "export" / "DONE.json").exists()
    assert (run_dir / "trainer.log").exists() and (run_dir / "trainer.rank1.log").exists()
    assert "stage merge" not in (run_dir / "trainer.rank1.log").read_text()
    assert not list(run_dir.glob(".*.partial"))


@pytest.mark.slow
def test_a_run_given_two_processes_starts_its_training_ranks_itself(tmp_path: Path) -> None:
    """How a sweep job that Ray or SLURM gave several GPUs trains on all of them."""
    run_dir = tmp_path / "run"
    args = [
        "hardware=ddp",
        "hardware.processes=2",
        "stages=[data,train]",
        *QUICK[:2],
        f"hydra.run.dir={run_dir}",
    ]
    result = run_trainer(args, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((run_dir / "train" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["global_step"] == 4
    assert "(not run yet; 2 ranks)" in result.stdout
    assert (run_dir / "trainer.rank1.log").exists()


@pytest.mark.slow
def test_ray_sweep_of_two_jobs_writes_a_ranked_summary_and_builds_data_once(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_trainer(
        ["-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2", "lora.r=4,8", *QUICK,
         f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}"],  # a cache no other test filled
        cwd=tmp_path,
        timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    jobs = summary["jobs"]
    assert len(jobs) == 2 and {j["status"] for j in jobs} == {"completed"}
    assert sorted(o for j in jobs for o in j["overrides"] if o.startswith("lora.r=")) == [
        "lora.r=4",
        "lora.r=8",
    ]
    assert [j["rank"] for j in jobs] == [1, 2] and jobs[0]["value"] <= jobs[1]["value"]
    for job in jobs:
        report = json.loads((Path(job["run_dir"]) / "report.json").read_text())
        assert job["value"] == key_metric(report)
    assert summary["common_overrides"] == [*QUICK, f"cache_dir={tmp_path / 'cache'}"]
    csv_lines = (sweep / "sweep_summary.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("rank,job,overrides,status")
    assert "| 1 |" in (sweep / "sweep_summary.md").read_text()
    # Both jobs share their data settings: one built the data stage, the other reused it.
    caches = sorted(
        json.loads((sweep / n / "data" / "DONE.json").read_text())["summary"]["cache"] for n in "01"
    )
    assert caches == ["hit", "stored"]


def test_a_failing_job_leaves_the_sweep_going_and_is_in_the_summary(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_trainer(
        ["-m", "stages=[data]", "data.eval_fraction=0.1,2", f"hydra.sweep.dir={sweep}"], cwd=tmp_path
    )
    assert result.returncode != 0  # the sweep reports that a job failed
    jobs = {j["job"]: j for j in json.loads((sweep / "sweep_summary.json").read_text())["jobs"]}
    assert jobs[0]["status"] == "completed" and (sweep / "0" / "data" / "DONE.json").exists()
    assert jobs[1]["status"] == "failed" and "data.eval_fraction" in jobs[1]["error"]
    assert "1 completed, 1 failed" in (sweep / "sweep_summary.md").read_text()


def fake_job(
    sweep: Path, num: int, value: float | None, status: str = "completed", metric: str = "best_quantized"
) -> None:
    folder = sweep / str(num)
    folder.mkdir(parents=True)
    row = {
        "job": num, "overrides": [f"lora.r={num}", "train.max_steps=4"], "status": status, "error": None,
        "seconds": 1.0, "run_dir": str(folder), "metric": metric, "value": value,
        "artifacts": {"merged": {"perplexity": 10.0, "delta_pct": 0.0, "passed_gate": None}},
    }  # fmt: skip
    (folder / JOB_FILE).write_text(json.dumps(row))


def test_summary_ranks_by_the_metric_and_puts_unmeasured_jobs_last(tmp_path: Path) -> None:
    fake_job(tmp_path, 0, 12.5)
    fake_job(tmp_path, 1, None, status="failed")
    fake_job(tmp_path, 2, 11.0)
    fake_job(tmp_path, 3, None, status="running")
    rows = write_summary(tmp_path)
    assert [(r["job"], r["rank"]) for r in rows] == [(2, 1), (0, 2), (1, None), (3, None)]
    markdown = (tmp_path / "sweep_summary.md").read_text()
    assert "4 jobs: 2 completed, 1 failed, 1 running or unfinished" in markdown
    assert "Every job also has: `train.max_steps=4`" in markdown
    assert "| 1 | 2 | lora.r=2 | completed | 11.000 |" in markdown


def test_key_metric_picks_the_named_artifact() -> None:
    report = {
        "artifacts": [
            {"name": "base", "perplexity": 50.0},
            {"name": "merged", "perplexity": 10.0},
            {"name": "gptq-w4g128", "perplexity": 10.5},
            {"name": "gguf-q4_k_m", "perplexity": 10.2},
        ]
    }
    assert key_metric(report) == 10.2
    assert key_metric(report, "gptq-w4g128") == 10.5
    assert key_metric(report, "merged") == 10.0
    assert key_metric({}, "merged") is None


def test_key_metric_ranks_on_any_gate_figure_in_its_direction(tmp_path: Path) -> None:
    report = {
        "artifacts": [
            {"name": "merged", "perplexity": 10.0, "task": {"score": 0.8}},
            {
                "name": "gptq-w4g128",
                "perplexity": 10.5,
                "fidelity": {"mean_kld": 0.004},
                "task": {"score": 0.7},
            },
            {
                "name": "gguf-q4_k_m",
                "perplexity": 10.2,
                "fidelity": {"mean_kld": 0.006},
                "task": {"score": 0.75},
            },
        ]
    }
    assert key_metric(report, "best_quantized:task_score") == 0.75  # higher is better
    assert key_metric(report, "best_quantized:mean_kld") == 0.004  # lower is better
    assert key_metric(report, "merged:task_score") == 0.8 and key_metric(report, "merged:mean_kld") is None
    for num, score in enumerate((0.5, 0.75, 0.6)):
        fake_job(tmp_path, num, score, metric="best_quantized:task_score")
    assert [r["job"] for r in write_summary(tmp_path)] == [1, 2, 0]
    assert "(eval.key_metric; higher is better)" in (tmp_path / "sweep_summary.md").read_text()
    assert compose_typed(["eval.key_metric=gguf-q4_k_m:mean_kld"]).eval.key_metric == "gguf-q4_k_m:mean_kld"
    with pytest.raises(ConfigError, match=r"eval.key_metric: 'merged:speed'.*task_score"):
        compose_typed(["eval.key_metric=merged:speed"])


def test_key_metric_must_name_a_measured_artifact() -> None:
    with pytest.raises(
        ConfigError, match=r"eval.key_metric: 'gptq'; allowed: best_quantized, merged, base, gptq-w4g128"
    ):
        compose_typed(["eval.key_metric=gptq"])


def test_cache_key_follows_the_data_inputs_and_settings_only(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
    )

    def key(*overrides: str) -> str | None:
        raw = compose_raw([f"data.path={data}", "data.eval_path=null", *overrides])
        return cache_key(
            compose_typed([f"data.path={data}", "data.eval_path=null", *overrides]), data_section(raw)
        )

    first = key()
    assert first is not None and first == key()
    assert key("lora.r=4", "train.learning_rate=1e-3") == first  # training keys share the data stage
    assert key("data.calibration.samples=64") != first
    data.write_text(data.read_text().replace('"b"', '"c"'))
    assert key() != first  # same path, new content
    assert key("model.name_or_path=some-org/some-hub-model") is None  # not local: not cached


def test_concurrent_jobs_with_one_key_build_the_data_stage_once(tmp_path: Path) -> None:
    raw = compose_raw()
    cfg = compose_typed()
    builds: list[int] = []

    def build(ctx: SimpleNamespace) -> dict:
        builds.append(1)
        time.sleep(0.5)  # long enough for the other job to arrive while this one holds the key
        (ctx.out_dir / "train.jsonl").write_text("rows\n")
        return {"train": 1}

    outs = [tmp_path / f"job{i}" for i in range(2)]
    results: dict[int, dict] = {}

    def job(i: int) -> None:
        outs[i].mkdir()
        results[i] = cached(
            build, SimpleNamespace(cfg=cfg, out_dir=outs[i]), str(tmp_path / "cache"), data_section(raw)
        )

    threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    assert sorted(r["cache"] for r in results.values()) == ["hit", "stored"]
    assert all((out / "train.jsonl").read_text() == "rows\n" for out in outs)
    entries = [p for p in (tmp_path / "cache" / "data").iterdir() if p.is_dir()]
    assert len(entries) == 1 and not list((tmp_path / "cache" / "data").glob(".*.tmp"))


def test_a_failed_build_leaves_no_cache_entry(tmp_path: Path) -> None:
    raw = compose_raw()

    def build(ctx: SimpleNamespace) -> dict:
        raise RuntimeError("boom")

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError):
        cached(
            build,
            SimpleNamespace(cfg=compose_typed(), out_dir=out),
            str(tmp_path / "cache"),
            data_section(raw),
        )
    assert not [p for p in (tmp_path / "cache" / "data").iterdir() if p.is_dir()]


def test_fsdp_hardware_stores_4bit_weights_as_bf16_and_uint8_storage_is_refused() -> None:
    cfg = compose_typed(["hardware=fsdp"])
    assert cfg.hardware.distributed is Distributed.fsdp and cfg.train.qlora.storage_dtype == "bfloat16"
    with pytest.raises(ConfigError, match=r"train.qlora.storage_dtype: 'uint8' cannot be sharded by FSDP"):
        compose_typed(["hardware=fsdp", "train.qlora.storage_dtype=uint8"])


def test_distributed_training_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.stages.train import parallel_arguments

    assert parallel_arguments(compose_typed(["hardware=ddp"]).hardware, "cpu") == {}  # a single process
    monkeypatch.setenv("WORLD_SIZE", "2")
    ddp = parallel_arguments(compose_typed(["hardware=ddp"]).hardware, "cpu")
    assert ddp == {"ddp_backend": "gloo", "ddp_find_unused_parameters": False}
    fsdp = parallel_arguments(compose_typed(["hardware=fsdp"]).hardware, "cuda")
    assert fsdp["ddp_backend"] == "nccl" and fsdp["fsdp"] == "full_shard auto_wrap"
    assert fsdp["fsdp_config"]["use_orig_params"] is False


def test_launcher_configs_give_each_job_its_gpus() -> None:
    from omegaconf import OmegaConf

    ray = compose_raw(["hydra/launcher=ray", "hardware.gpus_per_job=2"], return_hydra_config=True)
    assert OmegaConf.select(ray, "hydra.launcher.ray.remote.num_gpus") == 2
    slurm = compose_raw(["hydra/launcher=slurm", "hardware.gpus_per_job=4"], return_hydra_config=True)
    assert OmegaConf.select(slurm, "hydra.launcher.gpus_per_node") == 4
    assert "SlurmLauncher" in OmegaConf.select(slurm, "hydra.launcher._target_")
    optuna = compose_raw(["hydra/sweeper=optuna-search"], return_hydra_config=True)
    assert OmegaConf.select(optuna, "hydra.sweeper.direction") == "minimize"
    assert set(OmegaConf.select(optuna, "hydra.sweeper.params")) == {
        "lora.r",
        "train.learning_rate",
        "train.epochs",
    }


def test_a_failed_job_survives_the_trip_back_from_a_ray_or_slurm_worker() -> None:
    import pickle

    from trainer.errors import JobFailed

    failed = pickle.loads(pickle.dumps(JobFailed(4, "quality gate failed: gptq-w4g128")))
    assert (failed.exit_code, failed.reason) == (4, "quality gate failed: gptq-w4g128")
    assert str(failed) == "exit 4: quality gate failed: gptq-w4g128"
