"""Training throughput and peak memory of our train stage against a plain TRL + PEFT script.

Two comparisons, each side in a fresh process, alternating, `--repeats` times each, medians:

- `--compare baseline` (default): our pipeline as users run it (the Hydra entry point with
  `stages=[data,train]` in a fresh run directory) against a plain TRL + PEFT script written
  here (`baseline`): the same model, the same pre-tokenized rows (the data stage's
  `train.jsonl`, encoded with `trainer.masking.encode_with_mask`), the same LoRA settings,
  NF4 double-quant load and SFTConfig values. The SFTConfig each side really built is
  recorded and diffed, so a drift between the two shows in the JSON.
- `--compare packing`: our pipeline with `train.packing=false` against `train.packing=true`.
- `--compare grouping`: our pipeline with `train.group_by_length=true` against `false`.

Both sides are measured by the same probe (installed in each child before anything runs): it
wraps `transformers.Trainer.training_step` to count the tokens of every collated batch (real
tokens: the attention mask's sum; in padding-free packed batches, which carry no padding,
every token) and adds a callback that stamps the end of every optimizer step. Tokens/s is
real tokens over the wall time from the end of step `--warmup-steps` to the end of the last
step: batch fetching, forward, backward and optimizer steps, no start-up, evaluation or
checkpointing. The padding fraction is pad tokens / all tokens of the collated batches.
Peak memory is the child's `ru_maxrss` (from wait4). Usage:

    python scripts/bench_train.py --model tiny --repeats 3 --out docs/benchmarks/train-tiny.json
    python scripts/bench_train.py --model large --repeats 3 --out docs/benchmarks/train-large.json
    python scripts/bench_train.py --model tiny --compare packing --out docs/benchmarks/packing-tiny.json
    python scripts/bench_train.py --model tiny --compare grouping --out docs/benchmarks/grouping-tiny.json
"""

from __future__ import annotations

import argparse
import json
import math
import runpy
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import bench_util as bu

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "trainer" / "assets" / "tiny-base"
# What the large model takes from the tiny base: its tokenizer and chat template (so the support-fr
# data tokenizes exactly as for the tiny base).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "chat_template.jinja")
# Steps per run and untimed warm-up steps: a tiny run takes about a minute, a large one a few.
DEFAULT_STEPS = {"tiny": (40, 5), "large": (5, 1)}
# The recipe's training settings (recipes/support-fr.yaml over conf/train/default.yaml): the plain
# baseline spells them out, as a user of TRL would.
RECIPE = {
    "batch_size": 8,
    "learning_rate": 1.0e-3,
    "epochs": 1.0,
    "lr_scheduler": "cosine",
    "warmup": 0.03,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_length": 512,
    "logging_steps": 10,
    "seed": 42,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    # train.prepare_kbit (default true): PEFT's prepare_model_for_kbit_training, which keeps the
    # norms, embeddings and head in float32. TRL no longer calls it, so the baseline does, as PEFT's
    # QLoRA guide shows; `same_params` in the JSON checks that both sides train the same dtypes.
    "prepare_kbit": True,
}
# SFTConfig fields that name paths or runs, not behaviour: left out of the diff.
ARGS_IGNORED = {"output_dir", "logging_dir", "run_name", "hub_token", "project", "trackio_space_id"}


# ---------------------------------------------------------------------------------------------
# The large model


