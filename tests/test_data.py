"""The data stage: every input format, every bad-input case, the split, the calibration set."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import compose_raw
from rich.console import Console

from trainer.config import DataFormat, to_typed
from trainer.conversations import load_conversations
from trainer.errors import DataValidationError, TrainerError
from trainer.pipeline import StageContext
from trainer.stages import data as data_stage

CHAT = [
    {"role": "system", "content": "Tu es un agent."},
    {"role": "user", "content": "Où est ma commande ?"},
    {"role": "assistant", "content": "Elle arrive demain."},
]
EXPECTED = [m.copy() for m in CHAT]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def only(path: Path, fmt: DataFormat = DataFormat.auto) -> list[dict[str, str]]:
    conversations, problems = load_conversations(str(path), fmt, "train")
    assert not problems, problems
    assert len(conversations) == 1
    return conversations[0].messages


# ------------------------------------------------------------------ formats


def test_messages_jsonl(tmp_path: Path) -> None:
    assert only(write_jsonl(tmp_path / "d.jsonl", [{"messages": CHAT}])) == EXPECTED


def test_sharegpt(tmp_path: Path) -> None:
    row = {
        "conversations": [
            {"from": "system", "value": "Tu es un agent."},
            {"from": "human", "value": "Où est ma commande ?"},
            {"from": "gpt", "value": "Elle arrive demain."},
        ]
    }
    assert only(write_jsonl(tmp_path / "d.jsonl", [row])) == EXPECTED


def test_alpaca_joins_instruction_and_input(tmp_path: Path) -> None:
    row = {"instruction": "Traduis.", "input": "hello", "output": "bonjour"}
    assert only(write_jsonl(tmp_path / "d.jsonl", [row])) == [
        {"role": "user", "content": "Traduis.\n\nhello"},
        {"role": "assistant", "content": "bonjour"},
    ]


def test_prompt_completion_strings_and_conversational(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Où est ma commande ?", "completion": "Elle arrive demain."},
        {"prompt": CHAT[:2], "completion": CHAT[2:]},
    ]
    conversations, problems = load_conversations(
        str(write_jsonl(tmp_path / "d.jsonl", rows)), DataFormat.auto, "x"
    )
    assert not problems
    assert conversations[0].messages == EXPECTED[1:]
    assert conversations[1].messages == EXPECTED


def test_plain_text_becomes_one_assistant_turn(tmp_path: Path) -> None:
    assert only(write_jsonl(tmp_path / "d.jsonl", [{"text": "Du texte brut."}])) == [
        {"role": "assistant", "content": "Du texte brut."}
    ]


def test_json_csv_parquet_and_folder(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"messages": CHAT}]), encoding="utf-8")
    assert only(tmp_path / "a.json") == EXPECTED
    with open(tmp_path / "b.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["instruction", "output"])
        writer.writeheader()
        writer.writerow({"instruction": "Où est ma commande ?", "output": "Elle arrive demain."})
    assert only(tmp_path / "b.csv") == EXPECTED[1:]
    pq.write_table(pa.Table.from_pylist([{"messages": CHAT}]), tmp_path / "c.parquet")
    assert only(tmp_path / "c.parquet") == EXPECTED
    conversations, problems = load_conversations(str(tmp_path), DataFormat.auto, "x")
    assert not problems
    assert [c.where.split(":")[0] for c in conversations] == [
        str(tmp_path / name) for name in ("a.json", "b.csv", "c.parquet")
    ]


def test_csv_cell_holding_messages_json(tmp_path: Path) -> None:
    with open(tmp_path / "m.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["messages"])
        writer.writerow([json.dumps(CHAT, ensure_ascii=False)])
    assert only(tmp_path / "m.csv") == EXPECTED


# ------------------------------------------------------------------ bad input


BAD_ROWS: list[tuple[Any, str, str]] = [
    (
        {"messages": [*CHAT[:1], {"role": "user", "content": "  "}, CHAT[2]]},
        "empty_content",
        "messages[1].content: empty",
    ),
    (
        {"messages": [{"role": "bot", "content": "x"}, CHAT[2]]},
        "unknown_role",
        "messages[0].role: unknown role 'bot'",
    ),
    ({"messages": [CHAT[0], CHAT[2], CHAT[1]]}, "turn_order", "messages[1].role: expected 'user' here"),
    ({"messages": CHAT[:2]}, "no_final_assistant", "messages[1]: the last message must be the assistant's"),
    (
        {"messages": [CHAT[0], CHAT[1], {"role": "assistant"}]},
        "missing_field",
        "messages[2].content: missing",
    ),
    (
        {"messages": [CHAT[1], {"role": "assistant", "content": 42}]},
        "wrong_type",
        "messages[1].content: expected a string, got int",
    ),
    ({"messages": "hello"}, "wrong_type", "messages: expected a list of messages, got str"),
    (["not", "an", "object"], "wrong_type", "expected a JSON object per row, got list"),
    (
        {"conversations": [{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}]},
        "unknown_role",
        "conversations[1].from: unknown role 'robot'",
    ),
    ({"instruction": "x"}, "missing_field", "cannot tell the format"),
    (
        {"messages": [{"role": "user", "content": "a\ud800"}, CHAT[2]]},
        "bad_utf8",
        "messages[0].content: not encodable as UTF-8",
    ),
]


@pytest.mark.parametrize(("row", "kind", "text"), BAD_ROWS, ids=[k for _, k, _ in BAD_ROWS])
def test_each_bad_row_names_file_line_field_and_reason(
    tmp_path: Path, row: Any, kind: str, text: str
) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": CHAT}, row])
    conversations, problems = load_conversations(str(path), DataFormat.auto, "x")
    assert len(conversations) == 1
    assert len(problems) == 1
    assert problems[0].kind == kind
    assert str(problems[0]).startswith(f"{path}:2:")
    assert text in str(problems[0])


def test_invalid_json_and_bad_utf8_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    good = json.dumps({"messages": CHAT}).encode()
    path.write_bytes(good + b"\n{oops\n" + b'{"text": "caf\xe9"}\n')
    conversations, problems = load_conversations(str(path), DataFormat.auto, "x")
    assert len(conversations) == 1
    assert [(p.kind, p.where) for p in problems] == [("invalid_json", f"{path}:2"), ("bad_utf8", f"{path}:3")]
    assert "invalid UTF-8 at byte" in str(problems[1])


def test_json_file_with_bad_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_bytes(b'[\n{"text": "ok"},\n{"text": "caf\xe9"}\n]')
    _, problems = load_conversations(str(path), DataFormat.auto, "x")
    assert [(p.kind, p.where) for p in problems] == [("bad_utf8", f"{path}:3")]


def test_missing_file_and_unsupported_type(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_conversations(str(tmp_path / "nope.jsonl"), DataFormat.auto, "x")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
        load_conversations(str(tmp_path / "d.txt"), DataFormat.auto, "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="folder holds no"):
        load_conversations(str(tmp_path / "empty"), DataFormat.auto, "x")


def test_explicit_format_requires_its_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "Résume."}, {"other": 1}])
    _, problems = load_conversations(str(path), DataFormat.alpaca, "x")
    assert [(p.kind, p.field) for p in problems] == [
        ("missing_field", "output"),
        ("missing_field", "instruction"),
    ]
    with pytest.raises(DataValidationError, match="the rows look like messages"):
        load_conversations(
            str(write_jsonl(tmp_path / "m.jsonl", [{"messages": CHAT}])), DataFormat.alpaca, "x"
        )


# ------------------------------------------------------------------ the stage


def run_stage(tmp_path: Path, overrides: list[str]) -> tuple[dict[str, Any], Path]:
    cfg = to_typed(compose_raw(overrides))
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    summary = data_stage.run(StageContext(cfg, tmp_path, out, Console(quiet=True)))
    return summary, out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _many(n: int) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Question {i} ?"},
                {"role": "assistant", "content": f"Réponse {i}."},
            ]
        }
        for i in range(n)
    ]


def test_stage_stops_on_the_first_policy_error_listing_rows(tmp_path: Path) -> None:
    rows = [*_many(5), {"messages": CHAT[:2]}, {"messages": [{"role": "bot", "content": "x"}]}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataValidationError) as caught:
        run_stage(tmp_path, [f"data.path={path}", "data.eval_path=null"])
    message = str(caught.value)
    assert "2 invalid row(s)" in message
    assert f"{path}:6: messages[1]" in message and f"{path}:7: messages[0].role" in message
    assert "data.on_problem.no_final_assistant=drop" in message
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_drop_policy_counts_dropped_rows(tmp_path: Path) -> None:
    rows = [
        *_many(30),
        {"messages": CHAT[:2]},
        {"messages": [{"role": "user", "content": "x " * 600}, CHAT[2]]},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    summary, out = run_stage(
        tmp_path, [f"data.path={path}", "data.eval_path=null", "data.on_problem.no_final_assistant=drop"]
    )
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dropped"] == {"no_final_assistant": 1, "too_long": 1}
    assert summary["train"] + summary["eval"] == 30


def test_too_long_under_error_policy_reports_token_count(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl", [*_many(3), {"messages": [{"role": "user", "content": "x " * 600}, CHAT[2]]}]
    )
    with pytest.raises(
        DataValidationError, match=r"d.jsonl:4: \d+ tokens > data.max_length=512 \[too_long\]"
    ):
        run_stage(tmp_path, [f"data.path={path}", "data.eval_path=null", "data.on_problem.too_long=error"])


def test_split_is_deterministic_order_independent_and_seeded(tmp_path: Path) -> None:
    rows = _many(200)
    a = write_jsonl(tmp_path / "a.jsonl", rows)
    b = write_jsonl(tmp_path / "b.jsonl", list(reversed(rows)))
    base = ["data.eval_path=null", "data.calibration.samples=8"]

    def eval_set(path: Path, *extra: str) -> set[str]:
        _, out = run_stage(tmp_path, [f"data.path={path}", *base, *extra])
        train = {json.dumps(r["messages"]) for r in read_jsonl(out / "train.jsonl")}
        evals = {json.dumps(r["messages"]) for r in read_jsonl(out / "eval.jsonl")}
        assert not train & evals and len(train | evals) == 200
        return evals

    first = eval_set(a)
    assert len(first) == 20
    assert eval_set(a) == first
    assert eval_set(b) == first
    assert eval_set(a, "data.split_seed=1") != first


def test_eval_size_samples_a_separate_eval_file_the_same_whatever_its_order(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", _many(20))
    rows = [{"messages": [{"role": "user", "content": f"Autre {i} ?"}, CHAT[2]]} for i in range(50)]
    forward = write_jsonl(tmp_path / "e.jsonl", rows)
    backward = write_jsonl(tmp_path / "r.jsonl", list(reversed(rows)))

    def eval_set(path: Path, *extra: str) -> list[str]:
        overrides = [f"data.path={train}", f"data.eval_path={path}", "data.calibration.samples=4", *extra]
        summary, out = run_stage(tmp_path, overrides)
        assert summary["train"] == 20
        return sorted(json.dumps(r["messages"]) for r in read_jsonl(out / "eval.jsonl"))

    sample = eval_set(forward, "data.eval_size=7")
    assert len(sample) == 7
    assert eval_set(backward, "data.eval_size=7") == sample
    assert len(eval_set(forward)) == 50
    assert len(eval_set(forward, "data.eval_size=500")) == 50  # more than the file holds: all of it


def test_duplicate_of_an_eval_row_is_removed_from_train(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", [*_many(10), {"messages": CHAT}])
    evals = write_jsonl(tmp_path / "e.jsonl", [{"messages": CHAT}])
    summary, out = run_stage(tmp_path, [f"data.path={train}", f"data.eval_path={evals}"])
    assert summary["train"] == 10
    assert json.loads((out / "stats.json").read_text())["train_eval_overlap_dropped"] == 1


def test_default_calibration_is_a_train_subset_disjoint_from_eval(
    tmp_path: Path, tiny_tokenizer: Any
) -> None:
    summary, out = run_stage(tmp_path, [])
    train = read_jsonl(out / "train.jsonl")
    evals = read_jsonl(out / "eval.jsonl")
    calibration = read_jsonl(out / "calibration.jsonl")
    # the recipe scores a seeded 120 of the 240 held-out conversations (recipes/support-fr.yaml)
    assert summary["train"] >= 2000 and summary["eval"] == 120
    render = lambda m: tiny_tokenizer.apply_chat_template(m, tokenize=False)  # noqa: E731
    train_texts = {render(r["messages"]) for r in train}
    eval_texts = {render(r["messages"]) for r in evals}
    assert len(calibration) == 128
    assert {r["source"] for r in calibration} == {"train"}
    texts = [r["text"] for r in calibration]
    assert len(set(texts)) == len(texts)
    assert set(texts) <= train_texts
    assert not set(texts) & eval_texts
    for row in calibration:
        # exactly the tokens training sees for that conversation
        assert row["input_ids"] == tiny_tokenizer(row["text"], add_special_tokens=False)["input_ids"]
        assert row["tokens"] == len(row["input_ids"])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["calibration"]["tokens"] == sum(r["tokens"] for r in calibration)
    assert stats["calibration"]["path"] == "data/calibration.jsonl"
    # the same seed draws the same set; another seed another one
    _, again = run_stage(tmp_path / "again", [])
    assert (again / "calibration.jsonl").read_bytes() == (out / "calibration.jsonl").read_bytes()
    _, other = run_stage(tmp_path / "other", ["data.calibration.seed=1"])
    assert (other / "calibration.jsonl").read_bytes() != (out / "calibration.jsonl").read_bytes()


def test_generic_and_mixed_calibration_sources(tmp_path: Path) -> None:
    _, out = run_stage(tmp_path, ["data.calibration.source=generic", "data.calibration.samples=16"])
    generic = read_jsonl(out / "calibration.jsonl")
    assert {r["source"] for r in generic} == {"generic"} and len(generic) == 16
    assert all(r["tokens"] <= 512 for r in generic)
    assert not any("<|assistant|>" in r["text"] for r in generic)
    _, out = run_stage(tmp_path / "m", ["data.calibration.source=mixed", "data.calibration.samples=16"])
    mixed = read_jsonl(out / "calibration.jsonl")
    assert [r["source"] for r in mixed].count("generic") == 8


def test_calibration_token_cap(tmp_path: Path) -> None:
    _, out = run_stage(tmp_path, ["data.calibration.max_tokens=2000"])
    calibration = read_jsonl(out / "calibration.jsonl")
    assert 0 < len(calibration) < 128
    assert sum(r["tokens"] for r in calibration) <= 2000


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TrainerError, match=r"data.path: data file .*nope.jsonl does not exist"):
        run_stage(tmp_path, [f"data.path={tmp_path / 'nope.jsonl'}"])


SHAREGPT_ROW = {
    "conversations": [
        {"from": "human", "value": "Où est ma commande ?"},
        {"from": "gpt", "value": "Elle arrive demain."},
    ]
}


def test_a_pinned_format_the_rows_do_not_have_is_one_line_naming_the_format_seen_and_the_key(
    tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [SHAREGPT_ROW] * 50)
    with pytest.raises(DataValidationError) as caught:
        load_conversations(str(path), DataFormat.messages, "train")
    message = str(caught.value)
    assert "\n" not in message
    assert f"{path}:1" in message and "look like sharegpt" in message
    assert "data.format=sharegpt" in message and "data.format=auto" in message


def test_the_recipe_reads_a_users_sharegpt_file_in_the_format_its_rows_show(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [SHAREGPT_ROW, *_many(30)])
    summary, out = run_stage(
        tmp_path,
        ["recipe=support-fr", f"data.path={path}", "data.eval_path=null", "data.calibration.samples=4"],
    )
    assert summary["train"] + summary["eval"] == 31
    rows = read_jsonl(out / "train.jsonl") + read_jsonl(out / "eval.jsonl")
    assert EXPECTED[1:] in [r["messages"] for r in rows]
