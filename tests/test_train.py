"""The train stage: the assistant-only mask, refused LoRA configs, the bf16 fallback, resume after a kill."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, compose_typed, run_trainer
from reliability import record

from trainer.config import ComputeDType, DType, LoraConfig, QLoraConfig
from trainer.errors import ConfigError
from trainer.masking import encode_with_mask
from trainer.stages import train as train_stage

CONVERSATION = [
    {"role": "system", "content": "Vous êtes l'agent du service client."},
    {"role": "user", "content": "Bonjour, où en est ma commande CMD-123456 ?"},
    {"role": "assistant", "content": "Elle est partie hier.\nLivraison prévue jeudi."},
    {"role": "user", "content": "Merci !"},
    {"role": "assistant", "content": "Avec plaisir, bonne journée."},
]

# A ChatML-like template without {% generation %} markers, as many hub models ship.
PLAIN_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def masked_text(tokenizer, encoded) -> str:
    return "".join(
        tokenizer.decode([t])
        for t, keep in zip(encoded.input_ids, encoded.assistant_masks, strict=True)
        if keep
    )


def test_mask_covers_exactly_the_assistant_turns(tiny_tokenizer) -> None:
    encoded = encode_with_mask(tiny_tokenizer, CONVERSATION)
    assert (
        encoded.input_ids
        == tiny_tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"]
    )
    kept = masked_text(tiny_tokenizer, encoded)
    assert kept.replace(" ", "") == (
        "Elle est partie hier.\nLivraison prévue jeudi.<|end|>\nAvec plaisir, bonne journée.<|end|>\n"
    ).replace(" ", "")
    dropped = "".join(
        tiny_tokenizer.decode([t])
        for t, keep in zip(encoded.input_ids, encoded.assistant_masks, strict=True)
        if not keep
    )
    for message in CONVERSATION:
        if message["role"] != "assistant":
            assert message["content"].replace(" ", "") in dropped.replace(" ", "")


def test_mask_equals_the_templates_generation_markers(tiny_tokenizer) -> None:
    reference = tiny_tokenizer.apply_chat_template(
        CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    encoded = encode_with_mask(tiny_tokenizer, CONVERSATION)
    assert encoded.input_ids == reference["input_ids"]
    # the markers wrap content and <|end|>; our mask also keeps the newline the template puts after <|end|>
    ours = [i for i, keep in enumerate(encoded.assistant_masks) if keep]
    theirs = [i for i, keep in enumerate(reference["assistant_masks"]) if keep]
    assert set(theirs) <= set(ours)
    extra = [tiny_tokenizer.decode([encoded.input_ids[i]]) for i in sorted(set(ours) - set(theirs))]
    assert all(piece.strip() == "" for piece in extra), extra


def test_mask_for_a_template_without_generation_markers(tiny_tokenizer) -> None:
    original = tiny_tokenizer.chat_template
    tiny_tokenizer.chat_template = PLAIN_TEMPLATE
    try:
        encoded = encode_with_mask(tiny_tokenizer, CONVERSATION)
    finally:
        tiny_tokenizer.chat_template = original
    kept = masked_text(tiny_tokenizer, encoded).replace(" ", "")
    assert "Ellestpartiehier" in kept.replace(" ", "") or "Elleestpartiehier" in kept
    assert "Bonjour" not in kept and "Vousêtes" not in kept and "Merci" not in kept
    assert sum(encoded.assistant_masks) > 10


def test_template_that_rewrites_history_is_refused(tiny_tokenizer) -> None:
    original = tiny_tokenizer.chat_template
    # renders only the last message: earlier turns change once later ones follow
    tiny_tokenizer.chat_template = "{{ messages[-1].content }}{% if add_generation_prompt %}>>{% endif %}"
    try:
        with pytest.raises(Exception, match="renders earlier turns differently"):
            encode_with_mask(tiny_tokenizer, CONVERSATION)
    finally:
        tiny_tokenizer.chat_template = original


def test_bf16_falls_back_to_fp16_on_gpus_without_it(monkeypatch, caplog) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    explicit = QLoraConfig(compute_dtype=ComputeDType.bfloat16)
    with caplog.at_level(logging.WARNING):
        assert train_stage.compute_dtype(explicit, "cuda") is DType.float16
    assert "no bfloat16" in caplog.text
    assert train_stage.compute_dtype(explicit, "cpu") is DType.bfloat16  # asked for: kept
    assert train_stage.compute_dtype(QLoraConfig(), "cuda") is DType.float16


def test_auto_computes_in_bf16_only_where_the_cpu_runs_it_natively(monkeypatch) -> None:
    """On an AVX2-only CPU torch emulates bf16 (a QLoRA step 19x slower than float32)."""
    import torch

    for native, expected in ((True, DType.bfloat16), (False, DType.float32)):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        assert train_stage.compute_dtype(QLoraConfig(), "cpu") is expected


def test_the_adapter_trains_in_float32_unless_the_run_computes_in_bf16() -> None:
    """SFTTrainer casts a quantized model's trainable weights to bf16: emulated, slow GEMMs on most CPUs."""
    import torch

    for dtype, expected in (
        (DType.float32, torch.float32),
        (DType.float16, torch.float32),
        (DType.bfloat16, torch.bfloat16),
    ):
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)).to(torch.bfloat16)
        model[0].requires_grad_(False)  # a frozen base weight keeps its dtype
        cast = train_stage.keep_adapter_in_float32(model, dtype)
        assert model[1].weight.dtype is expected and model[1].bias.dtype is expected
        assert model[0].weight.dtype is torch.bfloat16
        assert cast == (0 if expected is torch.bfloat16 else 2)