def build_large(folder: Path, hidden: int, layers: int) -> Path:
    """A random-init Llama built by bench_merge's builder, with the tiny base's tokenizer.

    Only speed and memory are measured on it, so random weights are fine; the vocabulary must be
    the tiny tokenizer's (4,096) so the support-fr rows are valid input.
    """
    from bench_merge import build
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY)
    base, _ = build(folder, hidden, layers, len(tokenizer))
    for name in TOKENIZER_FILES:
        shutil.copy2(TINY / name, base / name)
    # The special-token ids of the tokenizer (bench_merge leaves LlamaConfig's defaults).
    tiny_config = json.loads((TINY / "config.json").read_text())
    config = json.loads((base / "config.json").read_text())
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        config[key] = tiny_config[key]
    (base / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copy2(TINY / "generation_config.json", base / "generation_config.json")
    return base


# ---------------------------------------------------------------------------------------------
# The probe (runs inside each child, identical for both sides)


class Probe:
    """Counts the tokens of every training micro-batch and stamps every optimizer step's end."""

    def __init__(self) -> None:
        self.pending_real = 0
        self.pending_total = 0
        self.steps: list[dict[str, float]] = []
        self.train_begin = 0.0
        self.train_end = 0.0
        self.args: dict[str, Any] = {}
        self.params: dict[str, dict[str, int]] = {}
        self.log_history: list[dict[str, Any]] = []
        self.memory: dict[str, dict[str, float]] = {}

    def count(self, inputs: dict[str, Any]) -> None:
        total = int(inputs["input_ids"].numel())
        if "attention_mask" in inputs:
            real = int(inputs["attention_mask"].sum())
        else:  # padding-free (packed) batch: one flattened row without pad tokens
            real = int(inputs["cu_seq_lens_q"][-1]) if "cu_seq_lens_q" in inputs else total
        self.pending_real += real
        self.pending_total += total

    def install(self) -> None:
        import transformers
        from transformers import TrainerCallback

        probe = self
        original_step = transformers.Trainer.training_step
        original_train = transformers.Trainer.train

        def training_step(self: Any, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            probe.count(inputs)
            return original_step(self, model, inputs, *args, **kwargs)

        class Stamp(TrainerCallback):
            def on_train_begin(
                self, args: Any, state: Any, control: Any, model: Any = None, **_: Any
            ) -> None:
                probe.train_begin = time.perf_counter()
                probe.memory["train_begin"] = rss_now_mib()
                probe.args = json.loads(args.to_json_string())
                for param in model.parameters():
                    key = f"{'trainable' if param.requires_grad else 'frozen'}/{str(param.dtype).split('.')[-1]}"
                    entry = probe.params.setdefault(key, {"tensors": 0, "elements": 0})
                    entry["tensors"] += 1
                    entry["elements"] += param.numel()

            def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
                probe.steps.append(
                    {
                        "step": state.global_step,
                        "t": time.perf_counter(),
                        "tokens": probe.pending_real,
                        "padded_tokens": probe.pending_total,
                    }
                )
                probe.pending_real = probe.pending_total = 0

            def on_train_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
                probe.train_end = time.perf_counter()
                probe.memory["train_end"] = rss_now_mib()
                probe.log_history = list(state.log_history)

        def train(self: Any, *args: Any, **kwargs: Any) -> Any:
            self.add_callback(Stamp())
            return original_train(self, *args, **kwargs)

        transformers.Trainer.training_step = training_step
        transformers.Trainer.train = train

    def result(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "train_call_s": self.train_end - self.train_begin,
            "first_step_end_after_train_begin_s": self.steps[0]["t"] - self.train_begin
            if self.steps
            else None,
            "args": self.args,
            "params": self.params,
            "log_history": self.log_history,
            "memory_marks": self.memory,
        }


def rss_now_mib() -> dict[str, float]:
    """Current RSS and the high-water mark so far: tells whether the peak falls inside training."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def force_liger() -> None:
    """--liger: TRL's use_liger_kernel on for whichever side builds an SFTConfig (ours has no key for it)."""
    from trl import SFTConfig

    original = SFTConfig.__post_init__

    def post_init(self: Any) -> None:
        self.use_liger_kernel = True
        original(self)

    SFTConfig.__post_init__ = post_init


# ---------------------------------------------------------------------------------------------
# The two sides


# The two sides of each comparison; the ratios are first side / second side.
COMPARISONS = {
    "baseline": ("ours", "baseline"),
    "packing": ("packing-on", "packing-off"),
    "grouping": ("grouped", "ungrouped"),
}


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """The user's command, `python -m trainer stages=[data,train] ...`, in this process."""
    overrides = [
        "stages=[data,train]",
        f"hydra.run.dir={spec['run_dir']}",
        f"cache_dir={spec['cache_dir']}",
        f"train.max_steps={spec['steps']}",
        # In-loop evaluation and checkpointing only after the last step (outside the timed window);
        # the baseline gets the same values.
        f"train.eval_steps={spec['steps']}",
        f"train.save_steps={spec['steps']}",
        f"train.packing={str(spec['packing']).lower()}",
        f"train.group_by_length={str(spec['group_by_length']).lower()}",
        # The baseline computes in bf16 (and TRL keeps its adapter in bf16) whatever the CPU.
        "train.qlora.compute_dtype=bfloat16",
    ]
    if spec["model"] != str(TINY):
        overrides.append(f"model.name_or_path={spec['model']}")
    overrides += spec["ours_overrides"]
    # Exactly `python -m trainer ...`: Hydra finds conf/ relative to the entry file only when it
    # runs as __main__.
    sys.argv = ["trainer", *overrides]
    runpy.run_module("trainer", run_name="__main__", alter_sys=True)
    run_dir = Path(spec["run_dir"])
    metrics = json.loads((run_dir / "train" / "metrics.json").read_text())
    done = json.loads((run_dir / "train" / "DONE.json").read_text())
    keep = ("tokens_per_second", "train_runtime_s", "peak_memory_bytes", "seconds", "eval_loss_before")
    return {
        "overrides": overrides,
        "metrics": {k: metrics.get(k) for k in keep},
        "stage_seconds": done["seconds"],
    }


def run_baseline(spec: dict[str, Any]) -> dict[str, Any]:
    """A plain TRL + PEFT QLoRA script: what one writes from the TRL and PEFT docs."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from trainer.masking import encode_with_mask

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def load(path: Path) -> Dataset:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        encoded = [encode_with_mask(tokenizer, row["messages"]) for row in rows]
        return Dataset.from_dict(
            {
                "input_ids": [e.input_ids for e in encoded],
                "assistant_masks": [e.assistant_masks for e in encoded],
            }
        )

    data = Path(spec["data_dir"])
    train_set, eval_set = load(data / "train.jsonl"), load(data / "eval.jsonl")
    model = AutoModelForCausalLM.from_pretrained(
        spec["model"],
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        ),
        dtype=torch.bfloat16,
        device_map={"": "cpu"},
    )
    if RECIPE["prepare_kbit"]:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    steps = spec["steps"]
    args = SFTConfig(
        output_dir=str(Path(spec["run_dir"]) / "checkpoints"),
        per_device_train_batch_size=RECIPE["batch_size"],
        per_device_eval_batch_size=RECIPE["batch_size"],
        gradient_accumulation_steps=1,
        learning_rate=RECIPE["learning_rate"],
        num_train_epochs=RECIPE["epochs"],
        max_steps=steps,
        lr_scheduler_type=RECIPE["lr_scheduler"],
        warmup_steps=RECIPE["warmup"],
        weight_decay=RECIPE["weight_decay"],
        max_grad_norm=RECIPE["max_grad_norm"],
        max_length=RECIPE["max_length"],
        packing=spec["packing"],
        eval_strategy="steps",
        eval_steps=steps,
        save_strategy="steps",
        save_steps=steps,
        save_total_limit=2,
        logging_steps=RECIPE["logging_steps"],
        # TRL's default is True; the recipe's (and the train stage's default) is False.
        gradient_checkpointing=False,
        seed=RECIPE["seed"],
        data_seed=RECIPE["seed"],
        bf16=True,
        use_cpu=True,
        report_to="none",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=False,
    )
    peft_config = LoraConfig(
        r=RECIPE["lora_r"],
        lora_alpha=RECIPE["lora_alpha"],
        lora_dropout=RECIPE["lora_dropout"],
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    trainer.save_model(str(Path(spec["run_dir"]) / "adapter"))
    return {}


def child(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    probe = Probe()
    probe.install()
    if spec["liger"]:
        force_liger()
    extra = {"ours": run_ours, "baseline": run_baseline}[spec["side"]](spec)
    payload = {**probe.result(), **extra, "memory": bu.child_maxrss_mib()}
    Path(spec["result"]).write_text(json.dumps(payload, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# The parent


def summarize(run: dict[str, Any], warmup: int) -> dict[str, float]:
    steps = run["probe"]["steps"]
    timed = steps[warmup:]
    seconds = timed[-1]["t"] - steps[warmup - 1]["t"]
    tokens = sum(s["tokens"] for s in timed)
    real = sum(s["tokens"] for s in steps)
    padded = sum(s["padded_tokens"] for s in steps)
    return {
        "tokens_per_s": tokens / seconds,
        "timed_tokens": tokens,
        "timed_seconds": seconds,
        "seconds_per_step": seconds / len(timed),
        "pad_fraction": 1 - real / padded,
        "tokens_per_step": real / len(steps),
        "peak_rss_mib": run["child"]["maxrss_kib"] / 1024,
        "child_wall_s": run["child"]["wall_s"],
        "train_call_s": run["probe"]["train_call_s"],
    }


def args_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[Any]]:
    keys = (set(a) | set(b)) - ARGS_IGNORED
    return {k: [a.get(k), b.get(k)] for k in sorted(keys) if a.get(k) != b.get(k)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["tiny", "large"], default="tiny")
    parser.add_argument("--compare", choices=list(COMPARISONS), default="baseline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: tiny 40, large 5)")
    parser.add_argument("--warmup-steps", type=int, help="untimed first steps (default: tiny 5, large 1)")
    parser.add_argument("--large-hidden", type=int, default=1024)
    parser.add_argument("--large-layers", type=int, default=16)
    parser.add_argument(
        "--liger", action="store_true", help="TRL use_liger_kernel on both sides (needs a GPU)"
    )
    parser.add_argument(
        "--ours-override",
        action="append",
        default=[],
        help="an extra Hydra override for our side only (a diagnostic, e.g. train.prepare_kbit=false)",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-train"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--max-wait", type=float, default=2400, help="seconds to wait for a quiet machine")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build-large", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.build_large:
        build_large(args.build_large, args.large_hidden, args.large_layers)
        return
    steps, warmup = DEFAULT_STEPS[args.model]
    steps = args.steps or steps
    warmup = args.warmup_steps if args.warmup_steps is not None else warmup
    if not 0 < warmup < steps:
        parser.error("--warmup-steps must be at least 1 and below --steps")
    out = args.out or Path(
        f"docs/benchmarks/{'train' if args.compare == 'baseline' else args.compare}-{args.model}.json"
    )
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)

    model = TINY
    if args.model == "large":
        folder = work / f"large-{args.large_hidden}x{args.large_layers}"
        bu.log(f"building (or reusing) the large model in {folder}")
        subprocess_check([bu.python(), __file__, "--build-large", str(folder), *large_flags(args)], work)
        model = folder / "base"
    parameters = checkpoint_parameters(model)

    # The data stage once, for the baseline's rows (ours runs it again in each fresh run dir).
    prep = work / f"prep-{args.model}"
    shutil.rmtree(prep, ignore_errors=True)
    prep_cmd = [
        bu.python(),
        "-m",
        "trainer",
        "stages=[data]",
        f"hydra.run.dir={prep}",
        f"cache_dir={work / 'cache'}",
    ]
    if model != TINY:
        prep_cmd.append(f"model.name_or_path={model}")
    subprocess_check(prep_cmd, work)

    sides = COMPARISONS[args.compare]
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for repeat in range(args.repeats):
        for side in sides if repeat % 2 == 0 else tuple(reversed(sides)):
            name = f"{side}-{repeat}"
            run_dir = work / "runs" / name
            spec = {
                "side": "baseline" if side == "baseline" else "ours",
                "model": str(model),
                "data_dir": str(prep / "data"),
                "run_dir": str(run_dir),
                "cache_dir": str(work / "cache"),
                "steps": steps,
                "packing": side == "packing-on",
                "group_by_length": side != "ungrouped",
                "liger": args.liger,
                "ours_overrides": args.ours_override,
                "result": str(work / f"{name}.result.json"),
            }
            spec_path = work / f"{name}.spec.json"
            spec_path.write_text(json.dumps(spec))
            bu.log(f"run {repeat + 1}/{args.repeats} {side}")
            result, info = bu.measured(
                [bu.python(), __file__, "--child", str(spec_path)],
                work / f"{name}.log",
                max_wait_s=args.max_wait,
                retries=2 if args.max_wait > 0 else 0,
                prepare=lambda run_dir=run_dir, spec=spec: fresh(run_dir, Path(spec["result"])),
            )
            probe = json.loads(Path(spec["result"]).read_text())
            run = {
                "child": {"wall_s": result.wall_s, "maxrss_kib": result.maxrss_kib, **info},
                "probe": probe,
            }
            run["summary"] = summarize(run, warmup)
            runs[side].append(run)
            s = run["summary"]
            bu.log(
                f"  {side}: {s['tokens_per_s']:.0f} tok/s, {s['seconds_per_step']:.2f} s/step, "
                f"peak {s['peak_rss_mib']:.0f} MiB, pad {s['pad_fraction']:.3f}, wall {s['child_wall_s']:.0f} s"
            )
            shutil.rmtree(run_dir, ignore_errors=True)

    metrics = list(runs[sides[0]][0]["summary"])
    median = {side: {m: bu.median([r["summary"][m] for r in runs[side]]) for m in metrics} for side in sides}
    a, b = sides
    ratios = {
        "tokens_per_s": median[a]["tokens_per_s"] / median[b]["tokens_per_s"],
        "peak_rss": median[a]["peak_rss_mib"] / median[b]["peak_rss_mib"],
        "child_wall": median[a]["child_wall_s"] / median[b]["child_wall_s"],
    }
    first = {side: runs[side][0]["probe"] for side in sides}
    same_batches = [s["tokens"] for s in first[a]["steps"]] == [s["tokens"] for s in first[b]["steps"]]
    report = {
        "benchmark": f"train throughput and memory, {a} vs {b}",
        "compare": args.compare,
        "sides": list(sides),
        "ratio_of": f"{a}/{b}",
        **bu.provenance("bench_train.py"),
        "model": {"name": args.model, "path": str(model), "parameters": parameters},
        "steps": steps,
        "warmup_steps": warmup,
        "repeats": args.repeats,
        "liger": args.liger,
        "ours_overrides": args.ours_override,
        "recipe": RECIPE,
        "method": {
            "tokens_per_s": "real (non-pad) tokens of the collated batches of the steps after the warm-up steps, "
            "over the wall time from the end of the last warm-up step to the end of the last step",
            "peak_rss": "ru_maxrss of the child process (os.wait4)",
            "pad_fraction": "1 - real tokens / all tokens of the collated batches, over every step",
        },
        "same_batches": same_batches,
        "sft_config_diff": args_diff(first[a]["args"], first[b]["args"]),
        "same_params": first[a]["params"] == first[b]["params"],
        "params": {side: first[side]["params"] for side in sides},
        "contended_runs": sum(r["child"]["contended"] for side in sides for r in runs[side]),
        "runs": {
            side: [{"summary": r["summary"], "child": r["child"], **extras(r)} for r in runs[side]]
            for side in sides
        },
        "median": median,
        "ratios": ratios,
    }
    bu.write_json(out, report)
    print_table(report)
    from bench_plot import plot_all

    plot_all(out.parent)


def extras(run: dict[str, Any]) -> dict[str, Any]:
    probe = run["probe"]
    losses = [{"step": e["step"], "loss": e["loss"]} for e in probe["log_history"] if "loss" in e]
    kept = {
        "losses": losses,
        "first_step_end_after_train_begin_s": probe["first_step_end_after_train_begin_s"],
    }
    for key in ("metrics", "stage_seconds", "memory", "memory_marks"):
        if key in probe:
            kept[key] = probe[key]
    return kept


def fresh(run_dir: Path, result: Path) -> None:
    """Before each attempt: no run directory (its finished stages would be skipped), no old result."""
    shutil.rmtree(run_dir, ignore_errors=True)
    result.unlink(missing_ok=True)


def checkpoint_parameters(folder: Path) -> int:
    """Parameter count from the safetensors headers (8-byte length, then JSON): no torch needed."""
    total = 0
    for path in folder.glob("*.safetensors"):
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total


def large_flags(args: argparse.Namespace) -> list[str]:
    return ["--large-hidden", str(args.large_hidden), "--large-layers", str(args.large_layers)]


def subprocess_check(argv: list[str], work: Path) -> None:
    import subprocess

    log_path = work / "setup.log"
    with open(log_path, "a") as out:
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if code:
        raise SystemExit(f"{' '.join(argv)} failed ({code}); see {log_path}")


def print_table(report: dict[str, Any]) -> None:
    from bench_plot import TRAIN_METRICS

    a, b = report["sides"]
    print(
        f"\n{report['model']['name']} model ({report['model']['parameters'] / 1e6:.0f}M params), "
        f"{report['steps']} steps ({report['warmup_steps']} untimed), medians of {report['repeats']}"
    )
    print(f"{'':<26}{a:>14}{b:>14}{'ratio':>8}")
    for label, key, fmt in TRAIN_METRICS:
        va, vb = report["median"][a][key], report["median"][b][key]
        ratio = f"{va / vb:.3f}" if vb else "-"
        print(f"{label:<26}{fmt.format(va):>14}{fmt.format(vb):>14}{ratio:>8}")
    print(
        f"same batches: {report['same_batches']}; SFTConfig differences: {report['sft_config_diff'] or 'none'}"
    )
    print(f"same parameter dtypes and counts: {report['same_params']}")
    print(f"contended runs: {report['contended_runs']}")


if __name__ == "__main__":
    main()
