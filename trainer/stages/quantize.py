"""The quantize stage: the merged BF16 model becomes each enabled artifact, calibrated on the run's set.

Every artifact is checked before the first one starts (bits, group size against every
linear layer's input size, enough calibration tokens), so a bad setting fails in seconds,
not after an hour of GPTQ. Each artifact is built in its own folder under the stage's
partial folder and records the calibration set's hash in `quantize_info.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from trainer.config import ArtifactConfig, QuantFormat, Stage, TrainerConfig
from trainer.disk import quantized_bytes, require_free
from trainer.errors import ConfigError
from trainer.families import ModelFacts, check_artifact_for_model, read_facts
from trainer.pipeline import StageContext
from trainer.progress import stage_bar

log = logging.getLogger(__name__)

BITS = {QuantFormat.gptq: (2, 3, 4, 8), QuantFormat.awq: (4,)}
BACKENDS = ("gptqmodel", "autoawq")
MIN_CALIBRATION_TOKENS = 512


def check_settings(name: str, spec: ArtifactConfig) -> None:
    """What can be refused without the model; `validate()` calls it so that it fails before training."""
    key = f"quantize.artifacts.{name}"
    if spec.format is QuantFormat.gguf:
        from trainer.gguf import check_gguf_type

        try:
            check_gguf_type(spec.gguf_type, spec.imatrix)
        except ConfigError as exc:
            raise ConfigError(f"{key}.gguf_type: {exc}") from exc
        return
    allowed = BITS[spec.format]
    if spec.bits not in allowed:
        raise ConfigError(f"{key}.bits={spec.bits}: {spec.format.value} supports {list(allowed)}")
    if spec.group_size != -1 and spec.group_size <= 0:
        raise ConfigError(f"{key}.group_size={spec.group_size}: use a positive size or -1 (per channel)")
    if not 0 < spec.damp_percent < 1:
        raise ConfigError(f"{key}.damp_percent={spec.damp_percent}: must be in (0, 1)")
    if spec.backend not in BACKENDS:
        raise ConfigError(f"{key}.backend={spec.backend!r}: allowed {', '.join(BACKENDS)}")
    if spec.format is QuantFormat.awq and spec.desc_act:
        raise ConfigError(f"{key}.desc_act=true: AWQ has no act-order; set it false")


def check_artifact(name: str, spec: ArtifactConfig, facts: ModelFacts, calibration_tokens: int) -> None:
    """The settings, then what needs the merged model and the calibration set."""
    check_settings(name, spec)
    check_artifact_for_model(name, spec, facts)
    key = f"quantize.artifacts.{name}"
    if calibration_tokens < MIN_CALIBRATION_TOKENS:
        raise ConfigError(
            f"{key}: the calibration set holds {calibration_tokens} tokens, fewer than {MIN_CALIBRATION_TOKENS}; "
            "raise data.calibration.samples or data.calibration.max_tokens"
        )


def calibration_rows(data_dir: Path) -> tuple[list[list[int]], str]:
    path = data_dir / "calibration.jsonl"
    raw = path.read_bytes()
    rows = [json.loads(line)["input_ids"] for line in raw.decode("utf-8").splitlines()]
    return rows, hashlib.sha256(raw).hexdigest()


def gptqmodel_quantize(
    merged: Path, out: Path, spec: ArtifactConfig, calibration: list[list[int]], device: str
) -> None:
    """GPTQ or AWQ through GPTQModel, fed the calibration token ids exactly."""
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))
    import torch
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
    from gptqmodel.quantization import FORMAT, METHOD

    from trainer.precision import fast_float

    if spec.format is QuantFormat.gptq:
        config = QuantizeConfig(
            bits=spec.bits,
            group_size=spec.group_size,
            sym=spec.sym,
            desc_act=spec.desc_act,
            damp_percent=spec.damp_percent,
        )
        backend = BACKEND.AUTO
    else:
        config = QuantizeConfig(
            bits=spec.bits,
            group_size=spec.group_size,
            sym=spec.sym,
            quant_method=METHOD.AWQ,
            format=FORMAT.GEMM,
        )
        backend = BACKEND.AWQ_TORCH if device == "cpu" else BACKEND.AUTO
    # GPTQ's calibration forwards run in the device's fast float type: on a CPU without native bf16
    # they ran emulated, 2.2x the time (AWQ's packing takes fp16 or bf16 only).
    dtype = fast_float(device) if spec.format is QuantFormat.gptq else "auto"
    model = GPTQModel.load(str(merged), config, device=device, dtype=dtype)
    samples = [{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in calibration]
    model.quantize(samples, batch_size=1, backend=backend, calibration_data_min_length=1)
    model.save(str(out))
    if dtype == torch.float32:  # GPTQModel saved the unquantized weights as it computed them
        store_floats_as(out, merged_dtype_name(merged))


def merged_dtype_name(merged: Path) -> str:
    """The float type the merged model's config declares (bf16 where it names none)."""
    return json.loads((merged / "config.json").read_text()).get("dtype") or "bfloat16"


