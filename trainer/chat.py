"""Talk to any model of a finished run, loaded in the runtime that serves it.

    python -m trainer.chat RUN_DIR [artifact=NAME]            # interactive, multi-turn
    python -m trainer.chat RUN_DIR artifact=NAME --prompt "…"  # one reply, for scripts (or stdin)
    python -m trainer.chat RUN_DIR --compare [artifact=A,B]    # the same prompts to several models

A GGUF goes through llama.cpp's own chat path (the chat template and end-of-generation tokens
stored in the file, as llama-server and Ollama use them), GPTQ/AWQ through GPTQModel, BF16
through transformers: what a user sees here is what the served artifact says. Replies are
greedy, like the evaluate stage's, so a reply here matches the one in report.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from trainer.errors import TrainerError

Messages = Sequence[Mapping[str, str]]


class ChatError(TrainerError):
    """The run or the model asked for cannot be chatted with; the message names the fix."""


@dataclass(frozen=True)
class RunModel:
    """One model of a run: where its files are and the runtime that serves it."""

    name: str
    format: str
    runtime: str
    path: Path
    tokenizer_dir: Path


@dataclass(frozen=True)
class Reply:
    text: str
    tokens: int
    seconds: float
    finish_reason: str  # stop: the model ended it; length: max_new_tokens ran out

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def run_models(run_dir: Path) -> list[RunModel]:
    """Every model a finished run reports, in report order (base, merged, then each artifact)."""
    report_file = run_dir / "report.json"
    if not report_file.is_file():
        raise ChatError(
            f"{report_file} does not exist: {run_dir} is not a finished run. Give the run directory "
            "of a run whose export stage is done (runs/<recipe name> by default)."
        )
    report = json.loads(report_file.read_text(encoding="utf-8"))
    merged_dir = run_dir / "export" / "merged"
    models = []
    for artifact in report["artifacts"]:
        path = Path(artifact["path"])
        path = path if path.is_absolute() else run_dir / path
        # The base is read with the run's tokenizer and chat template, as the evaluate stage scored it.
        tokenizer_dir = merged_dir if artifact["name"] == "base" else (path if path.is_dir() else path.parent)
        models.append(
            RunModel(artifact["name"], artifact["format"], artifact["runtime"], path, tokenizer_dir)
        )
    return models


def pick(models: Sequence[RunModel], name: str) -> RunModel:
    for model in models:
        if model.name == name:
            return model
    raise ChatError(f"artifact={name}: not a model of this run; one of {', '.join(m.name for m in models)}")


def default_model(run_dir: Path, models: Sequence[RunModel]) -> RunModel:
    """The artifact the run recommends for this machine's kind (GPU server or CPU), else merged."""
    import torch

    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    target = "GPU" if torch.cuda.is_available() else "CPU"
    for choice in report.get("recommendation", []):
        if choice["target"].startswith(target) and choice["artifact"]:
            return pick(models, choice["artifact"])
    return pick(models, "merged")


def recipe_system_prompt(run_dir: Path) -> str | None:
    """The system message the training split used most: the prompt the model learned to answer under."""
    train = run_dir / "data" / "train.jsonl"
    if not train.is_file():
        return None
    counts: Counter[str] = Counter()
    with open(train, encoding="utf-8") as handle:
        for line in handle:
            messages = json.loads(line)["messages"]
            if messages and messages[0]["role"] == "system":
                counts[messages[0]["content"]] += 1
    return counts.most_common(1)[0][0] if counts else None


def first_eval_prompts(run_dir: Path, count: int) -> list[list[dict[str, str]]]:
    """The first `count` eval conversations up to their first user turn (what report.md shows)."""
    from trainer.runtimes import sample_prompts

    return sample_prompts(run_dir / "data" / "eval.jsonl", count)


# ------------------------------------------------------------------ runtimes


class ChatModel(Protocol):
    def reply(self, messages: Messages, max_new_tokens: int, on_text: Callable[[str], None]) -> Reply: ...

    def close(self) -> None: ...


