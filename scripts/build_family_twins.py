"""Build small random-init twins of the model families users bring, for the family matrix.

No hub is reachable from the machines this project is built on, so the flow is checked on
checkpoints that reproduce each family's architecture and chat format with transformers' own
config and model classes: the family's attention and MLP layout, its tied or untied
embeddings, its norms and soft-capping, and a chat template that renders the family's turn
markers, stop token and system-role rule. The tokenizer is the family's kind: Qwen and Llama 3
get a byte-level BPE trained here with the family's pre-tokenizer split pattern and markers
(llama.cpp's converter does not recognise a locally trained BPE by its hash, so these twins
take the path of `model.gguf_pre_tokenizer`); the SentencePiece families get the embedded tiny
base's SentencePiece model with the family's markers added as special tokens. Weights are
random: the matrix checks that every stage runs and that every runtime serves the same tokens,
not what the model says.

    python scripts/build_family_twins.py --out /tmp/twins            # every family
    python scripts/build_family_twins.py --out /tmp/twins gemma2 phi3

Each twin is a folder usable as `model.name_or_path=`; `twin.json` in it names the family.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_BASE = REPO_ROOT / "trainer" / "assets" / "tiny-base"

# Small enough to train 40 steps in seconds, wide enough that every linear's input size is a
# multiple of 256 (GGUF K-quants) and of 128 (the default GPTQ/AWQ group size).
# The split patterns of the families' pre-tokenizers (as their tokenizer.json files declare them):
# letters with an optional leading non-letter, digits one at a time (Qwen) or up to three (Llama 3).
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
QWEN_SPLIT = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPLIT = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SHAPE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4}

CHATML = """{%- for message in messages -%}
    {%- if loop.first and message['role'] != 'system' and default_system -%}
        {{- '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' -}}
    {%- endif -%}
    {{- '<|im_start|>' + message['role'] + '\\n' -}}
    {%- if message['role'] == 'assistant' -%}{{- think -}}{%- endif -%}
    {{- message['content'] + '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' + think -}}{%- endif -%}
"""

LLAMA3 = """{{- bos_token -}}
{%- if messages[0]['role'] != 'system' -%}
    {{- '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023<|eot_id|>' -}}
{%- endif -%}
{%- for message in messages -%}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}
"""

MISTRAL = """{{- bos_token -}}
{%- for message in messages -%}
    {%- if message['role'] == 'system' -%}
        {{- raise_exception('This template has no system role: conversations must alternate user/assistant') -}}
    {%- elif message['role'] == 'user' -%}
        {{- '[INST] ' + message['content'] + '[/INST]' -}}
    {%- else -%}
        {{- message['content'] + eos_token -}}
    {%- endif -%}
{%- endfor -%}
"""

GEMMA = """{{- bos_token -}}
{%- for message in messages -%}
    {%- if message['role'] == 'system' -%}
        {{- raise_exception('System role not supported') -}}
    {%- endif -%}
    {{- '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\\n' -}}
    {{- message['content'] + '<end_of_turn>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}
"""


@dataclass(frozen=True)
class Family:
    """One family's twin: its transformers config, chat template and special tokens."""

    name: str
    brings: str
    config: Callable[[dict[str, Any]], Any]
    template: str | None  # None: the tiny base's own (Phi-3's markers)
    eos: str
    special_tokens: tuple[str, ...] = ()
    settings: str = ""  # Jinja `set` lines put before the template (ChatML's default system, thinking)
    # Byte-level BPE families: the split pattern of their pre-tokenizer, their bos and pad tokens
    # (None: no bos), and the llama.cpp pre-tokenizer that splits the same way.
    bpe_split: str | None = None
    bpe_bos: str | None = None
    bpe_pad: str = ""
    gguf_pre_tokenizer: str | None = None


def _qwen2(common: dict[str, Any]) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(**common, num_key_value_heads=2, tie_word_embeddings=True)


def _qwen3(common: dict[str, Any]) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(**common, num_key_value_heads=2, head_dim=64, tie_word_embeddings=True)


def _llama3(common: dict[str, Any]) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        **common,
        num_key_value_heads=2,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 256,
        },
        tie_word_embeddings=False,
    )


def _mistral(common: dict[str, Any]) -> Any:
    from transformers import MistralConfig

    return MistralConfig(**common, num_key_value_heads=2, sliding_window=None, tie_word_embeddings=False)


def _gemma2(common: dict[str, Any]) -> Any:
    from transformers import Gemma2Config

    return Gemma2Config(
        **common,
        num_key_value_heads=2,
        head_dim=64,
        query_pre_attn_scalar=64,
        sliding_window=128,
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
        tie_word_embeddings=True,
    )


def _phi3(common: dict[str, Any]) -> Any:
    from transformers import Phi3Config

    return Phi3Config(**common, num_key_value_heads=4, tie_word_embeddings=False)