def test_the_final_eval_reuses_the_one_logged_at_the_last_step() -> None:
    from types import SimpleNamespace

    calls = []

    def evaluate() -> dict[str, float]:
        calls.append(1)
        return {"eval_loss": 2.5}

    logged = [{"step": 10, "eval_loss": 4.0}, {"step": 20, "loss": 3.1}, {"step": 20, "eval_loss": 3.0}]
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=20, log_history=logged), evaluate=evaluate)
    assert train_stage.final_eval_loss(trainer) == 3.0 and not calls
    trainer.state.global_step = 25  # the last eval was before the final step: measured again
    assert train_stage.final_eval_loss(trainer) == 2.5 and calls == [1]


def test_the_fused_lm_head_scores_only_labelled_positions_on_a_cpu_with_the_same_loss(monkeypatch) -> None:
    """TRL's fused head projected every prompt and padding position on a CPU (46% of a default
    step); after the switch it projects the labelled ones only, and the loss is still the mean
    cross-entropy of the labelled tokens computed from full logits."""
    import torch
    import trl.trainer.utils as trl_utils
    from transformers import LlamaConfig, LlamaForCausalLM

    monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton)  # restored after the test
    projected_rows = []
    kernel = trl_utils._ChunkedLogProbFunction

    class CountingKernel:
        @staticmethod
        def apply(hidden, *args):
            projected_rows.append(hidden.shape[0])
            return kernel.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", CountingKernel)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    model = LlamaForCausalLM(config)
    trl_utils.add_fused_lm_head(model)
    input_ids = torch.randint(0, 64, (2, 12))
    labels = input_ids.clone()
    labels[:, :8] = -100  # prompt tokens
    labels[1, 10:] = -100  # padding
    labelled = int((labels[:, 1:] != -100).sum())

    def fused_loss() -> float:
        return model(input_ids=input_ids, labels=labels, fused_lm_head=True).loss.item()

    before = fused_loss()
    assert projected_rows == [2 * 11]  # every position but the last of each row
    assert train_stage.score_only_labelled_positions() and train_stage.score_only_labelled_positions()
    after = fused_loss()
    assert projected_rows[1:] == [labelled] == [6]
    logits = model(input_ids=input_ids).logits[:, :-1]
    reference = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), labels[:, 1:].reshape(-1)).item()
    assert after == pytest.approx(reference, rel=1e-5) and after == pytest.approx(before, rel=1e-5)