class TransformersChat:
    """BF16 through transformers, GPTQ/AWQ through GPTQModel; the tokenizer's chat template renders."""

    def __init__(self, model: RunModel) -> None:
        from transformers import AutoTokenizer

        from trainer.runtimes import eos_token_ids, load

        self.tokenizer = AutoTokenizer.from_pretrained(model.tokenizer_dir)
        self.model = load(model.runtime, model.path)
        self.eos_ids = eos_token_ids(self.model)

    def reply(self, messages: Messages, max_new_tokens: int, on_text: Callable[[str], None]) -> Reply:
        import torch
        from transformers import TextIteratorStreamer

        device = next(self.model.parameters()).device
        encoded = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        output: list[Any] = []

        def generate() -> None:
            with torch.no_grad():
                output.append(
                    self.model.generate(
                        input_ids=encoded["input_ids"].to(device),
                        attention_mask=encoded["attention_mask"].to(device),
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        streamer=streamer,
                        pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                    )
                )

        started = time.perf_counter()
        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        pieces = []
        for piece in streamer:
            pieces.append(piece)
            on_text(piece)
        worker.join()
        seconds = time.perf_counter() - started
        if not output:
            raise ChatError("generation failed; see the messages above")
        new = output[0][0, encoded["input_ids"].shape[1] :].tolist()
        ended = bool(new) and new[-1] in self.eos_ids
        return Reply("".join(pieces).strip(), len(new), seconds, "stop" if ended else "length")

    def close(self) -> None:
        from trainer.memory import release

        del self.model
        release("chat")


class LlamaCppChat:
    """A GGUF through llama.cpp's chat path: the template and stop tokens stored in the file."""

    def __init__(self, model: RunModel) -> None:
        from trainer.gguf import chat_llama, gguf_file

        self.llm = chat_llama(gguf_file(model.path))

    def reply(self, messages: Messages, max_new_tokens: int, on_text: Callable[[str], None]) -> Reply:
        from trainer.gguf import GREEDY_CHAT

        started = time.perf_counter()
        chunks: Iterator[Any] = self.llm.create_chat_completion(  # type: ignore[assignment]
            messages=[dict(m) for m in messages], max_tokens=max_new_tokens, stream=True, **GREEDY_CHAT
        )
        pieces, finish, tokens = [], "length", 0
        for chunk in chunks:
            choice = chunk["choices"][0]
            text = choice["delta"].get("content")
            if text:
                tokens += 1  # llama-cpp-python streams a chunk per generated token (held-back text aside)
                pieces.append(text)
                on_text(text)
            finish = choice.get("finish_reason") or finish
        seconds = time.perf_counter() - started
        text = "".join(pieces)
        # Count what was generated, not the chunks: a token whose text was held back yields none.
        tokens = max(tokens, len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)))
        return Reply(text.strip(), tokens + (finish == "stop"), seconds, finish)

    def close(self) -> None:
        self.llm.close()


def open_model(model: RunModel, verbose: bool = False) -> ChatModel:
    """The model loaded in its runtime; what the runtime prints while loading stays off the console."""
    from trainer.logs import library_output

    with library_output(f"loading {model.name}", verbose=verbose):
        return LlamaCppChat(model) if model.runtime == "llama.cpp" else TransformersChat(model)


# ------------------------------------------------------------------ the three modes


def stats_line(reply: Reply) -> str:
    ended = "ended by the model" if reply.finish_reason == "stop" else "cut at --max-new-tokens"
    return f"[{reply.tokens} tokens, {reply.tokens_per_s:.1f} tokens/s, {ended}]"


HELP = "/reset: start over   /system TEXT: a new system prompt (and start over)   /quit: leave"


def interactive(
    chat: ChatModel,
    name: str,
    system: str | None,
    max_new_tokens: int,
    read: Callable[[str], str] = input,
    out: TextIO = sys.stdout,
) -> None:
    """A multi-turn conversation on the terminal, each reply streamed as it is generated."""
    history: list[dict[str, str]] = []
    print(f"chatting with {name}. {HELP}", file=out)
    if system:
        print(f"system prompt: {system}", file=out)
    while True:
        try:
            line = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=out)
            return
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            history.clear()
            print("(conversation reset)", file=out)
            continue
        if line == "/system" or line.startswith("/system "):
            system = line[len("/system") :].strip() or None
            history.clear()
            print(f"(system prompt {'set' if system else 'removed'}; conversation reset)", file=out)
            continue
        if line.startswith("/"):
            print(f"unknown command {line.split()[0]}. {HELP}", file=out)
            continue
        history.append({"role": "user", "content": line})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        print(f"{name}> ", end="", file=out, flush=True)
        reply = chat.reply(messages, max_new_tokens, lambda text: print(text, end="", file=out, flush=True))
        print(f"\n{stats_line(reply)}", file=out, flush=True)
        history.append({"role": "assistant", "content": reply.text})


