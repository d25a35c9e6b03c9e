"""Scoring a model in the runtime that will serve it, in a fresh process, as a user would load it.

`python -m trainer.runtimes <runtime> <model_dir> <eval.jsonl> <out.json>` loads the model
(transformers for BF16, GPTQModel for GPTQ and AWQ, llama.cpp for GGUF), scores the assistant
tokens of the eval split and writes perplexity, the scored token count and greedy replies to the
task prompts (or a few eval prompts), generated as the runtime serves them. For llama.cpp, <model_dir> is a GGUF artifact folder (one .gguf beside the HF tokenizer
files that give the eval tokens) or the .gguf file itself. A
fresh process proves the artifact loads from its files alone, with nothing left in memory
from the process that wrote it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainer.child import describe_exit, output_tail
from trainer.errors import TrainerError

RUNTIMES = ("transformers", "gptqmodel", "llama.cpp")


class ScoringFailed(TrainerError):
    """A model's scoring child failed: crashed, ran out of memory or raised."""

    def __init__(self, runtime: str, reason: str, tail: str, model_dir: Path) -> None:
        super().__init__(
            f"scoring {model_dir} with {runtime} failed ({reason})" + (f":\n{tail}" if tail else "")
        )
        self.reason = f"{runtime} {reason}"
        self.tail = tail


def load(runtime: str, model_dir: Path) -> Any:
    """A transformers-compatible causal LM on the best available device."""
    import torch

    from trainer.precision import fast_float

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if runtime == "transformers":
        from transformers import AutoModelForCausalLM

        # BF16 weights run upcast to float32 on a CPU without native bf16 (exact, and many times faster).
        return AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=fast_float(device), device_map={"": device}
        )
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))
    from gptqmodel import GPTQModel

    return GPTQModel.load(str(model_dir), device=device).model