def store_floats_as(folder: Path, dtype_name: str) -> None:
    """Store the float32 tensors GPTQModel saved (embeddings, norms, lm_head) in the merged model's dtype.

    GPTQModel saves the unquantized weights in the dtype it computed in; the artifact ships what
    the merged model holds, and its config says so. Packed weights and fp16 scales are untouched.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    dtype = getattr(torch, dtype_name)
    sizes = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, "pt") as handle:
            metadata = handle.metadata()
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        if any(t.dtype == torch.float32 for t in tensors.values()):
            tensors = {k: t.to(dtype) if t.dtype == torch.float32 else t for k, t in tensors.items()}
            save_file(tensors, str(path), metadata=metadata)
        sizes[path.name] = sum(t.numel() * t.element_size() for t in tensors.values())
    index = folder / "model.safetensors.index.json"
    if index.exists():
        content = json.loads(index.read_text())
        content.setdefault("metadata", {})["total_size"] = sum(sizes.values())
        index.write_text(json.dumps(content, indent=2))
    config = json.loads((folder / "config.json").read_text())
    config["dtype"] = dtype_name
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def autoawq_quantize(
    merged: Path, out: Path, spec: ArtifactConfig, calibration: list[list[int]], device: str
) -> None:
    """AWQ through AutoAWQ (archived upstream, kept as a second opinion), fed the same token ids.

    Its scale and clip search runs in the device's fast float type: in the merged model's bf16 on
    a CPU without native bf16 it ran emulated (its test took 371 s on AMD EPYC Zen 3, 207 s in
    float32)."""
    import torch
    from awq import AutoAWQForCausalLM
    from transformers import AutoTokenizer

    from trainer.precision import fast_float

    dtype = fast_float(device)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoAWQForCausalLM.from_pretrained(str(merged), torch_dtype=dtype)
    model.quantize(
        tokenizer,
        quant_config={
            "zero_point": not spec.sym,
            "q_group_size": spec.group_size,
            "w_bit": spec.bits,
            "version": "GEMM",
        },
        calib_data=calibration,
        n_parallel_calib_samples=None,
        max_calib_samples=len(calibration),
        max_calib_seq_len=max(len(ids) for ids in calibration),
    )
    model.save_quantized(str(out))
    if dtype == torch.float32:  # AutoAWQ saved the unquantized weights as it computed them
        store_floats_as(out, merged_dtype_name(merged))
    for weights in out.glob("*.safetensors"):
        weights.chmod(0o644)  # AutoAWQ writes them owner-only


def write_tokenizer_files(merged: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(merged).save_pretrained(out)
    for name in ("generation_config.json",):
        if (merged / name).exists() and not (out / name).exists():
            (out / name).write_bytes((merged / name).read_bytes())


def build(
    cfg: TrainerConfig,
    name: str,
    spec: ArtifactConfig,
    merged: Path,
    out: Path,
    calib: list[list[int]],
    calib_hash: str,
) -> dict[str, Any]:
    """One artifact in `out`, with `quantize_info.json`: settings, calibration hash, seconds."""
    from trainer.stages.train import pick_device

    device = pick_device(cfg.hardware)
    started = time.time()
    extra: dict[str, Any] = {}
    if spec.format is QuantFormat.gguf:
        from trainer.gguf import build_gguf

        built = build_gguf(
            merged,
            out,
            spec,
            calib,
            out.parent / "gguf-work",  # the 16-bit GGUF and imatrix, shared by this run's GGUF artifacts
            model_name=cfg.name,
            calibration_source="data/calibration.jsonl",
            pre_tokenizer=cfg.model.gguf_pre_tokenizer,
        )
        extra = {"model_file": built["file"], "gguf": built}
        settings: dict[str, Any] = {"gguf_type": spec.gguf_type, "imatrix": spec.imatrix}
    else:
        if spec.format is QuantFormat.awq and spec.backend == "autoawq":
            autoawq_quantize(merged, out, spec, calib, device)
        else:
            gptqmodel_quantize(merged, out, spec, calib, device)
        write_tokenizer_files(merged, out)
        settings = {
            k: getattr(spec, k) for k in ("bits", "group_size", "sym", "desc_act", "damp_percent", "backend")
        }
    info = {
        "name": name,
        "format": spec.format.value,
        **extra,
        "settings": settings,
        "calibration": {"sha256": calib_hash, "samples": len(calib), "tokens": sum(len(c) for c in calib)},
        "seconds": round(time.time() - started, 2),
        "device": device,
    }
    (out / "quantize_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    merged = ctx.stage_dir(Stage.merge) / "model"
    facts = read_facts(merged)
    calib, calib_hash = calibration_rows(ctx.stage_dir(Stage.data))
    specs = {name: cfg.quantize.artifacts[name] for name in cfg.quantize.enabled}
    for name, spec in specs.items():
        check_artifact(name, spec, facts, sum(len(c) for c in calib))
    ggufs = sum(spec.format is QuantFormat.gguf for spec in specs.values())
    needed = quantized_bytes(merged, [spec.bits for spec in specs.values()], ggufs)
    require_free(ctx.out_dir, needed, f"quantizing {', '.join(specs)}")
    summary: dict[str, Any] = {}
    with stage_bar(ctx.console, "quantize", len(specs), "artifacts") as bar:
        for name, spec in specs.items():
            log.info("quantizing %s (%s)", name, spec.format.value)
            bar.note(name)
            info = build(cfg, name, spec, merged, ctx.out_dir / name, calib, calib_hash)
            summary[f"{name}_seconds"] = info["seconds"]
            bar.advance()
    return summary
