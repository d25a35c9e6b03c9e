"""The train stage: QLoRA on the train split with TRL's SFTTrainer, resumable after a crash.

The base loads in 4-bit (NF4 with double quantization by default) and LoRA adapters train on
top. Conversations are tokenized here, with the assistant-only mask of `trainer.masking`,
so the loss never covers system or user tokens whatever the chat template. Checkpoints go
to the stage's partial folder, which the runner keeps between attempts: re-running the
command after a kill resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from trainer import distributed
from trainer.config import (
    Attention,
    ComputeDType,
    Device,
    Distributed,
    DType,
    HardwareConfig,
    LoraConfig,
    QLoraConfig,
    Stage,
    TrainerConfig,
)
from trainer.errors import ConfigError
from trainer.masking import encode_with_mask
from trainer.modeling import load_tokenizer
from trainer.pipeline import StageContext
from trainer.precision import dtype_name
from trainer.progress import Bar, stage_bar

log = logging.getLogger(__name__)


def torch_dtype(dtype: DType) -> Any:
    import torch

    return {DType.bfloat16: torch.bfloat16, DType.float16: torch.float16, DType.float32: torch.float32}[dtype]


def pick_device(hardware: HardwareConfig) -> str:
    import torch

    if hardware.device is Device.cuda and not torch.cuda.is_available():
        raise ConfigError(
            "hardware.device=cuda: no CUDA device is visible; use hardware=cpu or hardware=auto"
        )
    if hardware.device is Device.auto:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return hardware.device.value


def compute_dtype(qlora: QLoraConfig, device: str) -> DType:
    """`auto`: bf16 where the device runs it natively, else float32 on a CPU and float16 on a GPU.

    An explicit bfloat16 is kept, except on a GPU without it (float16, said out loud).
    """
    from trainer.precision import bf16_is_native, fast_float

    wanted = qlora.compute_dtype
    if wanted is ComputeDType.auto:
        chosen = DType(dtype_name(fast_float(device)))
        if chosen is not DType.bfloat16:
            log.info("this %s has no native bfloat16: training computes in %s", device, chosen.value)
        return chosen
    if wanted is ComputeDType.bfloat16 and device == "cuda" and not bf16_is_native(device):
        log.warning("this GPU has no bfloat16: computing in float16 instead (train.qlora.compute_dtype)")
        return DType.float16
    return DType(wanted.value)


def quantization_config(qlora: QLoraConfig, dtype: DType) -> Any:
    from transformers import BitsAndBytesConfig

    storage = {"uint8": "uint8", "bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}
    if qlora.storage_dtype not in storage:
        raise ConfigError(f"train.qlora.storage_dtype={qlora.storage_dtype!r}; allowed: {', '.join(storage)}")
    import torch

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=qlora.quant_type,
        bnb_4bit_use_double_quant=qlora.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(dtype),
        bnb_4bit_quant_storage=getattr(torch, storage[qlora.storage_dtype]),
    )


def linear_names(model: Any) -> set[str]:
    """Short names of the model's linear layers (the ones LoRA can target), lm_head excluded."""
    import torch
    from bitsandbytes.nn import Linear4bit

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, Linear4bit)) and name.split(".")[-1] != "lm_head":
            names.add(name.split(".")[-1])
    return names


def keep_4bit_layout_for_training(model: Any) -> int:
    """Keep bitsandbytes from repacking the 4-bit weights for its CPU inference kernel.

    On a CPU with AVX512-BF16 (Intel Xeon with AMX), a `Linear4bit` that runs in eval mode on an
    input without grad repacks its weight for `gemv_4bit`, and nothing packs it back when
    training resumes: every later training forward then goes through the inference kernel, which
    adds the bias in place (Qwen2's q/k/v bias: "a view of a leaf Variable that requires grad is
    being used in an in-place operation") and carries no gradient to its input. Training runs an
    eval pass before the first step, so the repacking is switched off on every 4-bit layer.
    Returns how many layers were switched.
    """
    from bitsandbytes.nn import Linear4bit

    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def quantized_module_names(model: Any) -> list[str]:
    from bitsandbytes.nn import Linear4bit

    return sorted(name for name, module in model.named_modules() if isinstance(module, Linear4bit))


