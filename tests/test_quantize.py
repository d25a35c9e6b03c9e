"""The quantize stage: settings refused before any work, and real GPTQ/AWQ from the run's calibration set."""

from __future__ import annotations

import json

import pytest
from conftest import ASSETS

from trainer.config import ArtifactConfig, QuantFormat
from trainer.errors import ConfigError, StageNotBuilt
from trainer.stages import quantize as quantize_stage

CONFIG = json.loads((ASSETS / "tiny-base" / "config.json").read_text())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ArtifactConfig(format=QuantFormat.gptq, bits=5), r"bits=5: gptq supports \[2, 3, 4, 8\]"),
        (ArtifactConfig(format=QuantFormat.awq, bits=8), r"bits=8: awq supports \[4\]"),
        (
            ArtifactConfig(format=QuantFormat.gptq, group_size=96),
            r"group_size=96 does not divide the input size 256",
        ),
        (
            ArtifactConfig(format=QuantFormat.gptq, group_size=512),
            r"group_size=512 does not divide .* use one of",
        ),
        (ArtifactConfig(format=QuantFormat.gptq, group_size=0), r"group_size=0: use a positive size or -1"),
        (ArtifactConfig(format=QuantFormat.gptq, damp_percent=1.5), r"damp_percent=1.5"),
        (ArtifactConfig(format=QuantFormat.awq, desc_act=True), r"AWQ has no act-order"),
        (
            ArtifactConfig(format=QuantFormat.awq, backend="vllm"),
            r"backend='vllm': allowed gptqmodel, autoawq",
        ),
    ],
)
def test_invalid_settings_fail_before_quantizing(spec: ArtifactConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        quantize_stage.check_artifact("x", spec, CONFIG, calibration_tokens=100_000)
    assert str(caught.value).startswith("quantize.artifacts.x.")


def test_too_few_calibration_tokens_names_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"holds 100 tokens.*data.calibration.samples"):
        quantize_stage.check_artifact(
            "x", ArtifactConfig(format=QuantFormat.gptq), CONFIG, calibration_tokens=100
        )


def test_valid_settings_pass() -> None:
    for spec in (
        ArtifactConfig(format=QuantFormat.gptq, bits=4, group_size=128),
        ArtifactConfig(format=QuantFormat.gptq, bits=8, group_size=-1, desc_act=True),
        ArtifactConfig(format=QuantFormat.awq, bits=4, group_size=64, sym=False),
    ):
        quantize_stage.check_artifact("x", spec, CONFIG, calibration_tokens=100_000)


def test_gguf_is_not_built_yet_and_says_so() -> None:
    with pytest.raises(StageNotBuilt, match="issue #6"):
        quantize_stage.check_artifact("g", ArtifactConfig(format=QuantFormat.gguf), CONFIG, 100_000)
