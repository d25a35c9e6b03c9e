"""Hostile or oversized inputs: pickle weights, names that are paths, a disk too small to write on."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from conftest import ASSETS, compose_raw, compose_typed, run_trainer
from omegaconf import open_dict
from reliability import record
from safetensors.torch import load_file

from trainer.config import ArtifactConfig, ModelConfig, QuantFormat, to_typed
from trainer.disk import merged_bytes, parameter_count, quantized_bytes, require_free
from trainer.errors import ConfigError, TrainerError
from trainer.modeling import check_base_weights

pytestmark = pytest.mark.reliability

TINY = ASSETS / "tiny-base"


def pickled_copy(folder: Path, state: object | None = None) -> Path:
    """The tiny base with its weights as `pytorch_model.bin` instead of safetensors."""
    folder.mkdir()
    for file in TINY.iterdir():
        if file.suffix != ".safetensors":
            shutil.copy2(file, folder / file.name)
    torch.save(
        load_file(TINY / "model.safetensors") if state is None else state, folder / "pytorch_model.bin"
    )
    return folder


def test_pickle_weights_are_refused_before_any_stage(tmp_path: Path) -> None:
    model = pickled_copy(tmp_path / "pickled")
    run_dir = tmp_path / "run"
    result = run_trainer(
        [f"model.name_or_path={model}", "stages=[data]", f"hydra.run.dir={run_dir}"], cwd=tmp_path
    )
    assert result.returncode == 2
    assert "holds only pickle weights (pytorch_model.bin)" in result.stdout
    assert "model.allow_pickle=true" in result.stdout
    assert not (run_dir / "data").exists()
    record("security", "a base model with only pickle weights (.bin)", "refused before any stage, exit 2")


def test_allowed_pickle_weights_become_a_safetensors_copy(tmp_path: Path) -> None:
    model = pickled_copy(tmp_path / "pickled")
    spec = ModelConfig(name_or_path=str(model), allow_pickle=True)
    check_base_weights(spec, str(tmp_path / "cache"))
    converted = Path(spec.name_or_path)
    assert converted.parent == tmp_path / "cache" / "models" and (converted / "model.safetensors").exists()
    original, copy = load_file(TINY / "model.safetensors"), load_file(converted / "model.safetensors")
    assert original.keys() == copy.keys() and all(torch.equal(original[k], copy[k]) for k in original)
    assert (converted / "tokenizer.model").exists() and not list(converted.glob("*.bin"))
    again = ModelConfig(name_or_path=str(model), allow_pickle=True)
    check_base_weights(again, str(tmp_path / "cache"))
    assert again.name_or_path == spec.name_or_path  # converted once
    record(
        "security",
        "pickle weights with model.allow_pickle=true",
        "converted once to safetensors, same tensors",
    )


class RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_pickle_is_refused_even_when_pickles_are_allowed(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    model = pickled_copy(tmp_path / "hostile", state={"weight": RunsCode(marker)})
    spec = ModelConfig(name_or_path=str(model), allow_pickle=True)
    with pytest.raises(
        ConfigError, match=r"is not a plain tensor checkpoint, refused by torch.load\(weights_only=True\)"
    ):
        check_base_weights(spec, str(tmp_path / "cache"))
    assert not marker.exists()
    assert not [p for p in (tmp_path / "cache" / "models").iterdir()]  # no half-converted copy
    record("security", "a pickle whose unpickling runs a shell command", "refused; the command never runs")


@pytest.mark.parametrize("name", ["../escape", "/abs", ".hidden", "a/b"])
def test_artifact_names_cannot_be_paths(name: str) -> None:
    raw = compose_raw()  # a recipe file can hold any key; the command line's grammar could not say these
    with open_dict(raw):
        raw.quantize.artifacts[name] = ArtifactConfig(format=QuantFormat.gguf)
    with pytest.raises(ConfigError, match=rf"quantize.artifacts.{re.escape(name)}: .* is not a plain name"):
        to_typed(raw)
    record(
        "security",
        "an artifact name that is a path (../, /, .x, a/b)",
        "refused: names are plain folder names",
    )


def test_remote_code_stays_off_by_default() -> None:
    assert compose_typed().model.trust_remote_code is False
    record("security", "the default config", "trust_remote_code off")


def test_size_estimates_follow_the_checkpoint() -> None:
    params = parameter_count(TINY)
    assert params == 8_130_816
    assert merged_bytes(TINY, 2) == 4 * params  # two bf16 candidates with merge.base=auto
    assert quantized_bytes(TINY, [4, 4], ggufs=1) == 2 * (params * 5 // 8) + 2 * params
    record("disk", "the size of each large write, read from safetensors headers", "estimated before writing")


def test_a_disk_too_small_stops_before_the_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, (10 << 30) - (80 << 20), 80 << 20))
    target = tmp_path / ".merge.partial"
    with pytest.raises(TrainerError) as error:
        require_free(target, merged_bytes(TINY, 2), "the merge")
    message = str(error.value)
    assert "not enough free disk for the merge" in message and str(target) in message
    assert "0.08 GiB free" in message and "hydra.run.dir" in message
    require_free(target, 1 << 20, "a small write")  # 1 MiB (+ 64 MiB slack) fits in 80 MiB
    record(
        "disk",
        "80 MiB free before a merge that writes 31 MiB plus the margin",
        "stops before writing, naming sizes and the fix",
    )


def test_secrets_in_the_environment_reach_no_file_of_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {"HF_TOKEN": "hf_SENTINELsecret0123456789", "WANDB_API_KEY": "wandbSENTINEL0123456789"}
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    run_dir = tmp_path / "run"
    result = run_trainer(["stages=[data]", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files) and any(p.name == "trainer.log" for p in files)
    for path in files:
        content = path.read_bytes()
        for value in secrets.values():
            assert value.encode() not in content, path
    assert all(v not in result.stdout + result.stderr for v in secrets.values())
    summary = json.loads((run_dir / "data" / "DONE.json").read_text())
    assert summary["stage"] == "data"
    record(
        "security",
        "HF_TOKEN and WANDB_API_KEY set in the environment",
        "in no file of the run dir, nor the output",
    )


def test_a_run_name_cannot_lead_out_of_the_runs_folder(tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    result = run_trainer(["name=../escape", "stages=[data]"], cwd=cwd)
    assert result.returncode == 2
    assert "name: '../escape' must be a plain folder name" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "escape").exists() and not (cwd / "runs").exists()  # Hydra made no folder either
    record("security", "name=../escape (the run dir is runs/<name>)", "exit 2 before Hydra makes any folder")


def test_a_dataset_folder_cannot_link_to_data_outside_it(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
    )
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "part.jsonl").symlink_to(outside)
    run_dir = tmp_path / "run"
    result = run_trainer(
        [f"data.path={folder}", "data.eval_path=null", "stages=[data]", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert f"{folder / 'part.jsonl'}: a link to {outside}, outside the folder {folder}" in result.stdout
    assert not (run_dir / "data").exists()
    record(
        "security",
        "a dataset folder holding a symlink to a file outside it",
        "refused naming the link, exit 2",
    )