def check_lora(lora: LoraConfig, model: Any) -> None:
    """Refuse targets the model does not have before any training starts."""
    available = linear_names(model)
    if lora.target_modules != ["all-linear"]:
        missing = sorted(set(lora.target_modules) - available)
        if missing:
            raise ConfigError(
                f"lora.target_modules: {missing} not in this model; its linear layers are {sorted(available)} "
                "(or use [all-linear])"
            )
    modules = {name.split(".")[-1] for name, _ in model.named_modules()}
    missing_saved = sorted(set(lora.modules_to_save) - modules)
    if missing_saved:
        raise ConfigError(f"lora.modules_to_save: {missing_saved} not in this model")


def expert_parameter_names(model: Any) -> list[str]:
    """A mixture's expert tensors as PEFT's `target_parameters` names them (`mlp.experts.gate_up_proj`):
    transformers 5 holds each layer's experts as 3-D parameters, not linear layers."""
    found = set()
    for name, module in model.named_modules():
        for kind in ("gate_up_proj", "down_proj"):
            weight = getattr(module, kind, None)
            if getattr(weight, "ndim", 0) == 3:
                found.add(".".join([*name.split(".")[-2:], kind]))
    return sorted(found)


def peft_config(lora: LoraConfig, model: Any) -> Any:
    """PEFT's LoRA config; `all-linear` means the model's linear layers, named here, and a mixture's
    expert tensors (LoRA of a 3-D parameter: one pair of factors per expert, PEFT's `ParamWrapper`)."""
    from peft import LoraConfig as PeftLoraConfig

    every_linear = lora.target_modules == ["all-linear"]
    targets = sorted(linear_names(model)) if every_linear else list(lora.target_modules)
    experts = expert_parameter_names(model) if every_linear else []
    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        target_parameters=experts or None,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        modules_to_save=list(lora.modules_to_save) or None,
        # A base with tied embeddings keeps them tied when both are trained (Qwen2.5 small, Gemma):
        # one trained matrix, merged back into a checkpoint that stores it once.
        ensure_weight_tying=True,
        bias="none",
        task_type="CAUSAL_LM",
    )


def keep_adapter_in_float32(model: Any, dtype: DType) -> int:
    """Undo TRL's cast of the trainable weights to bf16 unless the run computes in bf16.

    SFTTrainer casts every trainable parameter of a quantized model to bf16 (the QLoRA paper's
    choice), whatever the compute dtype. Computing in float32 on a CPU without native bf16, each
    LoRA matmul then ran as an emulated bf16 GEMM (`bf16_dot_with_fp32_arith` took a fifth of the
    train stage on an AVX2-only AMD EPYC) and the optimizer updated bf16 weights. Returns how
    many were cast.
    """
    import torch

    if dtype is DType.bfloat16:
        return 0
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.to(torch.float32)
            cast += 1
    return cast


def score_only_labelled_positions() -> bool:
    """Make TRL's fused LM head project only the positions that carry a label, on a CPU too.

    TRL's SFT loss runs the LM head in vocabulary tiles (`add_fused_lm_head`). Off CUDA/XPU it
    scores every position, to keep tile shapes fixed for compiling backends (Neuron); in eager CPU
    training that projects every prompt and padding token through the head and normalises it over
    the vocabulary, for a zero gradient. On the default recipe that was 46% of a step's time
    (torch.profiler, 2 cores); scoring the labelled positions only gave the same losses with 25%
    less time a step (AMD EPYC Zen 3, 36 steps, alternating). The decision is TRL's module-level
    `_use_triton` lookup in `trl.trainer.utils`, which picks nothing else there; the kernel keeps
    its own lookup, so the tiles still run in torch. False when TRL no longer has that lookup.
    """
    import trl.trainer.utils as trl_utils

    try:
        from trl.kernels.chunked_logprob import _use_triton
    except ImportError:
        return False
    current = getattr(trl_utils, "_use_triton", None)
    if getattr(current, "scores_labelled_only", False):
        return True
    if current is not _use_triton:
        return False

    def compact(device: Any) -> bool:
        return device.type == "cpu" or _use_triton(device)

    compact.scores_labelled_only = True  # type: ignore[attr-defined]
    trl_utils._use_triton = compact
    return True


def trained_in_full(name: str) -> bool:
    """Whether a PEFT parameter name belongs to a module trained in full (`modules_to_save`)."""
    return ".modules_to_save." in name


