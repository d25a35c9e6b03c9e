"""`python -m trainer.chat`: the session's commands and how it finds a run's models.

The runtimes themselves are driven through a pseudo-terminal on the e2e run's real artifacts
(tests/test_e2e.py); here the conversation logic runs against a recording stand-in.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from trainer.chat import ChatError, Reply, interactive, parse, pick, recipe_system_prompt, run_models


class Recorder:
    """Answers "reply N" to the Nth call, streamed in two pieces, and keeps every message list it got."""

    def __init__(self) -> None:
        self.calls: list[list[dict[str, str]]] = []

    def reply(
        self, messages: Sequence[Mapping[str, str]], max_new_tokens: int, on_text: Callable[[str], None]
    ) -> Reply:
        self.calls.append([dict(m) for m in messages])
        on_text("reply ")
        on_text(str(len(self.calls)))
        return Reply(f"reply {len(self.calls)}", 3, 0.5, "stop")

    def close(self) -> None:
        pass


def converse(lines: list[str], system: str | None = "Be kind.") -> tuple[Recorder, str]:
    chat, out = Recorder(), io.StringIO()
    typed = iter(lines)

    def read(prompt: str) -> str:
        out.write(prompt)
        return next(typed)  # StopIteration never reached: each script ends with /quit

    interactive(chat, "gguf-q4_k_m", system, 16, read=read, out=out)
    return chat, out.getvalue()


def test_turns_carry_the_history_and_reset_and_system_start_over() -> None:
    chat, shown = converse(
        ["Bonjour", "Et ma facture ?", "/reset", "Bonjour", "/system Sois bref.", "Salut", "/quit"]
    )
    assert chat.calls[0] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Bonjour"},
    ]
    assert chat.calls[1] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Bonjour"},
        {"role": "assistant", "content": "reply 1"},
        {"role": "user", "content": "Et ma facture ?"},
    ]
    assert chat.calls[2] == chat.calls[0]  # /reset forgot both turns
    assert chat.calls[3] == [
        {"role": "system", "content": "Sois bref."},
        {"role": "user", "content": "Salut"},
    ]
    assert "gguf-q4_k_m> reply 1\n[3 tokens, 6.0 tokens/s, ended by the model]" in shown
    assert "(conversation reset)" in shown


def test_end_of_input_leaves_and_an_unknown_command_is_not_sent_to_the_model() -> None:
    chat, out = Recorder(), io.StringIO()
    typed = iter(["/help", ""])

    def read(prompt: str) -> str:
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    interactive(chat, "merged", None, 16, read=read, out=out)
    assert chat.calls == []
    assert "unknown command /help" in out.getvalue() and "/reset" in out.getvalue()


def write_run(run_dir: Path) -> None:
    (run_dir / "data").mkdir(parents=True)
    report = {
        "recommendation": [],
        "artifacts": [
            {"name": "base", "format": "hf-bf16", "runtime": "transformers", "path": "/models/base"},
            {"name": "merged", "format": "hf-bf16", "runtime": "transformers", "path": "export/merged"},
            {
                "name": "gguf-q4_k_m",
                "format": "gguf",
                "runtime": "llama.cpp",
                "path": "export/gguf-q4_k_m/m.gguf",
            },
        ],
    }
    (run_dir / "report.json").write_text(json.dumps(report))
    rows = [("A", 2), ("B", 3), (None, 4)]
    lines = []
    for system, times in rows:
        head = [{"role": "system", "content": system}] if system else []
        lines += [json.dumps({"messages": [*head, {"role": "user", "content": "q"}]})] * times
    (run_dir / "data" / "train.jsonl").write_text("\n".join(lines) + "\n")


def test_a_runs_models_are_found_from_its_report_and_the_base_reads_the_runs_tokenizer(
    tmp_path: Path,
) -> None:
    write_run(tmp_path)
    models = run_models(tmp_path)
    assert [m.name for m in models] == ["base", "merged", "gguf-q4_k_m"]
    assert models[0].tokenizer_dir == tmp_path / "export" / "merged"
    assert models[2].path == tmp_path / "export" / "gguf-q4_k_m" / "m.gguf"
    assert models[2].tokenizer_dir == tmp_path / "export" / "gguf-q4_k_m"
    with pytest.raises(
        ChatError, match="artifact=gptq: not a model of this run; one of base, merged, gguf-q4_k_m"
    ):
        pick(models, "gptq")
    assert recipe_system_prompt(tmp_path) == "B"


def test_a_folder_that_is_not_a_finished_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ChatError, match=r"report\.json does not exist: .* is not a finished run"):
        run_models(tmp_path)


def test_the_artifact_is_named_like_a_hydra_override_or_an_option() -> None:
    assert parse(["runs/x", "artifact=gptq-w4g128"]).artifact == "gptq-w4g128"
    assert parse(["runs/x", "--artifact", "merged", "--prompt", "Bonjour"]).prompt == ["Bonjour"]
    with pytest.raises(SystemExit):
        parse(["runs/x", "--max-new-tokens", "0"])
