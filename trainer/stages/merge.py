"""The merge stage: fold the LoRA adapter into BF16 weights, shard by shard.

Two bases differ: the original high-precision weights, or the NF4 weights the adapter was
trained against, dequantized. The NF4 copy is rebuilt tensor by tensor with bitsandbytes'
own quantize/dequantize (bit-identical to what the 4-bit load produced when the source
dtype matches, which the train stage records), so no 4-bit model is ever loaded here.
`auto` builds both, scores both on the eval split and keeps the better.

Each base shard is read, patched and written before the next is opened, so peak memory
stays near one shard plus the adapter rather than the whole model. An adapter of a mixture's
expert tensors is the exception (`merge_through_peft`): it merges in memory, where transformers
knows how its fused experts map to the checkpoint's per-expert tensors.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config import MergeBase, ModelConfig, Stage
from trainer.disk import merged_bytes, require_free
from trainer.errors import ConfigError, TrainerError
from trainer.pipeline import StageContext
from trainer.progress import stage_bar

log = logging.getLogger(__name__)


@dataclass
class LoraModule:
    a: Any = None
    b: Any = None
    magnitude: Any = None  # DoRA


def base_checkpoint(model: ModelConfig) -> Path:
    """The folder holding the base's safetensors: local, or the hub snapshot (cache when offline)."""
    path = Path(model.name_or_path).expanduser()
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        try:
            path = Path(
                snapshot_download(
                    model.name_or_path,
                    revision=model.revision,
                    allow_patterns=["*.safetensors", "*.json", "tokenizer*", "*.model", "*.jinja"],
                )
            )
        except Exception as exc:
            raise ConfigError(
                f"model.name_or_path={model.name_or_path!r}: no local folder and the hub snapshot is unavailable "
                f"({type(exc).__name__}); download it and set model.name_or_path to the folder"
            ) from exc
    if not list(path.glob("*.safetensors")):
        raise TrainerError(
            f"{path}: no .safetensors weights; pickle checkpoints (.bin, .pt) are not loaded. Convert the base to "
            "safetensors first."
        )
    return path


def shard_names(checkpoint: Path) -> tuple[list[str], dict[str, Any] | None]:
    index_path = checkpoint / "model.safetensors.index.json"
    if index_path.exists():
        index = json.loads(index_path.read_text())
        return sorted(set(index["weight_map"].values())), index
    return ["model.safetensors"], None


def read_adapter(adapter_dir: Path) -> tuple[dict[str, LoraModule], dict[str, Any], float]:
    """LoRA factors per base module, full replacements (modules_to_save), and the scaling."""
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    r, alpha = config["r"], config["lora_alpha"]
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise TrainerError("adapters with rank_pattern/alpha_pattern are not merged by this stage yet")
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    lora: dict[str, LoraModule] = {}
    replaced: dict[str, Any] = {}
    for key, tensor in load_file(adapter_dir / "adapter_model.safetensors").items():
        name = key.removeprefix("base_model.model.")
        for marker, attribute in (
            (".lora_A.", "a"),
            (".lora_B.", "b"),
            (".lora_magnitude_vector", "magnitude"),
        ):
            if marker in name:
                module = name.split(marker)[0]
                setattr(lora.setdefault(module, LoraModule()), attribute, tensor)
                break
        else:
            if ".lora_" in name:
                raise TrainerError(f"adapter tensor {key}: unknown LoRA variant; cannot merge it")
            replaced[name] = tensor
    for module, factors in lora.items():
        if factors.a is None or factors.b is None:
            raise TrainerError(f"adapter module {module}: lora_A or lora_B missing in {adapter_dir}")
    return lora, replaced, scaling


def nf4_roundtrip(weight: Any, quant_type: str, double_quant: bool) -> Any:
    """The weight the 4-bit model computed with: quantized as at load time, then dequantized."""
    import bitsandbytes.functional as bnbf

    packed, state = bnbf.quantize_4bit(
        weight.contiguous(), blocksize=64, compress_statistics=double_quant, quant_type=quant_type
    )
    return bnbf.dequantize_4bit(packed, state)


def merged_weight(weight: Any, factors: LoraModule, scaling: float) -> Any:
    """W + s·BA, or for DoRA m · (W + s·BA) / ‖W + s·BA‖ per output row, computed in fp32."""
    import torch

    w = weight.float()
    w = w + scaling * (factors.b.float() @ factors.a.float())
    if factors.magnitude is not None:
        norm = torch.linalg.norm(w, dim=1)
        w = (factors.magnitude.float() / norm).unsqueeze(1) * w
    return w


