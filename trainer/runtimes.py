"""Scoring a model in the runtime that will serve it, in a fresh process, as a user would load it.

`python -m trainer.runtimes <request.json> <out.json>` loads the model
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from trainer.child import describe_exit, output_tail
from trainer.errors import TrainerError
from trainer.memory import peak_rss_mib, release, reset_peak_rss
from trainer.precision import dtype_name

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
    return [first_turn(row["messages"]) for row in rows]


def first_turn(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """A conversation up to its first user message (the system prompt, if any, and that message)."""
    first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
    return messages[: first_user + 1]


def eos_token_ids(model: Any) -> set[int]:
    """The ids that end a reply: the generation config's eos, one id or a list."""
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


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
    eos_ids = eos_token_ids(model)
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


@dataclass
class Extras:
    """What a scoring child measures beside perplexity and replies.

    reference: merged BF16's top-k file: the child measures its KL divergence and top-1 agreement
    against it. write_reference: where the child saves its own top-k (the merged model's run).
    drift_texts: generic texts whose perplexity measures drift outside the domain.
    """

    reference: str | None = None
    write_reference: str | None = None
    drift_texts: list[str] = field(default_factory=list)
    drift_tokens: int = 8192
    # The recipe's context length: the KV cache a server holds for one sequence of it.
    context_length: int = 512


def _fidelity(tokens: Any, extras: Extras) -> Any:
    from trainer.evaluation.fidelity import Fidelity, TopK

    if extras.reference is None and extras.write_reference is None:
        return None
    reference = TopK.load(Path(extras.reference)) if extras.reference else None
    return Fidelity(tokens.scored_per_sequence(), reference)


def _finish(fidelity: Any, extras: Extras) -> dict[str, Any] | None:
    if fidelity is None:
        return None
    if extras.write_reference:
        fidelity.top().save(Path(extras.write_reference))
    return fidelity.summary()


class Stopwatch:
    """Seconds per part of a scoring run, each lap the time since the previous one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.seconds[part] = round(now - self._last, 2)
        self._last = now


# Prompt length of the prompt-processing speed figure (batch 1).
PROMPT_TOKENS = 128


def _serving(
    load_seconds: float,
    generations: list[dict[str, Any]],
    generation_seconds: float,
    peak_rss_mib: float,
    prompt_seconds: float,
    kv_cache_bytes: int,
) -> dict[str, Any]:
    """What serving this model costs on this machine: load time, the process's peak RSS while it
    generated, prompt and generation speed at batch 1, and the KV cache of one sequence of the context length."""
    new_tokens = sum(g["new_tokens"] for g in generations)
    return {
        "load_seconds": round(load_seconds, 2),
        "peak_rss_mib": round(peak_rss_mib, 1),
        "prompt_tokens_per_s": round(PROMPT_TOKENS / prompt_seconds, 1),
        "generated_tokens": new_tokens,
        "generation_tokens_per_s": round(new_tokens / generation_seconds, 1)
        if generation_seconds > 0
        else None,
        "kv_cache_mib": round(kv_cache_bytes / 2**20, 2),
    }


def kv_cache_bytes(config: Any, context_length: int, bytes_per_value: int) -> int:
    """Keys and values of every layer for one sequence: 2 x layers x KV heads x head dim x positions."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * context_length * bytes_per_value