def test_modules_trained_in_full_take_their_own_learning_rate_through_training(tmp_path: Path) -> None:
    """train.modules_to_save_learning_rate reaches the optimizer and the scheduler of a real TRL step:
    the embedding and LM head copies PEFT trains in full step at it, the LoRA factors at the run's."""
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    tokenizer = AutoTokenizer.from_pretrained(REPO / "trainer" / "assets" / "tiny-base")
    model = AutoModelForCausalLM.from_pretrained(
        REPO / "trainer" / "assets" / "tiny-base", dtype=torch.float32
    )
    lora = LoraConfig(r=4, alpha=8, dropout=0.0, modules_to_save=["embed_tokens", "lm_head"])
    model = get_peft_model(model, train_stage.peft_config(lora, model))
    encoded = [encode_with_mask(tokenizer, CONVERSATION)] * 2
    rows = {
        "input_ids": [e.input_ids for e in encoded],
        "assistant_masks": [e.assistant_masks for e in encoded],
    }
    args = SFTConfig(
        output_dir=str(tmp_path), learning_rate=3e-3, max_steps=1, lr_scheduler_type="constant",
        per_device_train_batch_size=2, use_cpu=True, report_to="none", save_strategy="no",
        remove_unused_columns=False, disable_tqdm=True,
    )  # fmt: skip
    trainer = train_stage.sft_trainer_class()(
        model=model, args=args, train_dataset=Dataset.from_dict(rows), processing_class=tokenizer
    )
    trainer.modules_to_save_lr = 5e-4
    head = dict(model.named_parameters())["base_model.model.lm_head.modules_to_save.default.weight"]
    before = head.detach().clone()
    trainer.train()
    adapter, saved = trainer.optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    assert {names[id(p)].split(".modules_to_save.")[0].rsplit(".", 1)[-1] for p in saved["params"]} == {
        "embed_tokens",
        "lm_head",
    }
    assert adapter["params"] and all("lora_" in names[id(p)] for p in adapter["params"])
    assert len(adapter["params"]) + len(saved["params"]) == len(names)
    assert trainer.lr_scheduler.get_last_lr() == pytest.approx([3e-3, 5e-4])
    assert train_stage.learning_rates(model, trainer.optimizer) == {"lora": 3e-3, "modules_to_save": 5e-4}
    # Adam's first step moves each weight by about the learning rate: the head by 5e-4, not 3e-3.
    step = (head.detach() - before).abs().max().item()
    assert 2e-4 < step < 1e-3


def test_packing_warns_unless_attention_stays_within_each_row() -> None:
    for kernel in ("sdpa", "eager", None):
        warning = train_stage.packing_warning(True, kernel)
        assert warning is not None and "train.packing=true" in warning
        assert "train.attention=flash_attention_2" in warning
    assert train_stage.packing_warning(True, "flash_attention_2") is None
    assert train_stage.packing_warning(False, "sdpa") is None


@pytest.mark.parametrize(
    ("grouped", "sampler"), [("true", "LengthGroupedSampler"), ("false", "RandomSampler")]
)
def test_batches_group_rows_of_similar_length_unless_switched_off(
    grouped: str, sampler: str, tmp_path: Path
) -> None:
    """The sampler transformers' Trainer builds from the stage's arguments (padding is most of the
    difference in step time on a CPU)."""
    from transformers import Trainer

    cfg = compose_typed(["recipe=support-fr", f"train.group_by_length={grouped}"])
    arguments = train_stage.sft_arguments(cfg, tmp_path, "cpu", DType.float32)
    # A dataset, not a batch: the sampler sorts 50 batches' worth of rows at once.
    lengths = [5, 40, 7, 38, 6, 41, 8, 39] * 200
    dataset = [{"input_ids": [1] * n} for n in lengths]
    holder = type("Holder", (), {"args": arguments, "train_dataset": dataset, "processing_class": None})()
    built = Trainer._get_train_sampler(holder, dataset)
    assert type(built).__name__ == sampler
    order = list(built)
    size = cfg.train.batch_size
    spreads = [
        max(batch) - min(batch)
        for batch in (
            [lengths[i] for i in order[first : first + size]] for first in range(0, len(order), size)
        )
    ]
    mean_spread = sum(spreads) / len(spreads)
    # Random batches of 8 almost always mix short (5-8) and long (38-41) rows.
    assert mean_spread < 5 if grouped == "true" else mean_spread > 25, mean_spread


