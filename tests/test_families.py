"""Model families: layer facts read from the checkpoint, and what is refused before any training.

The twins come from scripts/build_family_twins.py (random weights, each family's own transformers
classes, chat format and tokenizer kind), built once for the module.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import ASSETS, REPO

from trainer.config import ArtifactConfig, QuantFormat
from trainer.conversations import Conversation, fold_system
from trainer.errors import ConfigError, DataValidationError, TrainerError
from trainer.families import check_artifact_for_model, read_facts

sys.path.insert(0, str(REPO / "scripts"))
from build_family_twins import FAMILIES, build_twin


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("twins")
    return {name: build_twin(family, root / name) for name, family in FAMILIES.items()}


def test_facts_of_the_tiny_base_come_from_its_files() -> None:
    facts = read_facts(ASSETS / "tiny-base")
    assert facts.architecture == "LlamaForCausalLM" and facts.model_type == "llama"
    assert facts.linear_inputs["mlp.down_proj"] == (768,)
    assert facts.linear_inputs["self_attn.q_proj"] == (256,)
    assert not facts.tied_embeddings and facts.experts == 0


def test_facts_follow_each_family_s_own_layout(twins: dict[str, Path]) -> None:
    phi3 = read_facts(twins["phi3"])
    assert {"self_attn.qkv_proj", "mlp.gate_up_proj", "mlp.down_proj"} <= set(phi3.linear_inputs)
    assert "self_attn.q_proj" not in phi3.linear_inputs
    assert read_facts(twins["gemma2"]).tied_embeddings and read_facts(twins["qwen2"]).tied_embeddings
    assert not read_facts(twins["mistral"]).tied_embeddings
    mixtral = read_facts(twins["mixtral"])
    assert mixtral.experts == 4
    # One entry per kind of expert linear, not one per expert.
    assert [k for k in mixtral.linear_inputs if "experts" in k] == [
        "block_sparse_moe.experts.w1",
        "block_sparse_moe.experts.w2",
        "block_sparse_moe.experts.w3",
    ]


def test_group_size_is_checked_against_the_fused_layers_too(twins: dict[str, Path]) -> None:
    facts = read_facts(twins["phi3"])
    check_artifact_for_model("g", ArtifactConfig(format=QuantFormat.gptq, group_size=128), facts)
    with pytest.raises(ConfigError, match=r"^quantize.artifacts.g.group_size=96 does not divide .* of mlp\."):
        check_artifact_for_model("g", ArtifactConfig(format=QuantFormat.gptq, group_size=96), facts)


def test_a_mixture_s_importance_matrix_is_refused_and_its_plain_gguf_is_not(twins: dict[str, Path]) -> None:
    facts = read_facts(twins["mixtral"])
    with pytest.raises(ConfigError, match=r"^quantize.artifacts.g.imatrix=true: .* mixture of 4 experts"):
        check_artifact_for_model(
            "g", ArtifactConfig(format=QuantFormat.gguf, gguf_type="Q4_K_M", imatrix=True), facts
        )
    check_artifact_for_model(
        "g", ArtifactConfig(format=QuantFormat.gguf, gguf_type="Q4_K_M", imatrix=False), facts
    )
    dense = read_facts(twins["mistral"])
    check_artifact_for_model(
        "g", ArtifactConfig(format=QuantFormat.gguf, gguf_type="Q4_K_M", imatrix=True), dense
    )


def test_a_quantizer_known_to_fail_on_a_family_is_refused_naming_why(twins: dict[str, Path]) -> None:
    awq = ArtifactConfig(format=QuantFormat.awq, bits=4, group_size=128, sym=False)
    with pytest.raises(
        ConfigError, match=r"^quantize.artifacts.a: awq through gptqmodel .* Phi3ForCausalLM: .*q_zeros"
    ):
        check_artifact_for_model("a", awq, read_facts(twins["phi3"]))
    check_artifact_for_model("a", awq, read_facts(twins["mistral"]))


def test_fold_system_opens_the_first_user_message() -> None:
    messages = [
        {"role": "system", "content": "Tu es le support."},
        {"role": "user", "content": "Bonjour"},
        {"role": "assistant", "content": "Salut"},
    ]
    assert fold_system(messages) == [
        {"role": "user", "content": "Tu es le support.\n\nBonjour"},
        {"role": "assistant", "content": "Salut"},
    ]
    assert fold_system(messages[1:]) == messages[1:]


@pytest.mark.parametrize("family", ["gemma2", "mistral"])
def test_a_template_without_a_system_role_names_the_row_and_the_fix(
    twins: dict[str, Path], family: str
) -> None:
    from transformers import AutoTokenizer

    from trainer.stages.data import render

    tokenizer = AutoTokenizer.from_pretrained(twins[family])
    rows = [
        Conversation(
            "train.jsonl:3",
            [
                {"role": "system", "content": "Tu es le support."},
                {"role": "user", "content": "Bonjour"},
                {"role": "assistant", "content": "Salut"},
            ],
        )
    ]
    with pytest.raises(DataValidationError, match=r"^train.jsonl:3: .*refuses.*data.fold_system=true"):
        render(tokenizer, rows)
    folded = render(tokenizer, [Conversation(r.where, fold_system(r.messages)) for r in rows])
    assert "Tu es le support.\n\nBonjour" in folded[0]


def test_tied_head_is_merged_as_the_embeddings_only_when_it_is_them() -> None:
    import torch

    from trainer.stages.merge import tied_head_copy

    embeddings = torch.randn(8, 4)
    replaced = {"model.embed_tokens.weight": embeddings, "lm_head.weight": embeddings.clone()}
    assert tied_head_copy({"lm_head.weight"}, replaced) == {"lm_head.weight"}
    replaced["lm_head.weight"] = embeddings + 1
    with pytest.raises(TrainerError, match="ties them"):
        tied_head_copy({"lm_head.weight"}, replaced)


@pytest.mark.slow
def test_every_family_has_gguf_names_for_its_linears(twins: dict[str, Path]) -> None:
    """Gemma's tied head has no llama.cpp tensor name; it is the embeddings and is skipped."""
    from trainer.gguf import check_tensor_names

    for path in twins.values():
        check_tensor_names(path)