def one_shot(chat: ChatModel, prompt: str, system: str | None, max_new_tokens: int) -> Reply:
    """One reply on stdout (streamed), its figures on stderr: `… --prompt TEXT > reply.txt` keeps only the reply."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    reply = chat.reply(messages, max_new_tokens, lambda text: print(text, end="", flush=True))
    print(flush=True)
    print(stats_line(reply), file=sys.stderr)
    return reply


def compare(
    models: Sequence[RunModel], prompts: Sequence[Messages], max_new_tokens: int, verbose: bool = False
) -> dict[str, list[Reply]]:
    """Every prompt to every model, one model loaded at a time."""
    replies: dict[str, list[Reply]] = {}
    for model in models:
        print(f"loading {model.name} ({model.runtime})", file=sys.stderr)
        chat = open_model(model, verbose)
        try:
            chat.reply(prompts[0], 1, lambda _: None)  # one-time setup out of the first reply's speed
            replies[model.name] = [chat.reply(p, max_new_tokens, lambda _: None) for p in prompts]
        finally:
            chat.close()
    return replies


def compare_markdown(prompts: Sequence[Messages], replies: Mapping[str, Sequence[Reply]]) -> str:
    from trainer.stages.export import side_by_side_markdown

    return side_by_side_markdown(
        "Compare",
        [p[-1]["content"] for p in prompts],
        {
            name: [(r.text, r.finish_reason, f"{r.tokens_per_s:.0f}") for r in rs]
            for name, rs in replies.items()
        },
    )


def print_compare(prompts: Sequence[Messages], replies: Mapping[str, Sequence[Reply]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for index, prompt in enumerate(prompts):
        table = Table(title=f"prompt {index + 1}: {prompt[-1]['content']}", show_lines=True)
        for column, justify in (
            ("model", "left"),
            ("reply", "left"),
            ("ended", "left"),
            ("tokens/s", "right"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for name, answers in replies.items():
            reply = answers[index]
            table.add_row(name, reply.text, reply.finish_reason, f"{reply.tokens_per_s:.0f}")
        console.print(table)


# ------------------------------------------------------------------ the command


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.chat",
        description="Chat with a model of a finished run, in the runtime that serves it.",
    )
    parser.add_argument("run_dir", type=Path, help="the run directory (runs/<recipe name> by default)")
    parser.add_argument(
        "--artifact",
        "-a",
        help="base, merged or an artifact name (also `artifact=NAME`; with --compare a comma-separated "
        "list); default: the artifact the run recommends for this machine, else merged",
    )
    parser.add_argument(
        "--prompt", "-p", action="append", help="one reply to this and exit (repeatable with --compare)"
    )
    parser.add_argument("--system", help="the system prompt (default: the one the training data used most)")
    parser.add_argument("--no-system", action="store_true", help="no system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument(
        "--compare", action="store_true", help="the same prompts to several models, side by side"
    )
    parser.add_argument(
        "--samples", type=int, default=3, help="with --compare and no --prompt: eval prompts used"
    )
    parser.add_argument("--verbose", action="store_true", help="show what the runtimes print while loading")
    # `artifact=NAME`, as in the trainer's own Hydra overrides.
    argv = [f"--artifact={a.split('=', 1)[1]}" if a.startswith("artifact=") else a for a in argv]
    args = parser.parse_args(argv)
    if args.max_new_tokens < 1:
        parser.error("--max-new-tokens must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from trainer.logs import quiet_libraries

    if not args.verbose:
        quiet_libraries()
    run_dir = args.run_dir.expanduser().resolve()
    models = run_models(run_dir)
    system = None if args.no_system else (args.system or recipe_system_prompt(run_dir))
    if args.compare:
        chosen = [pick(models, n.strip()) for n in args.artifact.split(",")] if args.artifact else models
        if args.prompt:
            prompts: list[Messages] = [
                ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p}]
                for p in args.prompt
            ]
        else:
            prompts = first_eval_prompts(run_dir, args.samples)
        replies = compare(chosen, prompts, args.max_new_tokens, args.verbose)
        print_compare(prompts, replies)
        out = run_dir / "compare.md"
        out.write_text(
            f"# Compare: {run_dir.name}\n\n" + compare_markdown(prompts, replies), encoding="utf-8"
        )
        print(f"written: {out}", file=sys.stderr)
        return 0
    model = pick(models, args.artifact) if args.artifact else default_model(run_dir, models)
    prompt = args.prompt[0] if args.prompt else None
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
        if not prompt:
            raise ChatError("standard input held no prompt: pipe one in, or give --prompt TEXT")
    print(f"loading {model.name} with {model.runtime}", file=sys.stderr)
    chat = open_model(model, args.verbose)
    try:
        if prompt is not None:
            one_shot(chat, prompt, system, args.max_new_tokens)
        else:
            interactive(chat, model.name, system, args.max_new_tokens)
    finally:
        chat.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