@pytest.mark.parametrize(("setting", "width"), [("64", 64), ("null", 41)])
def test_batches_are_padded_to_a_multiple_of_64_unless_switched_off(
    setting: str, width: int, tmp_path: Path
) -> None:
    """Few distinct batch widths, so oneDNN's kernel cache stops growing (2.2 against 3.6 GB after
    100 default steps on CPU): the width TRL's collator gives a batch under the stage's arguments."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    cfg = compose_typed(["recipe=support-fr", f"train.pad_to_multiple_of={setting}"])
    arguments = train_stage.sft_arguments(cfg, tmp_path, "cpu", DType.float32)
    collate = DataCollatorForLanguageModeling(pad_token_id=3, pad_to_multiple_of=arguments.pad_to_multiple_of)
    batch = collate([{"input_ids": [1] * n} for n in (5, 41, 17)])
    assert batch["input_ids"].shape == (3, width)


def test_flash_attention_on_cpu_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"train\.attention: .*flash_attention_2 needs a CUDA GPU"):
        compose_typed(["recipe=support-fr", "hardware.device=cpu", "train.attention=flash_attention_2"])


@pytest.mark.slow
@pytest.mark.parametrize(("choice", "kernel"), [("auto", "sdpa"), ("eager", "eager")])
def test_attention_choice_reaches_the_loaded_model(choice: str, kernel: str) -> None:
    cfg = compose_typed(["recipe=support-fr", f"train.attention={choice}"])
    model = train_stage.load_quantized_base(cfg, "cpu", DType.bfloat16)
    assert model.config._attn_implementation == kernel


@pytest.mark.slow
def test_4bit_layers_keep_their_training_layout_through_an_eval_pass() -> None:
    """On an AVX512-BF16 CPU bitsandbytes repacks a 4-bit weight for its inference kernel in eval
    mode and never back; training after the first eval pass broke (Qwen2's bias). Simulated here on
    any CPU by saying every layer has that kernel."""
    import torch
    from bitsandbytes.nn import Linear4bit

    cfg = compose_typed(["recipe=support-fr"])
    model = train_stage.load_quantized_base(cfg, "cpu", DType.float32)
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = True
    assert train_stage.keep_4bit_layout_for_training(model) == len(layers) > 0
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 20, 30, 40]]))
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)


@pytest.mark.slow
def test_unknown_lora_target_is_refused_before_training(tiny_tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(REPO / "trainer" / "assets" / "tiny-base")
    train_stage.check_lora(LoraConfig(target_modules=["q_proj", "v_proj"]), model)
    with pytest.raises(
        ConfigError, match=r"lora.target_modules: \['query_key_value'\] not in this model.*q_proj"
    ):
        train_stage.check_lora(LoraConfig(target_modules=["q_proj", "query_key_value"]), model)
    with pytest.raises(ConfigError, match=r"lora\.modules_to_save"):
        train_stage.check_lora(LoraConfig(modules_to_save=["embed"]), model)


@pytest.mark.slow
def test_bad_lora_config_fails_the_run_before_training(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_trainer(
        [
            "stages=[data,train]",
            "lora.target_modules=[c_attn]",
            "data.calibration.samples=8",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "lora.target_modules: ['c_attn'] not in this model" in result.stdout
    assert (run_dir / "data" / "DONE.json").exists()
    assert not (run_dir / "train").exists()
    assert not list((run_dir / ".train.partial").glob("checkpoints/checkpoint-*"))


@pytest.mark.slow
@pytest.mark.reliability
def test_killed_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        "stages=[data,train]",
        "train.max_steps=12",
        "train.save_steps=4",
        "train.eval_steps=100",
        "train.logging_steps=2",
        "train.batch_size=4",
        # Two optimizer groups must survive the resume too.
        "train.modules_to_save_learning_rate=1e-3",
        "data.calibration.samples=8",
        "data.eval_size=24",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoints = run_dir / ".train.partial" / "checkpoints"
    deadline = time.time() + 600
    try:
        while not list(checkpoints.glob("checkpoint-*/trainer_state.json")):
            assert process.poll() is None, "training ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.5)
        time.sleep(1.0)  # let the checkpoint finish writing: a half-written one must be skipped anyway
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (run_dir / "train").exists()
    saved = sorted(
        int(p.name.split("-")[1])
        for p in checkpoints.glob("checkpoint-*")
        if (p / "trainer_state.json").exists()
    )
    assert saved and saved[-1] < 12

    result = run_trainer(args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"resuming training from checkpoint-{saved[-1]} (step {saved[-1]})" in result.stdout
    metrics = json.loads((run_dir / "train" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == saved[-1]
    assert metrics["global_step"] == 12
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert metrics["learning_rates"] == {"lora": 3e-3, "modules_to_save": 1e-3}
    # TRL casts the adapter to bf16; it trains in float32 unless the run computes in bf16.
    assert metrics["adapter_dtypes"] == ["bfloat16" if metrics["compute_dtype"] == "bfloat16" else "float32"]
    assert (run_dir / "train" / "adapter" / "adapter_model.safetensors").exists()
    assert not (run_dir / "train" / "checkpoints").exists()
    record(
        "crash: train",
        "SIGKILL after the first complete checkpoint",
        "the same command resumes from that checkpoint and ends at the planned step",
    )