@pytest.mark.slow
def test_bpe_pre_tokenizer_is_named_by_the_user_and_verified(twins: dict[str, Path]) -> None:
    from trainer.gguf import check_vocabulary

    with pytest.raises(
        ConfigError, match=r"does not recognise the BPE pre-tokenizer.*model.gguf_pre_tokenizer"
    ):
        check_vocabulary(twins["qwen2"])
    assert check_vocabulary(twins["qwen2"], "qwen2") > 0
    assert check_vocabulary(twins["llama3"], "llama-bpe") > 0


def test_a_group_size_the_layers_refuse_stops_the_run_before_its_first_stage(tmp_path: Path) -> None:
    from conftest import run_trainer

    run_dir = tmp_path / "run"
    result = run_trainer(
        ["recipe=support-fr", "quantize.artifacts.gptq-w4g128.group_size=96", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 2, result.stdout[-2000:]
    assert "quantize.artifacts.gptq-w4g128.group_size=96 does not divide the input size 256" in result.stdout
    assert not (run_dir / "data").exists()


def test_a_pre_tokenizer_llama_cpp_does_not_know_is_refused_at_config_time() -> None:
    from conftest import compose_typed

    with pytest.raises(
        ConfigError, match=r"^model.gguf_pre_tokenizer: 'qwen-2' is no pre-tokenizer .* qwen2"
    ):
        compose_typed(["recipe=support-fr", "model.gguf_pre_tokenizer=qwen-2"])
    assert (
        compose_typed(["recipe=support-fr", "model.gguf_pre_tokenizer=qwen2"]).model.gguf_pre_tokenizer
        == "qwen2"
    )


def test_a_base_passes_the_gguf_checks_once_per_tokenizer_settings_and_versions(tmp_path: Path) -> None:
    import dataclasses
    import shutil

    from conftest import compose_typed

    from trainer.pipeline import gguf_check_record

    base = tmp_path / "base"
    shutil.copytree(ASSETS / "tiny-base", base)
    cfg = compose_typed(["recipe=support-fr"])
    cfg = dataclasses.replace(cfg, cache_dir=str(tmp_path / "cache"))
    record = gguf_check_record(base, cfg, imatrix=True)
    assert record is not None and record.parent == tmp_path / "cache" / "gguf-checks"
    (base / "model.safetensors").write_bytes(b"other weights")  # the checks read no weight
    assert gguf_check_record(base, cfg, imatrix=True) == record
    assert gguf_check_record(base, cfg, imatrix=False) != record
    named = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, gguf_pre_tokenizer="llama-bpe"))
    assert gguf_check_record(base, named, imatrix=True) != record
    (base / "tokenizer_config.json").write_text("{}")
    assert gguf_check_record(base, cfg, imatrix=True) != record
    assert gguf_check_record(base, dataclasses.replace(cfg, cache_dir=None), imatrix=True) is None
