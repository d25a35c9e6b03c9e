"""Scoring a model in the runtime that will serve it, in a fresh process, as a user would load it.

`python -m trainer.runtimes <runtime> <model_dir> <eval.jsonl> <out.json>` loads the model
(transformers for BF16, GPTQModel for GPTQ and AWQ, llama.cpp for GGUF), scores the assistant
tokens of the eval split and writes perplexity, the scored token count and a few generated
replies. For llama.cpp, <model_dir> is a GGUF artifact folder (one .gguf beside the HF tokenizer
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
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError

RUNTIMES = ("transformers", "gptqmodel", "llama.cpp")


def load(runtime: str, model_dir: Path) -> Any:
    """A transformers-compatible causal LM on the best available device."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if runtime == "transformers":
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map={"": device})
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


def replies(
    model: Any, tokenizer: Any, eval_jsonl: Path, count: int, max_new_tokens: int
) -> list[dict[str, str]]:
    import torch

    device = next(model.parameters()).device
    out = []
    for prompt in sample_prompts(eval_jsonl, count):
        ids = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            generated = model.generate(
                input_ids=ids["input_ids"].to(device),
                attention_mask=ids["attention_mask"].to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
            )
        reply = tokenizer.decode(generated[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        out.append({"prompt": prompt[-1]["content"], "reply": reply.strip()})
    return out


def score(
    runtime: str,
    model_dir: Path,
    eval_jsonl: Path,
    samples: int,
    max_new_tokens: int,
    tokenizer_dir: Path | None = None,
) -> dict[str, Any]:
    """tokenizer_dir: where the run's tokenizer and chat template live, when model_dir has another (the base)."""
    from transformers import AutoTokenizer

    from trainer.perplexity import eval_tokens, score_transformers

    if runtime == "llama.cpp":
        return score_llama_cpp(model_dir, eval_jsonl, samples, max_new_tokens, tokenizer_dir)
    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or model_dir)
    tokens = eval_tokens(eval_jsonl, tokenizer)
    model = load(runtime, model_dir)
    result = score_transformers(model, tokens)
    return {
        "runtime": runtime,
        "nll": result.nll,
        "perplexity": result.perplexity,
        "tokens": result.tokens,
        "replies": replies(model, tokenizer, eval_jsonl, samples, max_new_tokens),
        "seconds": round(time.time() - started, 2),
    }


def score_llama_cpp(
    model_path: Path, eval_jsonl: Path, samples: int, max_new_tokens: int, tokenizer_dir: Path | None = None
) -> dict[str, Any]:
    """A GGUF scored by llama.cpp on the eval token ids built by the HF tokenizer files beside it
    (or in `tokenizer_dir` when that is a folder); the replies use the GGUF's own chat template."""
    from transformers import AutoTokenizer

    from trainer.gguf import chat_replies, gguf_file, score_gguf
    from trainer.perplexity import eval_tokens

    started = time.time()
    gguf = gguf_file(model_path)
    source = tokenizer_dir if tokenizer_dir is not None and tokenizer_dir.is_dir() else gguf.parent
    tokens = eval_tokens(eval_jsonl, AutoTokenizer.from_pretrained(source))
    result = score_gguf(gguf, tokens)
    return {
        "runtime": "llama.cpp",
        "nll": result.nll,
        "perplexity": result.perplexity,
        "tokens": result.tokens,
        "replies": chat_replies(gguf, sample_prompts(eval_jsonl, samples), max_new_tokens),
        "seconds": round(time.time() - started, 2),
    }


def score_in_fresh_process(
    runtime: str,
    model_dir: Path,
    eval_jsonl: Path,
    samples: int = 3,
    max_new_tokens: int = 48,
    tokenizer_dir: Path | None = None,
) -> dict[str, Any]:
    # A private file: never beside the model (the base may be read-only, or scored by a concurrent job).
    handle, name = tempfile.mkstemp(prefix="trainer-score-", suffix=".json")
    os.close(handle)
    out = Path(name)
    out.unlink()
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
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not out.exists():
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise TrainerError(
                f"scoring {model_dir} with {runtime} failed (exit {result.returncode}):\n{tail}"
            )
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def main(argv: list[str]) -> None:
    runtime, model_dir, eval_jsonl, out = argv[:4]
    samples, max_new_tokens = (int(argv[4]), int(argv[5])) if len(argv) > 5 else (3, 48)
    tokenizer_dir = Path(argv[6]) if len(argv) > 6 else None
    if runtime not in RUNTIMES:
        raise SystemExit(f"unknown runtime {runtime!r}; one of {RUNTIMES}")
    scored = score(runtime, Path(model_dir), Path(eval_jsonl), samples, max_new_tokens, tokenizer_dir)
    Path(out).write_text(json.dumps(scored, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