def tied_head_copy(pending: set[str], replaced: dict[str, Any]) -> set[str]:
    """The trained LM head a checkpoint with tied embeddings does not store, when it is the trained
    embeddings themselves (`lora.modules_to_save` with PEFT's weight tying): the merged model stays
    tied, as its family expects (Gemma's GGUF has no output tensor at all). A head that differs
    from the embeddings cannot be written into a tied checkpoint: that is an error."""
    import torch

    heads = {key for key in pending if key.endswith("lm_head.weight")}
    embeddings = [tensor for key, tensor in replaced.items() if key.endswith("embed_tokens.weight")]
    for key in heads:
        if not embeddings or not torch.equal(replaced[key], embeddings[0]):
            raise TrainerError(
                f"the adapter trained {key} apart from the embeddings, but the base ties them (it stores no "
                "LM head); train them tied (lora.modules_to_save: [embed_tokens, lm_head] does) or leave lm_head out"
            )
    return heads


def merge_into(
    checkpoint: Path,
    adapter_dir: Path,
    out_dir: Path,
    base: MergeBase,
    quantized_modules: set[str],
    source_dtype: Any,
    quant_type: str,
    double_quant: bool,
) -> dict[str, Any]:
    """Write the merged BF16 safetensors shards (and index) of one base into out_dir, a tensor at a time."""
    import torch

    from trainer.safetensors_stream import DTYPES, ShardReader, ShardWriter

    lora, replaced, scaling = read_adapter(adapter_dir)
    pending = set(lora) | set(replaced)
    shards, index = shard_names(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    total_size = 0
    for shard in shards:
        reader = ShardReader(checkpoint / shard)
        keys = reader.keys()
        layout = {}
        for key in keys:
            dtype = DTYPES[reader.entries[key]["dtype"]]
            layout[key] = (torch.bfloat16 if dtype.is_floating_point else dtype, reader.entries[key]["shape"])
        writer = ShardWriter(out_dir / shard, layout, {"format": "pt"})
        for key in keys:
            tensor = reader.read(key)
            module = key.removesuffix(".weight")
            if key in replaced:
                tensor = replaced[key]
                pending.discard(key)
            elif key.endswith(".weight") and module in quantized_modules and base is MergeBase.dequantized:
                tensor = nf4_roundtrip(tensor.to(source_dtype), quant_type, double_quant)
            if key.endswith(".weight") and module in lora:
                tensor = merged_weight(tensor, lora[module], scaling)
                pending.discard(module)
            writer.write(key, tensor.to(layout[key][0]))
            weight_map[key] = shard
            del tensor
        writer.close()
        total_size += writer.nbytes
    pending -= tied_head_copy(pending, replaced)
    if pending:
        raise TrainerError(
            f"adapter modules not found in the base checkpoint {checkpoint}: {sorted(pending)[:5]}"
        )
    if index is not None:
        (out_dir / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map}, indent=2) + "\n"
        )
    return {"lora_modules": len(lora), "replaced_tensors": len(replaced), "bytes": total_size}


def adapts_parameters(adapter_dir: Path) -> bool:
    """The adapter holds LoRA of 3-D parameters (a mixture's experts)."""
    return bool(json.loads((adapter_dir / "adapter_config.json").read_text()).get("target_parameters"))