def _mixtral(common: dict[str, Any]) -> Any:
    from transformers import MixtralConfig

    return MixtralConfig(
        **common, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False
    )


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "qwen2",
            "q/k/v bias, tied embeddings, ChatML with a default system prompt",
            _qwen2,
            CHATML,
            "<|im_end|>",
            ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
            "{%- set default_system = 'You are a helpful assistant.' -%}{%- set think = '' -%}",
            bpe_split=QWEN_SPLIT,
            bpe_pad="<|endoftext|>",
            gguf_pre_tokenizer="qwen2",
        ),
        Family(
            "qwen3",
            "q_norm/k_norm, tied embeddings, ChatML with thinking markers",
            _qwen3,
            CHATML,
            "<|im_end|>",
            ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"),
            "{%- set default_system = '' -%}{%- set think = '<think>\\n\\n</think>\\n\\n' -%}",
            bpe_split=QWEN_SPLIT,
            bpe_pad="<|endoftext|>",
            gguf_pre_tokenizer="qwen2",
        ),
        Family(
            "llama3",
            "header-id template, <|eot_id|> stop, llama3 rope scaling",
            _llama3,
            LLAMA3,
            "<|eot_id|>",
            (
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ),
            bpe_split=LLAMA3_SPLIT,
            bpe_bos="<|begin_of_text|>",
            bpe_pad="<|end_of_text|>",
            gguf_pre_tokenizer="llama-bpe",
        ),
        Family(
            "mistral",
            "[INST] template that rejects a system role",
            _mistral,
            MISTRAL,
            "</s>",
            ("[INST]", "[/INST]"),
        ),
        Family(
            "gemma2",
            "tied and scaled embeddings, norm offset, soft-capping, no system role",
            _gemma2,
            GEMMA,
            "<end_of_turn>",
            ("<start_of_turn>", "<end_of_turn>"),
        ),
        Family("phi3", "fused qkv_proj and gate_up_proj", _phi3, None, "<|end|>"),
        Family(
            "mixtral",
            "mixture of experts: 4 experts, 2 per token, router",
            _mixtral,
            MISTRAL,
            "</s>",
            ("[INST]", "[/INST]"),
        ),
    )
}


def train_bpe(family: Family, vocab_size: int = 4096) -> Any:
    """A byte-level BPE with the family's split pattern and markers, trained on the texts the tiny
    base's tokenizer was trained on (the generic corpus and the support-fr train split)."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from build_tiny_base import DEFAULT_SUPPORT, read_support_texts
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from trainer.generic_corpus import load_generic_corpus

    assert family.bpe_split is not None
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(family.bpe_split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(family.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([*load_generic_corpus().train, *read_support_texts(DEFAULT_SUPPORT)], trainer)
    if family.bpe_bos:
        bos_id = bpe.token_to_id(family.bpe_bos)
        bpe.post_processor = processors.TemplateProcessing(
            single=f"{family.bpe_bos} $A",
            pair=f"{family.bpe_bos} $A $B",
            special_tokens=[(family.bpe_bos, bos_id)],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=family.bpe_bos,
        eos_token=family.eos,
        pad_token=family.bpe_pad,
        model_max_length=1024,
    )


def build_twin(family: Family, out: Path, seed: int = 0) -> Path:
    """Write the twin's folder (weights, config, tokenizer, template, generation config) to `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if family.bpe_split:
        tokenizer = train_bpe(family)
    else:
        tokenizer = AutoTokenizer.from_pretrained(TINY_BASE)
        if family.special_tokens:
            tokenizer.add_special_tokens({"additional_special_tokens": list(family.special_tokens)})
        tokenizer.eos_token = family.eos
    if family.template is not None:
        tokenizer.chat_template = family.settings + family.template
    common = {
        **SHAPE,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 1024,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = family.config(common)
    config.dtype = torch.bfloat16
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not family.bpe_split:
        # The merge and GGUF stages read the SentencePiece model; the added markers follow it in order.
        shutil.copy(TINY_BASE / "tokenizer.model", out / "tokenizer.model")
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(out)
    twin = {"family": family.name, "brings": family.brings, "model_type": config.model_type}
    if family.gguf_pre_tokenizer:
        twin["gguf_pre_tokenizer"] = family.gguf_pre_tokenizer
    (out / "twin.json").write_text(json.dumps(twin, indent=2) + "\n")
    # A reload proves the folder is complete the way the flow reads it.
    AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="folder that receives one subfolder per family"
    )
    parser.add_argument("families", nargs="*", choices=[[], *FAMILIES], help="default: every family")
    args = parser.parse_args(argv)
    for name in args.families or FAMILIES:
        path = build_twin(FAMILIES[name], args.out / name)
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
