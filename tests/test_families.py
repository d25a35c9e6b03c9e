"""Model families: layer facts read from the checkpoint, and what is refused before any training.

The twins come from scripts/build_family_twins.py (random weights, each family's own transformers
classes, chat format and tokenizer kind), built once for the module.
"""

from __future__ import annotations

import json
import os
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


def test_a_mixture_s_importance_matrix_holds_a_row_per_expert_from_the_tokens_routed_to_it(
    twins: dict[str, Path], tmp_path: Path
) -> None:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.gguf import compute_imatrix, load_imatrix, save_imatrix

    twin = twins["mixtral"]
    tokenizer = AutoTokenizer.from_pretrained(twin)
    texts = ["Bonjour, ma commande CMD-123 n'est pas arrivée.", "Où est ma facture ?", "Merci beaucoup"]
    calibration = [tokenizer(text)["input_ids"] for text in texts]
    imatrix = compute_imatrix(twin, calibration, batch_size=2)
    model = AutoModelForCausalLM.from_pretrained(twin, dtype=torch.float32)
    config = model.config
    tokens = sum(map(len, calibration))
    for layer in range(config.num_hidden_layers):
        gate, up, down = (f"blk.{layer}.ffn_{kind}_exps.weight" for kind in ("gate", "up", "down"))
        assert imatrix.means[gate].shape == (config.num_local_experts, config.hidden_size)
        assert imatrix.means[down].shape == (config.num_local_experts, config.intermediate_size)
        np.testing.assert_array_equal(imatrix.means[gate], imatrix.means[up])  # one input, the routed tokens
        # Each token went to its top-2 experts, padding to none.
        assert imatrix.counts[gate].sum() == config.num_experts_per_tok * tokens
        assert imatrix.counts[f"blk.{layer}.attn_q.weight"].tolist() == [tokens]
    # Layer 0's router and experts by hand, on the first sequence alone.
    single = compute_imatrix(twin, calibration[:1])
    seen = []
    handle = model.model.layers[0].mlp.register_forward_pre_hook(lambda _m, args: seen.append(args[0][0]))
    with torch.no_grad():
        model(torch.tensor([calibration[0]]))
        handle.remove()
        x = seen[0]
        chosen = model.model.layers[0].mlp.gate(x)[2]  # the router's top-2 per token
    routed = [(chosen == e).any(-1) for e in range(config.num_local_experts)]
    np.testing.assert_array_equal(single.counts["blk.0.ffn_gate_exps.weight"], [int(r.sum()) for r in routed])
    for expert, mask in enumerate(routed):
        if mask.any():
            manual = x[mask].double().pow(2).mean(0).numpy()
            np.testing.assert_allclose(single.means["blk.0.ffn_gate_exps.weight"][expert], manual, rtol=1e-4)
    # Once GPTQModel has loaded a mixture (the quantize stage's GPTQ and AWQ run first, in the same
    # process), transformers holds each expert as a linear layer of its own (GPTQModel's `defuser`
    # swaps the classes): the same rows, from hooks on those layers.
    import subprocess

    script = (
        "import sys, json, defuser, numpy as np\n"
        "defuser.replace_fused_blocks('mixtral')\n"
        "from pathlib import Path\n"
        "from trainer.gguf import compute_imatrix, gguf_expert_linear_names\n"
        "from transformers import AutoModelForCausalLM\n"
        "assert gguf_expert_linear_names(AutoModelForCausalLM.from_pretrained(sys.argv[1]))\n"
        "m = compute_imatrix(Path(sys.argv[1]), json.loads(sys.argv[2]))\n"
        "np.savez(sys.argv[3], **{k: v for k, v in m.means.items()}, **{k + '#': v for k, v in m.counts.items()})\n"
    )
    unfused_file = tmp_path / "unfused.npz"
    done = subprocess.run(
        [sys.executable, "-c", script, str(twin), json.dumps(calibration), str(unfused_file)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    unfused = np.load(unfused_file)
    for name, means in imatrix.means.items():
        np.testing.assert_allclose(unfused[name], means, rtol=1e-4, atol=1e-7, err_msg=name)
        np.testing.assert_array_equal(unfused[name + "#"], imatrix.counts[name])
    # The file keeps a row and a count per expert, as llama.cpp's imatrix files do.
    path = tmp_path / "imatrix.gguf"
    save_imatrix(path, imatrix, {"sequences": 3, "max_tokens": 20}, tokens)
    loaded = load_imatrix(path)
    for name, means in imatrix.means.items():
        np.testing.assert_allclose(loaded.means[name], means, rtol=1e-5)
        np.testing.assert_array_equal(loaded.counts[name], imatrix.counts[name])
    # llama.cpp's quantizer takes the rows (a wrong size is an error there) and weighs each expert
    # with its own: the expert tensors quantize differently with the matrix than without it.
    import gguf

    from trainer.gguf import convert_to_f16, quantize_gguf

    f16 = tmp_path / "f16.gguf"
    convert_to_f16(twin, f16)
    files = {}
    for label, means in (("plain", None), ("weighted", imatrix.means)):
        files[label] = tmp_path / f"{label}.gguf"
        quantize_gguf(f16, files[label], "Q4_K_M", means, {})
    tensors = {
        label: {t.name: bytes(t.data) for t in gguf.GGUFReader(str(path)).tensors}
        for label, path in files.items()
    }
    for kind in ("gate", "up", "down"):
        name = f"blk.1.ffn_{kind}_exps.weight"
        assert tensors["plain"][name] != tensors["weighted"][name], name


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


def test_a_mixture_s_experts_with_lora_dropout_are_refused_before_training(twins: dict[str, Path]) -> None:
    from conftest import compose_typed

    from trainer.families import check_base

    args = [
        "recipe=support-fr",
        f"model.name_or_path={twins['mixtral']}",
        "quantize.enabled=[gptq-w4g128]",
        "lora.dropout=0.05",  # the recipe trains without dropout; a user's sweep may not
    ]
    with pytest.raises(
        ConfigError, match=r"^lora.dropout=0.05: .* mixture of 4 experts.* set lora.dropout=0"
    ):
        check_base(compose_typed(args))
    assert check_base(compose_typed([*args, "lora.dropout=0"])) == twins["mixtral"]
    assert check_base(compose_typed([*args, "lora.target_modules=[q_proj,v_proj]"])) == twins["mixtral"]
    preset = compose_typed(["recipe=support-fr", "model=mixtral-8x7b-instruct-v0.1"])
    assert preset.lora.dropout == 0
