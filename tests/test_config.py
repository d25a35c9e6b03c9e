"""Config composition, the schema's type checks and the semantic checks, each naming the key."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ASSETS, REPO, compose_raw, compose_typed, run_trainer
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from trainer.config import CalibrationSource, MergeBase, Policy, Stage
from trainer.errors import ConfigError


def test_default_recipe_composes_to_the_embedded_assets() -> None:
    cfg = compose_typed(["recipe=support-fr"])
    assert cfg.name == "support-fr"
    assert Path(cfg.model.name_or_path) == ASSETS / "tiny-base"
    assert Path(cfg.data.path) == ASSETS / "support-fr" / "train.jsonl"
    assert cfg.data.calibration.source is CalibrationSource.train
    assert cfg.data.calibration.samples == 128
    assert cfg.merge.base is MergeBase.auto
    assert cfg.stages == list(Stage)
    assert cfg.data.on_problem["too_long"] is Policy.drop
    assert set(cfg.quantize.enabled) <= set(cfg.quantize.artifacts)


def test_recipe_overrides_group_defaults() -> None:
    # the recipe sets a learning rate and a rank other than conf/train/ and conf/lora/default.yaml's
    composed = compose_typed([])
    assert composed.train.learning_rate == 3.0e-3 and composed.lora.r == 64
    assert compose_typed(["train.learning_rate=0.5"]).train.learning_rate == 0.5


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.pathh=x.jsonl", "pathh"),
        ("+lora.rank=8", "rank"),
        ("train.learnig_rate=1e-4", "learnig_rate"),
    ],
)
def test_misspelled_key_fails_naming_it(override: str, key: str) -> None:
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ConfigError)) as caught:
        compose_typed([override])
    assert key in str(caught.value) + str(caught.value.__cause__)


@pytest.mark.parametrize(
    ("override", "key", "hint"),
    [
        ("train.batch_size=eight", "batch_size", "eight"),
        ("merge.base=median", "base", "original"),
        ("data.calibration.source=web", "source", "train"),
        ("data.on_problem.too_long=ignore", "too_long", "drop"),
        ("lora.use_dora=maybe", "use_dora", "maybe"),
    ],
)
def test_wrong_type_or_enum_fails_naming_key_and_allowed(override: str, key: str, hint: str) -> None:
    with pytest.raises((ConfigCompositionException, ValidationError)) as caught:
        compose_raw([override])
    message = str(caught.value) + str(caught.value.__cause__)
    assert key in message
    assert hint in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.eval_fraction=1.5", "data.eval_fraction"),
        ("data.eval_size=0", "data.eval_size"),
        ("data.max_length=0", "data.max_length"),
        ("+data.on_problem.too_short=drop", "data.on_problem"),
        ("data.calibration.samples=0", "data.calibration.samples"),
        ("data.calibration.max_tokens=-1", "data.calibration.max_tokens"),
        ("data.calibration.generic_fraction=2", "data.calibration.generic_fraction"),
        ("lora.r=0", "lora.r"),
        ("lora.dropout=1.0", "lora.dropout"),
        ("lora.target_modules=[]", "lora.target_modules"),
        ("train.learning_rate=0", "train.learning_rate"),
        ("train.modules_to_save_learning_rate=0", "train.modules_to_save_learning_rate"),
        ("train.modules_to_save_learning_rate=-1e-4", "train.modules_to_save_learning_rate"),
        (
            "train.modules_to_save_learning_rate=5e-4 lora.modules_to_save=[]",
            "train.modules_to_save_learning_rate",
        ),
        ("train.batch_size=0", "train.batch_size"),
        ("train.gradient_accumulation_steps=0", "train.gradient_accumulation_steps"),
        ("train.pad_to_multiple_of=0", "train.pad_to_multiple_of"),
        ("train.qlora.quant_type=int3", "train.qlora.quant_type"),
        ("quantize.enabled=[gptq-w3]", "quantize.enabled"),
        ("stages=[]", "stages"),
        ("eval.gates.max_ppl_delta_pct=-1", "eval.gates.max_ppl_delta_pct"),
    ],
)
def test_semantic_check_names_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compose_typed(override.split())
    assert str(caught.value).startswith(key)


def test_missing_mandatory_value_names_it() -> None:
    with pytest.raises(ConfigError, match="name_or_path"):
        compose_typed(["model.name_or_path=???"])


def test_cfg_job_prints_the_composed_config(tmp_path: Path) -> None:
    result = run_trainer(["recipe=support-fr", "lora.r=4", "--cfg", "job"], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "name: support-fr" in result.stdout
    assert "r: 4" in result.stdout
    assert "calibration:" in result.stdout
    assert not (tmp_path / "runs").exists()


def _write_user_recipe(root: Path) -> None:
    (root / "recipe").mkdir(parents=True)
    (root / "recipe" / "my-support.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /model: tiny-base\n"
        "name: my-support\nlora:\n  r: 4\ndata:\n  calibration:\n    samples: 16\n"
    )


def test_user_recipe_outside_the_repo_with_config_dir(tmp_path: Path) -> None:
    _write_user_recipe(tmp_path / "mine")
    result = run_trainer(
        ["--config-dir", str(tmp_path / "mine"), "recipe=my-support", "--cfg", "job"],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "name: my-support" in result.stdout
    assert "samples: 16" in result.stdout


def test_user_recipe_outside_the_repo_with_searchpath(tmp_path: Path) -> None:
    _write_user_recipe(tmp_path / "mine")
    result = run_trainer(
        [f"hydra.searchpath=[file://{tmp_path / 'mine'}]", "recipe=my-support", "--cfg", "job"],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "name: my-support" in result.stdout


def test_every_shipped_recipe_and_model_preset_composes() -> None:
    for recipe in sorted((REPO / "recipes").glob("*.yaml")):
        compose_typed([f"recipe={recipe.stem}"])
    for preset in sorted((REPO / "conf" / "model").glob("*.yaml")):
        assert compose_typed([f"model={preset.stem}"]).model.name_or_path


@pytest.mark.parametrize("preset", sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml")))
def test_each_model_preset_composes_on_the_command_line_and_names_its_twin(
    preset: str, tmp_path: Path
) -> None:
    """`--cfg job` over the recipe, as a user checks a preset; its header names the family twin that
    docs/FAMILIES.md's matrix runs for it, and a template without a system role folds it."""
    sys.path.insert(0, str(REPO / "scripts"))
    from build_family_twins import FAMILIES

    text = (REPO / "conf" / "model" / f"{preset}.yaml").read_text()
    family = re.search(r"^# family: (\S+)", text, re.MULTILINE)
    assert family and family.group(1) in FAMILIES, f"{preset}.yaml names no family twin"
    result = run_trainer(["recipe=support-fr", f"model={preset}", "--cfg", "job"], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load(result.stdout)
    assert job["model"]["name_or_path"]
    assert job["data"]["fold_system"] is (family.group(1) in ("gemma2", "mistral", "mixtral"))


def test_hub_preset_fails_offline_with_a_clear_message(tmp_path: Path) -> None:
    result = run_trainer(
        ["model=qwen2.5-0.5b-instruct", "stages=[data]", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "model.name_or_path='Qwen/Qwen2.5-0.5B-Instruct'" in result.stdout
    assert "hub" in result.stdout
    assert not (tmp_path / "run" / "data").exists()


def test_the_recipes_eval_sample_follows_its_eval_file_not_a_users_own_data() -> None:
    """support-fr scores a seeded 120 of its 240 held-out conversations; a user who drops the eval
    file (data.eval_path=null) gets data.eval_fraction of their own file, not 120 rows of it."""
    assert compose_typed(["recipe=support-fr"]).data.eval_size == 120
    assert compose_typed(["recipe=support-fr", "data.eval_path=null"]).data.eval_size is None
    assert (
        compose_typed(["recipe=support-fr", "data.eval_path=null", "data.eval_size=50"]).data.eval_size == 50
    )