def sample_prompts(eval_jsonl: Path, count: int) -> list[list[dict[str, str]]]:
    """The first `count` eval conversations up to their first user turn."""
    rows = [json.loads(line) for line in eval_jsonl.read_text(encoding="utf-8").splitlines()][:count]
    prompts = []
    for row in rows:
        first_user = next(i for i, m in enumerate(row["messages"]) if m["role"] == "user")
        prompts.append(row["messages"][: first_user + 1])
    return prompts


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[Mapping[str, str]]],
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[dict[str, Any]]:
    """Greedy replies through the tokenizer's chat template, in left-padded batches.

    `finish_reason` is `stop` when the model wrote an end-of-generation token (the generation
    config's eos ids) within `max_new_tokens`, `length` when it ran out, as llama.cpp reports it.
    """
    import torch

    device = next(model.parameters()).device
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = []
    for start in range(0, len(prompts), batch_size):
        batch = [[dict(m) for m in p] for p in prompts[start : start + batch_size]]
        encoded = tokenizer.apply_chat_template(
            batch, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            generated = model.generate(
                input_ids=encoded["input_ids"].to(device),
                attention_mask=encoded["attention_mask"].to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        for row in generated[:, encoded["input_ids"].shape[1] :].tolist():
            ended = next((i for i, token in enumerate(row) if token in eos_ids), None)
            kept = row if ended is None else row[:ended]
            out.append(
                {
                    "reply": tokenizer.decode(kept, skip_special_tokens=True).strip(),
                    "finish_reason": "length" if ended is None else "stop",
                    "new_tokens": len(kept) + (ended is not None),
                }
            )
    return out


def with_prompts(
    prompts: Sequence[Sequence[Mapping[str, str]]], generations: list[dict[str, Any]], count: int
) -> list[dict[str, Any]]:
    """The first `count` generations with their last prompt message, for the report's side-by-side replies."""
    return [
        {"prompt": p[-1]["content"], **g} for p, g in zip(prompts[:count], generations[:count], strict=True)
    ]


def score(
    runtime: str,
    model_dir: Path,
    eval_jsonl: Path,
    samples: int,
    max_new_tokens: int,
    tokenizer_dir: Path | None = None,
    prompts: Sequence[Sequence[Mapping[str, str]]] | None = None,
) -> dict[str, Any]:
    """Perplexity on the eval split, and greedy replies to `prompts` (the task rows; by default the
    first `samples` eval conversations) generated the way the runtime serves the model.

    tokenizer_dir: where the run's tokenizer and chat template live, when model_dir has another (the base).
    """
    from transformers import AutoTokenizer

    from trainer.perplexity import eval_tokens, score_transformers

    chat = list(prompts) if prompts is not None else sample_prompts(eval_jsonl, samples)
    if runtime == "llama.cpp":
        return score_llama_cpp(model_dir, eval_jsonl, samples, max_new_tokens, tokenizer_dir, chat)
    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or model_dir)
    tokens = eval_tokens(eval_jsonl, tokenizer)
    model = load(runtime, model_dir)
    result = score_transformers(model, tokens)
    generated_at = time.time()
    generations = generate(model, tokenizer, chat, max_new_tokens) if chat else []
    return {
        "runtime": runtime,
        "nll": result.nll,
        "perplexity": result.perplexity,
        "tokens": result.tokens,
        "replies": with_prompts(chat, generations, samples),
        "generations": generations,
        "generation_seconds": round(time.time() - generated_at, 2),
        "seconds": round(time.time() - started, 2),
    }


def score_llama_cpp(
    model_path: Path,
    eval_jsonl: Path,
    samples: int,
    max_new_tokens: int,
    tokenizer_dir: Path | None,
    prompts: Sequence[Sequence[Mapping[str, str]]],
) -> dict[str, Any]:
    """A GGUF scored by llama.cpp on the eval token ids built by the HF tokenizer files beside it
    (or in `tokenizer_dir` when that is a folder); the replies go through llama.cpp's chat path,
    with the chat template and end-of-generation tokens stored in the GGUF, as llama-server uses them."""
    from transformers import AutoTokenizer

    from trainer.gguf import chat_replies, gguf_file, score_gguf
    from trainer.perplexity import eval_tokens

    started = time.time()
    gguf = gguf_file(model_path)
    source = tokenizer_dir if tokenizer_dir is not None and tokenizer_dir.is_dir() else gguf.parent
    tokens = eval_tokens(eval_jsonl, AutoTokenizer.from_pretrained(source))
    result = score_gguf(gguf, tokens)
    generated_at = time.time()
    generations = chat_replies(gguf, prompts, max_new_tokens) if prompts else []
    return {
        "runtime": "llama.cpp",
        "nll": result.nll,
        "perplexity": result.perplexity,
        "tokens": result.tokens,
        "replies": generations[:samples],
        "generations": generations,
        "generation_seconds": round(time.time() - generated_at, 2),
        "seconds": round(time.time() - started, 2),
    }


def score_in_fresh_process(
    runtime: str,
    model_dir: Path,
    eval_jsonl: Path,
    samples: int = 3,
    max_new_tokens: int = 48,
    tokenizer_dir: Path | None = None,
    prompts: Sequence[Sequence[Mapping[str, str]]] | None = None,
) -> dict[str, Any]:
    # Private files: never beside the model (the base may be read-only, or scored by a concurrent job).
    handle, name = tempfile.mkstemp(prefix="trainer-score-", suffix=".json")
    os.close(handle)
    out = Path(name)
    out.unlink()
    prompts_file = out.with_suffix(".prompts.json")
    prompts_file.write_text(
        json.dumps(None if prompts is None else [list(p) for p in prompts], ensure_ascii=False)
    )
    command = [
        sys.executable,
        "-m",
        "trainer.runtimes",
        runtime,
        str(model_dir),
        str(eval_jsonl),
        str(out),
        str(samples),
        str(max_new_tokens),
        str(tokenizer_dir or model_dir),
        str(prompts_file),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not out.exists():
            raise ScoringFailed(
                runtime,
                describe_exit(result.returncode),
                output_tail(result.stdout, result.stderr),
                model_dir,
            )
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
        prompts_file.unlink(missing_ok=True)


def main(argv: list[str]) -> None:
    runtime, model_dir, eval_jsonl, out = argv[:4]
    samples, max_new_tokens = (int(argv[4]), int(argv[5])) if len(argv) > 5 else (3, 48)
    tokenizer_dir = Path(argv[6]) if len(argv) > 6 else None
    prompts = json.loads(Path(argv[7]).read_text(encoding="utf-8")) if len(argv) > 7 else None
    if runtime not in RUNTIMES:
        raise SystemExit(f"unknown runtime {runtime!r}; one of {RUNTIMES}")
    scored = score(
        runtime, Path(model_dir), Path(eval_jsonl), samples, max_new_tokens, tokenizer_dir, prompts
    )
    Path(out).write_text(json.dumps(scored, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
