"""The quantize stage: settings refused before any work, and real GPTQ/AWQ from the run's calibration set."""

from __future__ import annotations

import json

import pytest
from conftest import ASSETS

from trainer.config import ArtifactConfig, QuantFormat
from trainer.errors import ConfigError
from trainer.families import read_facts
from trainer.stages import quantize as quantize_stage

FACTS = read_facts(ASSETS / "tiny-base")


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
        quantize_stage.check_artifact("x", spec, FACTS, calibration_tokens=100_000)
    assert str(caught.value).startswith("quantize.artifacts.x.")


def test_too_few_calibration_tokens_names_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"holds 100 tokens.*data.calibration.samples"):
        quantize_stage.check_artifact(
            "x", ArtifactConfig(format=QuantFormat.gptq), FACTS, calibration_tokens=100
        )


def test_valid_settings_pass() -> None:
    for spec in (
        ArtifactConfig(format=QuantFormat.gptq, bits=4, group_size=128),
        ArtifactConfig(format=QuantFormat.gptq, bits=8, group_size=-1, desc_act=True),
        ArtifactConfig(format=QuantFormat.awq, bits=4, group_size=64, sym=False),
    ):
        quantize_stage.check_artifact("x", spec, FACTS, calibration_tokens=100_000)


def test_bad_gguf_settings_fail_before_quantizing() -> None:
    with pytest.raises(ConfigError, match=r"^quantize.artifacts.g.gguf_type: .*Q4_K_M"):
        quantize_stage.check_artifact(
            "g", ArtifactConfig(format=QuantFormat.gguf, gguf_type="Q4_K_Z"), FACTS, 100_000
        )
    with pytest.raises(ConfigError, match=r"^quantize.artifacts.g.gguf_type: .*imatrix"):
        quantize_stage.check_artifact(
            "g", ArtifactConfig(format=QuantFormat.gguf, gguf_type="IQ4_XS", imatrix=False), FACTS, 100_000
        )
    quantize_stage.check_artifact(
        "g", ArtifactConfig(format=QuantFormat.gguf, gguf_type="q5_k_m"), FACTS, 100_000
    )


@pytest.mark.slow
def test_train_and_generic_calibration_quantize_from_different_data(tmp_path) -> None:
    from conftest import compose_raw
    from rich.console import Console
    from safetensors.torch import load_file

    from trainer.config import to_typed
    from trainer.pipeline import StageContext
    from trainer.stages import data as data_stage

    infos, weights = {}, {}
    for source in ("train", "generic"):
        cfg = to_typed(compose_raw([f"data.calibration.source={source}", "data.calibration.samples=24"]))
        data_dir = tmp_path / source / "data"
        data_dir.mkdir(parents=True)
        data_stage.run(StageContext(cfg, tmp_path / source, data_dir, Console(quiet=True)))
        calibration, digest = quantize_stage.calibration_rows(data_dir)
        spec = cfg.quantize.artifacts["gptq-w4g128"]
        out = tmp_path / source / "gptq"
        infos[source] = quantize_stage.build(
            cfg, "gptq-w4g128", spec, ASSETS / "tiny-base", out, calibration, digest
        )
        weights[source] = load_file(out / "model.safetensors")
        saved = json.loads((out / "quantize_info.json").read_text())
        assert saved["calibration"]["sha256"] == digest
        assert saved["calibration"]["tokens"] == sum(len(ids) for ids in calibration)
    assert infos["train"]["calibration"]["sha256"] != infos["generic"]["calibration"]["sha256"]
    qweights = [k for k in weights["train"] if k.endswith("qweight")]
    assert qweights
    differing = [k for k in qweights if not (weights["train"][k] == weights["generic"][k]).all()]
    assert len(differing) > len(qweights) // 2


@pytest.mark.slow
def test_autoawq_backend_writes_a_standard_awq_checkpoint(tmp_path) -> None:
    from conftest import compose_raw
    from rich.console import Console
    from safetensors import safe_open

    from trainer.config import to_typed
    from trainer.pipeline import StageContext
    from trainer.runtimes import score_in_fresh_process
    from trainer.stages import data as data_stage

    # Few conversations, few scored: with 24 and all 240, quantizing took 113 s on 2 cores (AMD EPYC
    # Zen 3; 85 s of it AutoAWQ's clip search, whatever the count) and scoring 86 s.
    cfg = to_typed(compose_raw(["data.calibration.samples=8"]))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_stage.run(StageContext(cfg, tmp_path, data_dir, Console(quiet=True)))
    calibration, digest = quantize_stage.calibration_rows(data_dir)
    spec = cfg.quantize.artifacts["awq-w4g128-autoawq"]
    out = tmp_path / "awq"
    quantize_stage.build(cfg, "awq-w4g128-autoawq", spec, ASSETS / "tiny-base", out, calibration, digest)
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (
        config["quant_method"] == "awq"
        and config["zero_point"] is True
        and config["version"].lower() == "gemm"
    )
    weights = list(out.glob("*.safetensors"))
    assert weights and all(p.stat().st_mode & 0o044 == 0o044 for p in weights)
    # Searched in float32 where bf16 is emulated, stored as the model it started from holds them.
    with safe_open(weights[0], "pt") as handle:
        dtypes = {handle.get_slice(key).get_dtype() for key in handle.keys()}  # noqa: SIM118
    assert "F32" not in dtypes and "BF16" in dtypes, dtypes
    assert (out / "tokenizer_config.json").exists()
    eval_jsonl = tmp_path / "eval.jsonl"
    rows = (ASSETS / "support-fr" / "eval.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    eval_jsonl.write_text("".join(rows[:24]), encoding="utf-8")
    quantized = score_in_fresh_process("gptqmodel", out, eval_jsonl, samples=1, max_new_tokens=8)
    reference = score_in_fresh_process("transformers", ASSETS / "tiny-base", eval_jsonl, samples=0)
    assert quantized["tokens"] == reference["tokens"]
    # 4-bit AWQ of the model it started from: close to it, where a broken checkpoint lands far away
    assert abs(quantized["nll"] - reference["nll"]) < 0.02 * reference["nll"], (
        quantized["nll"],
        reference["nll"],
    )


def test_gptq_floats_computed_in_float32_are_stored_as_the_merged_model_was(tmp_path) -> None:
    """On a CPU without native bf16 GPTQ calibrates in float32; the artifact must not ship float32 weights."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors = {
        "model.embed_tokens.weight": torch.randn(8, 4),
        "model.layers.0.mlp.up_proj.qweight": torch.zeros(2, 4, dtype=torch.int32),
        "model.layers.0.mlp.up_proj.scales": torch.ones(1, 4, dtype=torch.float16),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "float32", "model_type": "llama"}))

    quantize_stage.store_floats_as(tmp_path, "bfloat16")

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        assert handle.metadata() == {"format": "pt"}
        stored = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    assert stored["model.embed_tokens.weight"].dtype is torch.bfloat16
    assert torch.equal(stored["model.embed_tokens.weight"], tensors["model.embed_tokens.weight"].bfloat16())
    assert stored["model.layers.0.mlp.up_proj.qweight"].dtype is torch.int32
    assert stored["model.layers.0.mlp.up_proj.scales"].dtype is torch.float16
    assert json.loads((tmp_path / "config.json").read_text()) == {"dtype": "bfloat16", "model_type": "llama"}