def _prompt_ids(tokens: Any) -> list[int]:
    """PROMPT_TOKENS ids taken from the eval token set (repeated if it is short)."""
    flat = [t for sequence in tokens.sequences for t in sequence]
    return (flat * (PROMPT_TOKENS // max(1, len(flat)) + 1))[:PROMPT_TOKENS]


def _transformers_prompt_seconds(model: Any, ids: list[int]) -> float:
    """Median of three timed forward passes over the prompt at batch 1."""
    import torch

    device = next(model.parameters()).device
    batch = torch.tensor([ids], device=device)
    times = []
    with torch.no_grad():
        for _ in range(3):
            started = time.perf_counter()
            model(input_ids=batch)
            times.append(time.perf_counter() - started)
    return sorted(times)[1]


def _llama_serving_figures(gguf: Path, ids: list[int], context_length: int) -> tuple[float, float, int]:
    """(load seconds, median of three timed prompt evaluations at batch 1 each in a fresh KV cache,
    the f16 KV cache (llama.cpp's default) of one sequence of `context_length` from the GGUF's metadata)."""
    import llama_cpp

    from trainer.gguf import _default_threads

    threads = _default_threads()
    loading = time.perf_counter()
    llm = llama_cpp.Llama(
        str(gguf),
        n_ctx=len(ids) + 8,
        n_batch=len(ids),
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    load_seconds = time.perf_counter() - loading
    times = []
    try:
        for _ in range(3):
            llm.reset()
            started = time.perf_counter()
            llm.eval(ids)
            times.append(time.perf_counter() - started)
        meta = llm.metadata
    finally:
        llm.close()
    arch = meta["general.architecture"]
    heads = int(meta[f"{arch}.attention.head_count"])
    config = SimpleNamespace(
        num_hidden_layers=int(meta[f"{arch}.block_count"]),
        num_attention_heads=heads,
        num_key_value_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        hidden_size=int(meta[f"{arch}.embedding_length"]),
        head_dim=int(meta[f"{arch}.attention.key_length"])
        if f"{arch}.attention.key_length" in meta
        else None,
    )
    return load_seconds, sorted(times)[1], kv_cache_bytes(config, context_length, 2)


def score(
    runtime: str,
    model_dir: Path,
    eval_jsonl: Path,
    samples: int,
    max_new_tokens: int,
    tokenizer_dir: Path | None = None,
    prompts: Sequence[Sequence[Mapping[str, str]]] | None = None,
    extras: Extras | None = None,
) -> dict[str, Any]:
    """Perplexity on the eval split, and greedy replies to `prompts` (the task rows; by default the
    first `samples` eval conversations) generated the way the runtime serves the model; with
    `extras`, fidelity to the reference, broad-drift perplexity and serving figures too.

    tokenizer_dir: where the run's tokenizer and chat template live, when model_dir has another (the base).
    """
    from transformers import AutoTokenizer

    from trainer.perplexity import eval_tokens, score_transformers, text_tokens

    extras = extras or Extras()
    chat = list(prompts) if prompts is not None else sample_prompts(eval_jsonl, samples)
    if runtime == "llama.cpp":
        return score_llama_cpp(model_dir, eval_jsonl, samples, max_new_tokens, tokenizer_dir, chat, extras)
    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or model_dir)
    tokens = eval_tokens(eval_jsonl, tokenizer)
    loading = time.time()
    model = load(runtime, model_dir)
    load_seconds = time.time() - loading
    clock = Stopwatch()
    fidelity = _fidelity(tokens, extras)
    result = score_transformers(model, tokens, fidelity=fidelity)
    clock.lap("perplexity and fidelity")
    drift = (
        score_transformers(model, text_tokens(extras.drift_texts, tokenizer, extras.drift_tokens))
        if extras.drift_texts
        else None
    )
    clock.lap("drift")
    release("scoring")
    reset_peak_rss()  # what generation holds, not the scoring passes' logits
    generated_at = time.time()
    generations = generate(model, tokenizer, chat, max_new_tokens) if chat else []
    generation_seconds = time.time() - generated_at
    peak_rss = peak_rss_mib()
    clock.lap("task")
    prompt_seconds = _transformers_prompt_seconds(model, _prompt_ids(tokens))
    clock.lap("serving")
    clock.seconds["load"] = round(load_seconds, 2)
    return {
        "runtime": runtime,
        # What the model computed in (bf16 only where native, but GPTQModel loads bf16 everywhere):
        # speed and, now and then, a greedy reply depend on it (README, "Task checks").
        "compute_dtype": dtype_name(model.dtype),
        "nll": result.nll,
        "perplexity": result.perplexity,
        "tokens": result.tokens,
        "fidelity": _finish(fidelity, extras),
        "drift": None if drift is None else {"perplexity": drift.perplexity, "tokens": drift.tokens},
        "serving": _serving(
            load_seconds,
            generations,
            generation_seconds,
            peak_rss,
            prompt_seconds,
            kv_cache_bytes(
                model.config, extras.context_length, model.get_input_embeddings().weight.element_size()
            ),
        ),
        "replies": with_prompts(chat, generations, samples),
        "generations": generations,
        "generation_seconds": round(generation_seconds, 2),
        "seconds": round(time.time() - started, 2),
        "seconds_by_part": clock.seconds,
    }


def score_llama_cpp(
    model_path: Path,
    eval_jsonl: Path,
    samples: int,
    max_new_tokens: int,
    tokenizer_dir: Path | None,
    prompts: Sequence[Sequence[Mapping[str, str]]],
    extras: Extras,
) -> dict[str, Any]:
    """A GGUF scored by llama.cpp on the eval token ids built by the HF tokenizer files beside it
    (or in `tokenizer_dir` when that is a folder); the replies go through llama.cpp's chat path,
    with the chat template and end-of-generation tokens stored in the GGUF, as llama-server uses them."""
    from transformers import AutoTokenizer

    from trainer.gguf import chat_replies, gguf_file, score_gguf
    from trainer.perplexity import eval_tokens, text_tokens

    started = time.time()
    gguf = gguf_file(model_path)
    source = tokenizer_dir if tokenizer_dir is not None and tokenizer_dir.is_dir() else gguf.parent
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokens = eval_tokens(eval_jsonl, tokenizer)
    clock = Stopwatch()
    fidelity = _fidelity(tokens, extras)
    result = score_gguf(gguf, tokens, fidelity=fidelity)
    clock.lap("perplexity and fidelity")
    drift = (
        score_gguf(gguf, text_tokens(extras.drift_texts, tokenizer, extras.drift_tokens))
        if extras.drift_texts
        else None
    )
    clock.lap("drift")
    release("scoring")
    reset_peak_rss()  # what loading and generating hold, not the scoring passes
    generated_at = time.time()
    generations = chat_replies(gguf, prompts, max_new_tokens) if prompts else []
    generation_seconds = time.time() - generated_at
    peak_rss = peak_rss_mib()
    clock.lap("task")
    load_seconds, prompt_seconds, kv_bytes = _llama_serving_figures(
        gguf, _prompt_ids(tokens), extras.context_length
    )
    clock.lap("serving")
    return {
        "runtime": "llama.cpp",
        # ggml picks its own types per operation (quantized weights, 8-bit activations for k-quant dot products).
        "compute_dtype": None,
        "nll": result.nll,
        "perplexity": result.perplexity,
        "tokens": result.tokens,
        "fidelity": _finish(fidelity, extras),
        "drift": None if drift is None else {"perplexity": drift.perplexity, "tokens": drift.tokens},
        "serving": _serving(
            load_seconds, generations, generation_seconds, peak_rss, prompt_seconds, kv_bytes
        ),
        "replies": generations[:samples],
        "generations": generations,
        "generation_seconds": round(generation_seconds, 2),
        "seconds": round(time.time() - started, 2),
        "seconds_by_part": clock.seconds,
    }


def score_in_fresh_process(
    runtime: str,
    model_dir: Path,
    eval_jsonl: Path,
    samples: int = 3,
    max_new_tokens: int = 48,
    tokenizer_dir: Path | None = None,
    prompts: Sequence[Sequence[Mapping[str, str]]] | None = None,
    extras: Extras | None = None,
) -> dict[str, Any]:
    # Private files: never beside the model (the base may be read-only, or scored by a concurrent job).
    handle, name = tempfile.mkstemp(prefix="trainer-score-", suffix=".json")
    os.close(handle)
    out = Path(name)
    out.unlink()
    request_file = out.with_suffix(".request.json")
    request = {
        "runtime": runtime,
        "model_dir": str(model_dir),
        "eval_jsonl": str(eval_jsonl),
        "samples": samples,
        "max_new_tokens": max_new_tokens,
        "tokenizer_dir": str(tokenizer_dir or model_dir),
        "prompts": None if prompts is None else [list(p) for p in prompts],
        "extras": asdict(extras or Extras()),
    }
    request_file.write_text(json.dumps(request, ensure_ascii=False), encoding="utf-8")
    command = [sys.executable, "-m", "trainer.runtimes", str(request_file), str(out)]
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
        request_file.unlink(missing_ok=True)


def main(argv: list[str]) -> None:
    """`python -m trainer.runtimes REQUEST.json OUT.json`: the request `score_in_fresh_process` writes."""
    request_file, out = argv
    request = json.loads(Path(request_file).read_text(encoding="utf-8"))
    if request["runtime"] not in RUNTIMES:
        raise SystemExit(f"unknown runtime {request['runtime']!r}; one of {RUNTIMES}")
    scored = score(
        request["runtime"],
        Path(request["model_dir"]),
        Path(request["eval_jsonl"]),
        request["samples"],
        request["max_new_tokens"],
        Path(request["tokenizer_dir"]),
        request["prompts"],
        Extras(**request["extras"]),
    )
    Path(out).write_text(json.dumps(scored, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
