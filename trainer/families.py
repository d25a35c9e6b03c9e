"""What the flow knows of model families, in one place: facts read from a checkpoint, and what
each family's quantizers can serve.

Layer facts (which linear layers exist, their input sizes, whether the LM head is tied to the
embeddings, how many experts) come from the checkpoint's own safetensors headers and config, never
from a family's layer names: Phi-3 fuses q/k/v into `qkv_proj`, Gemma ties its head, a
mixture-of-experts repeats its MLP per expert, and a check written for Llama's names misses all
three. What a family cannot do is refused here, from the config and the base checkpoint, before
any stage spends time: a refusal after an hour of training is the failure users meet otherwise.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from trainer.config import ArtifactConfig, QuantFormat, Stage, TrainerConfig
from trainer.errors import ConfigError

# An expert's own index in a tensor name (`experts.3.w1`), folded so each kind of linear is one entry.
_EXPERT_INDEX = re.compile(r"\.experts\.\d+\.")
_LAYER_PREFIX = re.compile(r"^(?:model\.)?(?:language_model\.)?layers\.\d+\.")

# (model_type, format, backend) -> why that quantizer cannot serve the family, measured on its
# twin (scripts/build_family_twins.py; docs/FAMILIES.md holds the matrix).
REFUSALS: dict[tuple[str, QuantFormat, str], str] = {
    ("phi3", QuantFormat.awq, "gptqmodel"): (
        "GPTQModel 7.5's AWQ packs the fused qkv_proj/gate_up_proj without their zero points "
        "(KeyError 'q_zeros' in awq_processor.pack_module, in a worker thread that ends the process)"
    ),
}


@dataclass(frozen=True)
class ModelFacts:
    """A checkpoint's layout as its files state it."""

    architecture: str
    model_type: str
    # Each kind of linear layer in the decoder blocks (`self_attn.qkv_proj`, `mlp.experts.w1`) -> its input sizes.
    linear_inputs: dict[str, tuple[int, ...]]
    tied_embeddings: bool
    experts: int


def _safetensors_shapes(folder: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from each shard's JSON header (no tensor is read)."""
    shapes: dict[str, list[int]] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with open(shard, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        shapes.update({k: v["shape"] for k, v in header.items() if k != "__metadata__"})
    return shapes


def read_facts(folder: Path) -> ModelFacts:
    """The facts of the checkpoint in `folder` (config.json and *.safetensors)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config") or {}
    shapes = _safetensors_shapes(folder)
    if not shapes:
        raise ConfigError(f"{folder}: no *.safetensors weights to read the model's layers from")
    inputs: dict[str, set[int]] = {}
    for name, shape in shapes.items():
        if not name.endswith(".weight") or len(shape) != 2 or not _LAYER_PREFIX.match(name):
            continue
        kind = _EXPERT_INDEX.sub(".experts.", _LAYER_PREFIX.sub("", name)).removesuffix(".weight")
        if "norm" in kind.rsplit(".", 1)[-1]:
            continue
        inputs.setdefault(kind, set()).add(shape[1])
    head = [n for n in shapes if n.endswith("lm_head.weight")]
    experts = config.get("num_local_experts") or config.get("num_experts") or text.get("num_experts") or 0
    return ModelFacts(
        architecture=(config.get("architectures") or ["?"])[0],
        model_type=config.get("model_type", "?"),
        linear_inputs={kind: tuple(sorted(sizes)) for kind, sizes in sorted(inputs.items())},
        tied_embeddings=not head,
        experts=int(experts),
    )


def group_size_error(facts: ModelFacts, group_size: int) -> str | None:
    """Why `group_size` cannot quantize this model (it must divide every linear's input size), or None."""
    for kind, sizes in facts.linear_inputs.items():
        for size in sizes:
            if size % group_size:
                divisors = [g for g in (32, 64, 128, 256) if all(s % g == 0 for s in _all_sizes(facts))]
                return (
                    f"group_size={group_size} does not divide the input size {size} of {kind}; "
                    f"use one of {divisors} or -1"
                )
    return None


def _all_sizes(facts: ModelFacts) -> set[int]:
    return {size for sizes in facts.linear_inputs.values() for size in sizes}


def local_checkpoint(name_or_path: str, revision: str | None = None) -> Path | None:
    """The base's folder: a local path, or its snapshot in the HF cache; None until it is downloaded."""
    path = Path(name_or_path).expanduser()
    if (path / "config.json").exists():
        return path
    try:
        from huggingface_hub import snapshot_download

        found = Path(snapshot_download(name_or_path, revision=revision, local_files_only=True))
    except Exception:  # not cached (the train stage downloads it, or names the fix)
        return None
    return found if (found / "config.json").exists() else None


def check_artifact_for_model(name: str, spec: ArtifactConfig, facts: ModelFacts) -> None:
    """One artifact against the model's layers and its family's known limits."""
    key = f"quantize.artifacts.{name}"
    if spec.format is not QuantFormat.gguf and spec.group_size != -1:
        error = group_size_error(facts, spec.group_size)
        if error:
            raise ConfigError(f"{key}.{error}")
    refusal = REFUSALS.get((facts.model_type, spec.format, spec.backend))
    if refusal:
        others = [f.value for f in QuantFormat if not any(k[:2] == (facts.model_type, f) for k in REFUSALS)]
        raise ConfigError(
            f"{key}: {spec.format.value} through {spec.backend} cannot quantize {facts.architecture}: {refusal}. "
            f"Disable it (quantize.enabled without {name}); {', '.join(others)} serve this family"
        )


def check_base(cfg: TrainerConfig) -> Path | None:
    """Before any stage: each enabled artifact against the base's own layers and family (merging
    LoRA changes no layer's shape, so the base's facts are the merged model's). None when the base
    is not on this machine yet (the quantize stage checks the merged model again); else its folder."""
    folder = local_checkpoint(cfg.model.name_or_path, cfg.model.revision)
    if folder is None:
        return None
    facts = read_facts(folder)
    if facts.experts and cfg.lora.target_modules == ["all-linear"] and cfg.lora.dropout:
        raise ConfigError(
            f"lora.dropout={cfg.lora.dropout}: {facts.architecture} is a mixture of {facts.experts} experts, whose "
            "expert tensors PEFT adapts only without dropout (ParamWrapper); set lora.dropout=0 "
            "(the Mixtral preset does), or name lora.target_modules to leave the experts frozen"
        )
    if Stage.quantize in cfg.stages:
        for name in cfg.quantize.enabled:
            check_artifact_for_model(name, cfg.quantize.artifacts[name], facts)
    return folder