def optimizer_groups(model: Any, saved_lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters as two optimizer groups: the LoRA factors at the run's learning
    rate, the modules PEFT trains in full (`modules_to_save`) at `saved_lr`."""
    trainable = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    saved = [param for name, param in trainable if trained_in_full(name)]
    adapter = [param for name, param in trainable if not trained_in_full(name)]
    return [
        {"params": adapter, "weight_decay": weight_decay},
        {"params": saved, "lr": saved_lr, "weight_decay": weight_decay},
    ]


def learning_rates(model: Any, optimizer: Any) -> dict[str, float]:
    """The peak learning rate the optimizer gave the LoRA factors and the modules trained in full."""
    peak = {
        id(p): group.get("initial_lr", group["lr"])
        for group in optimizer.param_groups
        for p in group["params"]
    }
    found: dict[str, float] = {}
    for name, param in model.named_parameters():
        if id(param) in peak:
            found["modules_to_save" if trained_in_full(name) else "lora"] = peak[id(param)]
    return found


def sft_trainer_class() -> type:
    """TRL's SFTTrainer, with the modules trained in full at their own learning rate when the run
    sets one (`optimizer_groups`), resuming a checkpoint with each trainable weight in the dtype it
    trained in.

    On resume, transformers reloads the adapter through PEFT's `load_adapter`, which upcasts bf16
    LoRA weights to float32 (`autocast_adapter_dtype`) but leaves `modules_to_save` copies alone:
    on a CPU computing in bf16, a resumed run trained a mixed bf16/float32 adapter that the
    uninterrupted run never had. The dtypes from before the load are put back.
    """
    from trl import SFTTrainer

    class ResumingSFTTrainer(SFTTrainer):
        modules_to_save_lr: float | None = None

        def create_optimizer(self, *args: Any, **kwargs: Any) -> Any:
            if self.optimizer is None and self.modules_to_save_lr is not None:
                optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
                self.optimizer = optimizer_class(
                    optimizer_groups(self.model, self.modules_to_save_lr, self.args.weight_decay),
                    **optimizer_kwargs,
                )
            return super().create_optimizer(*args, **kwargs)

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            target = model if model is not None else self.model
            trained_in = {n: p.dtype for n, p in target.named_parameters() if p.requires_grad}
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            for name, param in target.named_parameters():
                if name in trained_in and param.dtype != trained_in[name]:
                    param.data = param.data.to(trained_in[name])

    return ResumingSFTTrainer


def final_eval_loss(trainer: Any) -> float:
    """The eval loss of the trained adapter: the one logged at the last step, else measured now.

    An eval pass over the eval split is the slow part of a short run on a CPU (about 30 s for the
    default's 240 rows on 2 cores), so the one the trainer just ran at the final step is reused.
    """
    last = trainer.state.global_step
    logged = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == last]
    return logged[-1] if logged else trainer.evaluate()["eval_loss"]


def load_split(path: Path, tokenizer: Any) -> Any:
    from datasets import Dataset

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    encoded = [encode_with_mask(tokenizer, row["messages"]) for row in rows]
    return Dataset.from_dict(
        {
            "input_ids": [e.input_ids for e in encoded],
            "assistant_masks": [e.assistant_masks for e in encoded],
        }
    )


def load_quantized_base(cfg: TrainerConfig, device: str, dtype: DType) -> Any:
    from transformers import AutoModelForCausalLM

    if cfg.hardware.distributed is Distributed.fsdp:
        # FSDP places the shards itself; the 4-bit weights are stored as bf16 so it can split them.
        placement: dict[str, Any] = {"low_cpu_mem_usage": True}
    else:
        # Under DDP each rank holds a full replica on its own device.
        target = f"cuda:{distributed.local_rank()}" if device == "cuda" else device
        placement = {"device_map": {"": target}}
    return AutoModelForCausalLM.from_pretrained(
        cfg.model.name_or_path,
        revision=cfg.model.revision,
        trust_remote_code=cfg.model.trust_remote_code,
        quantization_config=quantization_config(cfg.train.qlora, dtype),
        dtype=torch_dtype(dtype),
        use_safetensors=True,
        attn_implementation=None if cfg.train.attention is Attention.auto else cfg.train.attention.value,
        **placement,
    )


def packing_warning(packing: bool, attention: str | None) -> str | None:
    """Packing without a kernel that attends within each packed row is slower, not faster.

    TRL packs rows padding-free: a batch becomes one sequence of batch_size x max_length tokens.
    flash_attention_2 attends within each original row (cu_seqlens); sdpa and eager attend over the
    whole sequence under a block-diagonal mask, batch_size times the work of unpacked rows.
    """
    if not packing or (attention or "").startswith("flash"):
        return None
    return (
        f"train.packing=true with attention {attention!r}: each packed batch is one sequence under a "
        "block-diagonal mask, so attention does batch_size times the work of unpacked rows "
        "(on CPU packing measured about half the tokens/s of no packing, docs/BENCHMARKS.md). "
        "Packing pays off with train.attention=flash_attention_2 on a GPU."
    )


def last_checkpoint(folder: Path) -> Path | None:
    checkpoints = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(checkpoints, key=lambda p: int(p.name.split("-")[-1]), default=None)


def peak_memory_bytes(device: str) -> int:
    import torch

    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def parallel_arguments(hardware: HardwareConfig, device: str) -> dict[str, Any]:
    """TrainingArguments for the ranks `accelerate launch` started; empty in a single process."""
    if not distributed.is_distributed():
        if hardware.distributed is not Distributed.none:
            log.warning(
                "hardware.distributed=%s but this is a single process: start it with "
                "`accelerate launch --num_processes N -m trainer ...` to train on N ranks",
                hardware.distributed.value,
            )
        return {}
    arguments: dict[str, Any] = {
        "ddp_backend": hardware.backend or ("nccl" if device == "cuda" else "gloo"),
        # Only the LoRA weights train; every one of them gets a gradient each step.
        "ddp_find_unused_parameters": False,
    }
    if hardware.distributed is Distributed.fsdp:
        arguments["fsdp"] = "full_shard auto_wrap"
        arguments["fsdp_config"] = {
            # QLoRA under FSDP: flat parameters mix frozen 4-bit and trainable LoRA weights.
            "use_orig_params": False,
            "cpu_ram_efficient_loading": True,
            "sync_module_states": True,
        }
    return arguments


def sft_arguments(cfg: TrainerConfig, checkpoints: Path, device: str, dtype: DType) -> Any:
    from trl import SFTConfig

    train = cfg.train
    return SFTConfig(
        **parallel_arguments(cfg.hardware, device),
        output_dir=str(checkpoints),
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        max_length=cfg.data.max_length,
        packing=train.packing,
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        pad_to_multiple_of=train.pad_to_multiple_of,
        gradient_checkpointing=train.gradient_checkpointing,
        eval_strategy="steps",
        eval_steps=train.eval_steps,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=2,
        logging_steps=train.logging_steps,
        seed=train.seed,
        data_seed=train.seed,
        bf16=dtype is DType.bfloat16,
        fp16=dtype is DType.float16,
        use_cpu=device == "cpu",
        report_to=list(train.report_to) or "none",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        # The run's console shows its own bar of steps (StepBar); tqdm's would go to the log file.
        disable_tqdm=True,
    )


def step_bar_callback(bar: Bar) -> Any:
    """A TrainerCallback moving `bar` to the global step, with the latest training and eval loss."""
    from transformers import TrainerCallback

    class StepBar(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            bar.set(state.global_step, total=state.max_steps)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            bar.set(state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                bar.note(f"loss {logs['loss']:.3f}")
            elif logs and "eval_loss" in logs:
                bar.note(f"eval loss {logs['eval_loss']:.3f}")

    return StepBar()


def run(ctx: StageContext) -> dict[str, Any]:
    import torch
    from peft import prepare_model_for_kbit_training

    cfg = ctx.cfg
    if cfg.hardware.num_threads:
        torch.set_num_threads(cfg.hardware.num_threads)
    device = pick_device(cfg.hardware)
    dtype = compute_dtype(cfg.train.qlora, device)
    tokenizer = load_tokenizer(cfg.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data_dir = ctx.stage_dir(Stage.data)
    train_set = load_split(data_dir / "train.jsonl", tokenizer)
    eval_set = load_split(data_dir / "eval.jsonl", tokenizer)

    started = time.time()
    model = load_quantized_base(cfg, device, dtype)
    keep_4bit_layout_for_training(model)
    check_lora(cfg.lora, model)
    if warning := packing_warning(cfg.train.packing, getattr(model.config, "_attn_implementation", None)):
        log.warning(warning)
    quantized_modules = quantized_module_names(model)
    if cfg.train.prepare_kbit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.train.gradient_checkpointing
        )
    if device == "cpu" and not score_only_labelled_positions():
        log.warning("this TRL scores every position through the LM head on a CPU: training runs slower")
    checkpoints = ctx.out_dir / "checkpoints"
    trainer = sft_trainer_class()(
        model=model,
        args=sft_arguments(cfg, checkpoints, device, dtype),
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora, model),
    )
    trainer.modules_to_save_lr = cfg.train.modules_to_save_learning_rate
    if cast := keep_adapter_in_float32(trainer.model, dtype):
        log.info("training the %d adapter tensors in float32 (TRL had cast them to bf16)", cast)
    resume = last_checkpoint(checkpoints)
    metrics_path = ctx.out_dir / "eval_before.json"
    measure_before = resume is None or not metrics_path.exists()
    # All ranks take the same branch (evaluation is collective) before rank 0 writes anything.
    trainer.accelerator.wait_for_everyone()
    if measure_before:
        before = trainer.evaluate()["eval_loss"]
        if trainer.is_world_process_zero():
            metrics_path.write_text(json.dumps({"eval_loss": before}))
    else:
        before = json.loads(metrics_path.read_text())["eval_loss"]
    resumed_from_step = None
    if resume is not None:
        resumed_from_step = json.loads((resume / "trainer_state.json").read_text())["global_step"]
        log.info("resuming training from %s (step %d)", resume.name, resumed_from_step)
    else:
        log.info("training from step 0 (eval loss before: %.4f)", before)
    total = cfg.train.max_steps if cfg.train.max_steps > 0 else None
    with stage_bar(ctx.console, "train", total, "steps", show=trainer.is_world_process_zero()) as bar:
        trainer.add_callback(step_bar_callback(bar))
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    after = final_eval_loss(trainer)
    state = trainer.state
    summary = {
        "eval_loss_before": round(before, 4),
        "eval_loss_after": round(after, 4),
        "steps": state.global_step,
        "resumed_from_step": resumed_from_step,
    }
    adapter = ctx.out_dir / "adapter"
    # Collective under FSDP (the adapter is gathered from the shards); only rank 0 writes.
    trainer.save_model(str(adapter))
    if not trainer.is_world_process_zero():
        return summary
    # A pickle of the arguments; the run's config already records them.
    (adapter / "training_args.bin").unlink(missing_ok=True)
    tokenizer.save_pretrained(adapter)
    seconds = time.time() - started
    tokens_per_epoch = sum(len(ids) for ids in train_set["input_ids"])
    epochs_done = state.epoch or 0.0
    metrics = {
        "eval_loss_before": before,
        "eval_loss_after": after,
        "eval_perplexity_before": math.exp(before),
        "eval_perplexity_after": math.exp(after),
        "global_step": state.global_step,
        "resumed_from_step": resumed_from_step,
        "epochs": epochs_done,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "tokens_per_second": tokens_per_epoch
        * epochs_done
        / max(result.metrics.get("train_runtime", 0.0), 1e-9),
        "peak_memory_bytes": peak_memory_bytes(device),
        "seconds": seconds,
        "device": device,
        "processes": distributed.world_size(),
        "distributed": cfg.hardware.distributed.value if distributed.is_distributed() else "none",
        "compute_dtype": dtype.value,
        "learning_rates": learning_rates(trainer.model, trainer.optimizer),
        "train_loss_curve": [
            {"step": e["step"], "loss": e["loss"]} for e in state.log_history if "loss" in e and "step" in e
        ],
        "eval_loss_curve": [
            {"step": e["step"], "eval_loss": e["eval_loss"]} for e in state.log_history if "eval_loss" in e
        ],
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "adapter_dtypes": sorted(
            {dtype_name(p.dtype) for p in trainer.model.parameters() if p.requires_grad}
        ),
        # What the merge stage needs to rebuild the exact NF4 weights the adapter trained against.
        "quantized_modules": quantized_modules,
        "quantized_from_dtype": dtype.value,
    }
    (ctx.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(checkpoints, ignore_errors=True)
    metrics_path.unlink()
    log.info("eval loss %.4f -> %.4f in %d steps", before, after, state.global_step)
    return summary
