"""The merge stage: merged logits equal the PEFT model's, for both bases and each LoRA variant.

Adapters here are created with random A and B (peft's `init_lora_weights=False`) rather than
trained: the merge arithmetic is under test, and a zero B would make every check vacuous.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ASSETS

from trainer.config import MergeBase
from trainer.stages import merge as merge_stage

pytestmark = pytest.mark.slow

TINY = ASSETS / "tiny-base"
TEXT = (
    "<s><|user|>\nBonjour, où est ma commande CMD-123456 ?<|end|>\n<|assistant|>\nElle arrive jeudi.<|end|>\n"
)
# Merged weights are stored in bf16: the rounding of W + s·BA moves logits by about this much.
ATOL = 0.08


def make_adapter(folder: Path, **lora_kwargs) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, **lora_kwargs
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                param.mul_(0.5)
            if "modules_to_save" in name:
                param.add_(torch.randn_like(param) * 0.02)
    peft_model.save_pretrained(folder)
    return folder


def all_linear_names() -> list[str]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(TINY)
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]


def logits_of(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(TEXT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def merged(tmp_path: Path, adapter: Path, base: MergeBase, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    out = tmp_path / f"merged-{base.value}"
    merge_stage.merge_into(TINY, adapter, out, base, set(all_linear_names()), dtype, "nf4", True)
    (out / "config.json").write_text((TINY / "config.json").read_text())
    return AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY)


@pytest.mark.parametrize(
    "variant", [{}, {"use_rslora": True}, {"use_dora": True}, {"modules_to_save": ["lm_head"]}], ids=str
)
def test_original_merge_matches_peft_on_the_bf16_base(tmp_path: Path, tokenizer, variant) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = make_adapter(tmp_path / "adapter", **variant)
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32), adapter
    )
    expected = logits_of(reference, tokenizer)
    base_only = logits_of(AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32), tokenizer)
    got = logits_of(merged(tmp_path, adapter, MergeBase.original), tokenizer)
    assert (expected - base_only).abs().max() > 20 * ATOL  # the adapter really changes the model
    assert (got - expected).abs().max() < ATOL


def test_dequantized_merge_matches_peft_on_the_nf4_base(tmp_path: Path, tokenizer) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    adapter = make_adapter(tmp_path / "adapter")
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    nf4 = AutoModelForCausalLM.from_pretrained(
        TINY, quantization_config=quantization, dtype=torch.float32, device_map={"": "cpu"}
    )
    expected = logits_of(PeftModel.from_pretrained(nf4, adapter), tokenizer)
    dequantized = logits_of(merged(tmp_path, adapter, MergeBase.dequantized), tokenizer)
    original = logits_of(merged(tmp_path, adapter, MergeBase.original), tokenizer)
    assert (dequantized - expected).abs().max() < ATOL
    # the other base is measurably further from what the adapter was trained against
    assert (original - expected).abs().max() > 2 * (dequantized - expected).abs().max()


def test_nf4_rebuild_is_bit_identical_to_the_4bit_load_in_bf16() -> None:
    import bitsandbytes.functional as bnbf
    from bitsandbytes.nn import Linear4bit
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    nf4 = AutoModelForCausalLM.from_pretrained(
        TINY, quantization_config=quantization, dtype=torch.bfloat16, device_map={"": "cpu"}
    )
    layers = {n: m for n, m in nf4.named_modules() if isinstance(m, Linear4bit)}
    assert len(layers) == len(all_linear_names())
    with safe_open(TINY / "model.safetensors", framework="pt") as handle:
        for name, layer in layers.items():
            loaded = bnbf.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
            rebuilt = merge_stage.nf4_roundtrip(
                handle.get_tensor(f"{name}.weight").to(torch.bfloat16), "nf4", True
            )
            assert torch.equal(loaded, rebuilt), name


def test_merged_checkpoint_is_a_plain_hf_model(tmp_path: Path, tokenizer) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = make_adapter(tmp_path / "adapter")
    tokenizer.save_pretrained(adapter)
    out = tmp_path / "out"
    merge_stage.merge_into(
        TINY, adapter, out, MergeBase.original, set(all_linear_names()), torch.bfloat16, "nf4", True
    )
    merge_stage.write_model_files(TINY, adapter, out)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    assert not any("lora" in name for name, _ in model.named_parameters())
    reloaded = AutoTokenizer.from_pretrained(out)
    assert reloaded.chat_template == tokenizer.chat_template
    generation = json.loads((out / "generation_config.json").read_text())
    eos = generation["eos_token_id"]
    assert tokenizer.eos_token_id in (eos if isinstance(eos, list) else [eos])


def test_sharded_base_streams_shard_by_shard(tmp_path: Path, tokenizer) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(TINY).save_pretrained(sharded, max_shard_size="4MB")
    shards = sorted(p.name for p in sharded.glob("*.safetensors"))
    assert len(shards) > 2
    adapter = make_adapter(tmp_path / "adapter")
    out = tmp_path / "out"
    merge_stage.merge_into(
        sharded, adapter, out, MergeBase.original, set(all_linear_names()), torch.bfloat16, "nf4", True
    )
    (out / "config.json").write_text((sharded / "config.json").read_text())
    assert sorted(p.name for p in out.glob("*.safetensors")) == shards
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    expected = logits_of(
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32), adapter),
        tokenizer,
    )
    got = logits_of(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32), tokenizer)
    assert (got - expected).abs().max() < ATOL


def test_missing_safetensors_is_refused(tmp_path: Path) -> None:
    from trainer.config import ModelConfig
    from trainer.errors import TrainerError

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(TrainerError, match="pickle checkpoints"):
        merge_stage.base_checkpoint(ModelConfig(name_or_path=str(tmp_path)))