def merge_through_peft(
    checkpoint: Path,
    adapter_dir: Path,
    out_dir: Path,
    base: MergeBase,
    quantized_modules: set[str],
    source_dtype: Any,
    quant_type: str,
    double_quant: bool,
) -> dict[str, Any]:
    """The whole model in memory, merged by PEFT and written by transformers.

    For an adapter of a mixture's experts: transformers 5 fuses the checkpoint's per-expert tensors
    (`experts.3.w1`, `experts.3.w3`) into one 3-D parameter when it loads them and splits them
    back when it saves, and PEFT's factors are per expert of the fused tensor; so the merge runs
    where both layouts are known instead of tensor by tensor. Peak memory is the whole model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=source_dtype, device_map={"": "cpu"})
    if base is MergeBase.dequantized:
        with torch.no_grad():
            for name, module in model.named_modules():
                if name in quantized_modules:
                    module.weight.copy_(nf4_roundtrip(module.weight.data, quant_type, double_quant))
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.to(torch.bfloat16).save_pretrained(out_dir)
    adapted = json.loads((adapter_dir / "adapter_config.json").read_text())
    return {
        "lora_modules": len(adapted.get("target_modules") or []),
        "lora_parameters": len(adapted["target_parameters"]),
        "replaced_tensors": len(adapted.get("modules_to_save") or []),
        "bytes": sum(path.stat().st_size for path in out_dir.glob("*.safetensors")),
        "in_memory": True,
    }


def write_model_files(checkpoint: Path, adapter_dir: Path, out_dir: Path) -> None:
    """config (plain BF16, no quantization), generation config with the tokenizer's eos, tokenizer."""
    from transformers import AutoTokenizer, GenerationConfig

    config = json.loads((checkpoint / "config.json").read_text())
    config.pop("quantization_config", None)
    config["dtype"] = "bfloat16"
    config.pop("torch_dtype", None)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    tokenizer.save_pretrained(out_dir)
    # transformers 5 saves no SentencePiece model; llama.cpp's converter needs it for the token scores.
    if (checkpoint / "tokenizer.model").exists() and not (out_dir / "tokenizer.model").exists():
        shutil.copy2(checkpoint / "tokenizer.model", out_dir / "tokenizer.model")
    if (checkpoint / "generation_config.json").exists():
        generation = GenerationConfig.from_pretrained(checkpoint)
    else:
        generation = GenerationConfig(
            bos_token_id=config.get("bos_token_id"),
            eos_token_id=config.get("eos_token_id"),
            pad_token_id=config.get("pad_token_id"),
        )
    eos = generation.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.insert(0, tokenizer.eos_token_id)
    generation.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    if generation.pad_token_id is None and tokenizer.pad_token_id is not None:
        generation.pad_token_id = tokenizer.pad_token_id
    generation.save_pretrained(out_dir)


def eval_loss(model_dir: Path, eval_jsonl: Path) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.perplexity import eval_tokens, score_transformers
    from trainer.precision import fast_float

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=fast_float(device), device_map={"": device})
    score = score_transformers(model, eval_tokens(eval_jsonl, tokenizer))
    del model
    return score.nll


def run(ctx: StageContext) -> dict[str, Any]:
    import torch

    cfg = ctx.cfg
    checkpoint = base_checkpoint(cfg.model)
    train_dir = ctx.stage_dir(Stage.train)
    adapter_dir = train_dir / "adapter"
    trained = json.loads((train_dir / "metrics.json").read_text())
    quantized_modules = set(trained["quantized_modules"])
    source_dtype = getattr(torch, trained["quantized_from_dtype"])
    qlora = cfg.train.qlora
    wanted = (
        [MergeBase.original, MergeBase.dequantized] if cfg.merge.base is MergeBase.auto else [cfg.merge.base]
    )
    require_free(
        ctx.out_dir, merged_bytes(checkpoint, len(wanted)), f"the merge ({len(wanted)} candidate(s) in bf16)"
    )
    built: dict[MergeBase, Path] = {}
    details: dict[str, Any] = {}
    losses: dict[str, float] = {}
    eval_jsonl = ctx.stage_dir(Stage.data) / "eval.jsonl"
    with stage_bar(ctx.console, "merge", len(wanted), "candidates") as bar:
        for base in wanted:
            folder = ctx.out_dir / f"candidate-{base.value}"
            log.info("merging the adapter into the %s base", base.value)
            bar.note(f"{base.value} base")
            merge = merge_through_peft if adapts_parameters(adapter_dir) else merge_into
            details[base.value] = merge(
                checkpoint,
                adapter_dir,
                folder,
                base,
                quantized_modules,
                source_dtype,
                qlora.quant_type,
                qlora.double_quant,
            )
            write_model_files(checkpoint, adapter_dir, folder)
            built[base] = folder
            if len(wanted) > 1:  # candidates compete on eval loss
                losses[base.value] = eval_loss(folder, eval_jsonl)
                log.info("merged on the %s base: eval loss %.4f", base.value, losses[base.value])
            bar.advance()
    if len(built) > 1:
        chosen = min(built, key=lambda b: losses[b.value])
        reason = f"lower eval loss on the assistant tokens of the eval split ({losses[chosen.value]:.4f})"
    else:
        chosen = wanted[0]
        reason = "merge.base"
    for base, folder in built.items():
        if base is not chosen:
            shutil.rmtree(folder)
    built[chosen].rename(ctx.out_dir / "model")
    info = {
        "base": chosen.value,
        "requested": cfg.merge.base.value,
        "reason": reason,
        "eval_loss": losses,
        "source_checkpoint": str(checkpoint),
        "nf4_source_dtype": trained["quantized_from_dtype"],
        "details": details,
    }
    (ctx.out_dir / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return {"base": chosen.value, **{f"eval_loss_{k}": round(v, 4) for k, v in losses.items()}}
