"""Reading dataset files into chat conversations, with every problem tied to its file and line.

Every supported layout becomes a list of `{"role", "content"}` messages (system first if
any, then user/assistant turns alternating, ending on assistant). Plain text rows become a
single assistant turn, so the loss covers all of the text as in continued pre-training.
Nothing here loads a model: problems surface before any expensive work.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config import DataFormat

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "bing": "assistant",
}


@dataclass(frozen=True)
class Problem:
    kind: str  # one of trainer.config.PROBLEMS
    where: str  # file:line (or file:row N)
    field: str
    reason: str

    def __str__(self) -> str:
        field = f" {self.field}:" if self.field else ""
        return f"{self.where}:{field} {self.reason} [{self.kind}]"


@dataclass(frozen=True)
class RawRow:
    where: str
    value: Any


@dataclass(frozen=True)
class Conversation:
    where: str
    messages: list[dict[str, str]]


class RowError(Exception):
    """One row's problem, raised while normalising it."""

    def __init__(self, kind: str, field: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.field, self.reason = kind, field, reason


# ---------------------------------------------------------------- reading files


def dataset_files(path: Path) -> list[Path]:
    """A file, or the supported files of a folder in name order; anything else is a clear error."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: folder holds no {'/'.join(SUPPORTED_SUFFIXES)} file")
        return files
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return [path]


def _decode(raw: bytes, where: str) -> str | Problem:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Problem(
            "bad_utf8", where, "", f"invalid UTF-8 at byte {exc.start} ({raw[exc.start : exc.start + 4]!r})"
        )


def read_rows(path: Path) -> Iterator[RawRow | Problem]:
    """Rows of one file, streamed where the format allows, each tagged with where it came from."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                where = f"{path}:{number}"
                text = _decode(raw, where)
                if isinstance(text, Problem):
                    yield text
                    continue
                if not text.strip():
                    continue
                try:
                    yield RawRow(where, json.loads(text))
                except json.JSONDecodeError as exc:
                    yield Problem("invalid_json", where, "", f"not JSON: {exc.msg} at column {exc.colno}")
    elif suffix == ".json":
        raw = path.read_bytes()
        text = _decode(raw, f"{path}:{_bad_line(raw)}")
        if isinstance(text, Problem):
            yield text
            return
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Problem(
                "invalid_json", f"{path}:{exc.lineno}", "", f"not JSON: {exc.msg} at column {exc.colno}"
            )
            return
        if isinstance(value, dict) and isinstance(value.get("data"), list):
            value = value["data"]
        if not isinstance(value, list):
            yield Problem(
                "wrong_type", f"{path}:1", "", 'a .json dataset must be a list of rows (or {"data": [...]})'
            )
            return
        for index, row in enumerate(value):
            yield RawRow(f"{path}:item {index}", row)
    elif suffix == ".csv":
        with open(path, "rb") as handle:
            raw = handle.read()
        text = _decode(raw, f"{path}:{_bad_line(raw)}")
        if isinstance(text, Problem):
            yield text
            return
        reader = csv.DictReader(text.splitlines(keepends=True))
        for row in reader:
            yield RawRow(
                f"{path}:{reader.line_num}", {k: _maybe_json(v) for k, v in row.items() if k is not None}
            )
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        index = 0
        for batch in table.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield RawRow(f"{path}:row {index}", row)
                index += 1


def _bad_line(raw: bytes) -> int:
    """The line holding the first invalid UTF-8 byte (or the last line if there is none)."""
    try:
        raw.decode("utf-8")
        end = len(raw)
    except UnicodeDecodeError as exc:
        end = exc.start
    return raw[:end].count(b"\n") + 1


def _maybe_json(value: str | None) -> Any:
    """CSV cells holding a JSON list (messages, conversations) are parsed; other cells stay text."""
    if value and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def read_hub(dataset_id: str, split: str) -> Iterator[RawRow]:
    import datasets

    try:
        loaded = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # the hub raises many types; all mean the same to the user
        raise FileNotFoundError(
            f"data.path={dataset_id!r} is no local file or folder, and loading it from the dataset hub failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Offline, point data.path at a "
            f".jsonl/.json/.parquet/.csv file or a folder of them."
        ) from exc
    for index, row in enumerate(loaded):
        yield RawRow(f"{dataset_id}[{split}]:row {index}", row)


def read_source(path_or_id: str, hub_split: str) -> Iterator[RawRow | Problem]:
    path = Path(os.path.expanduser(path_or_id))
    if path.exists():
        for file in dataset_files(path):
            yield from read_rows(file)
    elif (
        path.suffix.lower() in SUPPORTED_SUFFIXES
        or path_or_id.startswith((".", "/", "~"))
        or path_or_id.count("/") != 1
    ):
        raise FileNotFoundError(f"data file {path} does not exist (cwd {Path.cwd()})")
    else:
        yield from read_hub(path_or_id, hub_split)


# ---------------------------------------------------------------- normalising rows


def detect_format(row: dict[str, Any]) -> DataFormat:
    if "messages" in row:
        return DataFormat.messages
    if "conversations" in row:
        return DataFormat.sharegpt
    if "instruction" in row and "output" in row:
        return DataFormat.alpaca
    if "prompt" in row and "completion" in row:
        return DataFormat.prompt_completion
    if "text" in row:
        return DataFormat.text
    raise RowError(
        "missing_field",
        "",
        f"cannot tell the format from keys {sorted(row)[:8]}: expected messages, conversations (ShareGPT), "
        "instruction/output (alpaca), prompt/completion or text",
    )


def _require(row: dict[str, Any], key: str) -> Any:
    if key not in row or row[key] is None:
        raise RowError("missing_field", key, "missing")
    return row[key]


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise RowError("wrong_type", field, f"expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RowError("bad_utf8", field, f"not encodable as UTF-8 ({exc.reason})") from exc
    if not value.strip():
        raise RowError("empty_content", field, "empty")
    return value


def _message_list(
    value: Any, field: str, role_key: str, content_key: str, roles: dict[str, str]
) -> list[dict]:
    if not isinstance(value, list):
        raise RowError("wrong_type", field, f"expected a list of messages, got {type(value).__name__}")
    if not value:
        raise RowError("empty_content", field, "no messages")
    messages = []
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise RowError("wrong_type", where, f"expected an object, got {type(item).__name__}")
        role = _require_in(item, role_key, where)
        if not isinstance(role, str):
            raise RowError(
                "wrong_type", f"{where}.{role_key}", f"expected a string, got {type(role).__name__}"
            )
        if role not in roles:
            raise RowError(
                "unknown_role", f"{where}.{role_key}", f"unknown role {role!r}; allowed: {sorted(roles)}"
            )
        content = _text(_require_in(item, content_key, where), f"{where}.{content_key}")
        messages.append({"role": roles[role], "content": content})
    return messages


def _require_in(item: dict[str, Any], key: str, where: str) -> Any:
    if key not in item or item[key] is None:
        raise RowError("missing_field", f"{where}.{key}", "missing")
    return item[key]


def to_messages(row: Any, fmt: DataFormat) -> list[dict[str, str]]:
    """One raw row to chat messages, or RowError naming the field and the reason."""
    if not isinstance(row, dict):
        raise RowError("wrong_type", "", f"expected a JSON object per row, got {type(row).__name__}")
    if fmt is DataFormat.auto:
        fmt = detect_format(row)
    identity = {role: role for role in ROLES}
    if fmt is DataFormat.messages:
        messages = _message_list(_require(row, "messages"), "messages", "role", "content", identity)
    elif fmt is DataFormat.sharegpt:
        messages = _message_list(
            _require(row, "conversations"), "conversations", "from", "value", SHAREGPT_ROLES
        )
    elif fmt is DataFormat.alpaca:
        instruction = _text(_require(row, "instruction"), "instruction")
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            raise RowError("wrong_type", "input", f"expected a string, got {type(extra).__name__}")
        prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        messages = [{"role": "user", "content": prompt}]
        messages.append({"role": "assistant", "content": _text(_require(row, "output"), "output")})
        if row.get("system") is not None:
            messages.insert(0, {"role": "system", "content": _text(row["system"], "system")})
    elif fmt is DataFormat.prompt_completion:
        messages = _side(_require(row, "prompt"), "prompt", "user") + _side(
            _require(row, "completion"), "completion", "assistant"
        )
    else:
        messages = [{"role": "assistant", "content": _text(_require(row, "text"), "text")}]
    check_turns(messages, fmt)
    return messages


def _side(value: Any, field: str, role: str) -> list[dict[str, str]]:
    """A prompt or completion: plain text, or TRL's conversational list of messages."""
    if isinstance(value, list):
        return _message_list(value, field, "role", "content", {r: r for r in ROLES})
    return [{"role": role, "content": _text(value, field)}]


def check_turns(messages: list[dict[str, str]], fmt: DataFormat) -> None:
    """System only first; then user and assistant alternate from user; the last turn is the assistant's."""
    body = messages[1:] if messages[0]["role"] == "system" else messages
    if fmt is DataFormat.text:
        return
    if not body:
        raise RowError("no_final_assistant", "messages", "only a system message")
    for index, message in enumerate(body):
        offset = index + len(messages) - len(body)
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise RowError(
                "turn_order",
                f"messages[{offset}].role",
                f"expected {expected!r} here, got {message['role']!r} (after an optional system message, "
                "user and assistant must alternate, starting with user)",
            )
    if body[-1]["role"] != "assistant":
        raise RowError(
            "no_final_assistant", f"messages[{len(messages) - 1}]", "the last message must be the assistant's"
        )


def load_conversations(
    path_or_id: str, fmt: DataFormat, hub_split: str
) -> tuple[list[Conversation], list[Problem]]:
    """All conversations of a source, and all problems found, nothing raised for bad rows."""
    conversations: list[Conversation] = []
    problems: list[Problem] = []
    for item in read_source(path_or_id, hub_split):
        if isinstance(item, Problem):
            problems.append(item)
            continue
        try:
            conversations.append(Conversation(item.where, to_messages(item.value, fmt)))
        except RowError as exc:
            problems.append(Problem(exc.kind, item.where, exc.field, exc.reason))
    return conversations, problems
