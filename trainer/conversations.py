"""Reading dataset files into chat conversations, with every problem tied to its file and line.

Every supported layout becomes a list of `{"role", "content"}` messages (system first if
any, then user/assistant turns alternating, ending on assistant). Plain text rows become a
single assistant turn, so the loss covers all of the text as in continued pre-training.
Nothing here loads a model: problems surface before any expensive work.

Files are read as streams (a row at a time; parquet a batch at a time; a .json array is held
as text, since it must parse as a whole, but its rows are decoded one by one), so the data
stage can read a dataset larger than memory several times instead of holding it.

A bad row becomes a `Problem` naming its file, line and field, subject to `data.on_problem`.
A file that cannot be read past some point (a .json or .parquet file that does not parse, a
CSV the parser rejects) raises `DataValidationError` naming the file and line: how many rows
it would lose is unknown, so no policy may drop it silently.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config import DataFormat
from trainer.errors import DataValidationError

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
# Editors on Windows start UTF-8 files with a byte order mark; it is no part of the first row.
BOM = codecs.BOM_UTF8
# JSON's insignificant whitespace, skipped between the items of a .json array.
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# Bytes that are not UTF-8, decoded with `surrogateescape`, become these code points, which
# valid UTF-8 text can never hold: a CSV cell containing one came from invalid bytes.
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]")
# CSV cells hold whole conversations; the csv module's default cap (128 KiB) is no data rule.
_CSV_FIELD_LIMIT = 2**31 - 1


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


def fold_system(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The conversation without its system message: that text opens the first user message, as
    the families whose templates have no system role are prompted with one."""
    if not messages or messages[0]["role"] != "system" or len(messages) < 2 or messages[1]["role"] != "user":
        return [dict(m) for m in messages]
    system, user, *rest = messages
    return [{"role": "user", "content": f"{system['content']}\n\n{user['content']}"}, *map(dict, rest)]


class RowError(Exception):
    """One row's problem, raised while normalising it."""

    def __init__(self, kind: str, field: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.field, self.reason = kind, field, reason


def _short(value: Any, limit: int = 60) -> str:
    """A repr cut to a readable length: a 10 MB role name must not become a 10 MB error message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


# ---------------------------------------------------------------- reading files


def dataset_files(path: Path) -> list[Path]:
    """A file, or the supported files of a folder in name order; anything else is a clear error."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: folder holds no {'/'.join(SUPPORTED_SUFFIXES)} file")
        folder = path.resolve()
        for file in files:
            # A link inside the folder must not pull in data from elsewhere without the user naming it.
            if not file.resolve().is_relative_to(folder):
                raise ValueError(
                    f"{file}: a link to {file.resolve()}, outside the folder {path}; name that file in data.path "
                    "or copy it into the folder"
                )
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


def _json_failure(exc: Exception) -> str:
    """Why `json.loads` refused a text, for the errors it raises that are not JSONDecodeError."""
    if isinstance(exc, RecursionError):
        return "not JSON this reader can parse: nested too deeply"
    if isinstance(exc, json.JSONDecodeError):  # "Invalid control character at" ends in "at" already
        return f"not JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}"
    # ValueError: an integer longer than sys.get_int_max_str_digits() digits
    return f"not JSON this reader can parse: {str(exc).split(';')[0]}"


def _jsonl_rows(path: Path) -> Iterator[RawRow | Problem]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            text = _decode(raw, where)
            if isinstance(text, Problem):
                yield text
                continue
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as exc:
                yield Problem("invalid_json", where, "", _json_failure(exc))
                continue
            yield RawRow(where, value)


class _ItemError(Exception):
    """An array item the JSON parser gave up on, with the line the item starts on."""

    def __init__(self, line: int, cause: Exception) -> None:
        super().__init__(str(cause))
        self.line, self.cause = line, cause


def _json_array(text: str) -> Iterator[tuple[int, int, Any]]:
    """(line, index, value) of each item of a JSON array text, decoded one item at a time.

    Raises JSONDecodeError (positioned in the whole text) where the array's syntax breaks, and
    _ItemError where an item is too deep or holds too long a number.
    """
    decoder = json.JSONDecoder()
    position = _WHITESPACE.match(text).end() + 1  # past "["
    position = _WHITESPACE.match(text, position).end()
    line, counted = 1, 0
    if text.startswith("]", position):
        position = _WHITESPACE.match(text, position + 1).end()
        if position != len(text):
            raise json.JSONDecodeError("Extra data", text, position)
        return
    for index in itertools.count():
        line += text.count("\n", counted, position)
        counted = position
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            raise
        except (ValueError, RecursionError) as exc:
            raise _ItemError(line, exc) from exc
        yield line, index, value
        position = _WHITESPACE.match(text, end).end()
        if text.startswith(",", position):
            position = _WHITESPACE.match(text, position + 1).end()
            continue
        if text.startswith("]", position):
            position = _WHITESPACE.match(text, position + 1).end()
            if position != len(text):
                raise json.JSONDecodeError("Extra data", text, position)
            return
        raise json.JSONDecodeError("Expecting ',' delimiter", text, position)


def _json_rows(path: Path) -> Iterator[RawRow | Problem]:
    raw = path.read_bytes()
    if raw.startswith(BOM):
        raw = raw[len(BOM) :]
    text = _decode(raw, f"{path}:{_bad_line(raw)}")
    if isinstance(text, Problem):
        yield text
        return
    del raw
    if text.lstrip(" \t\n\r").startswith("["):
        hint = "a .json dataset must parse as a whole (in .jsonl, a bad line is one bad row)"
        try:
            for line, index, value in _json_array(text):
                yield RawRow(f"{path}:{line} (item {index})", value)
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"{path}:{exc.lineno}: {_json_failure(exc)}; {hint}") from exc
        except _ItemError as exc:
            raise DataValidationError(f"{path}:{exc.line}: {_json_failure(exc.cause)}; {hint}") from exc
        return
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else 1
        raise DataValidationError(f"{path}:{line}: {_json_failure(exc)}") from exc
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        for index, row in enumerate(value["data"]):
            yield RawRow(f"{path}:data item {index}", row)
        return
    raise DataValidationError(
        f'{path}:1: a .json dataset must be a list of rows (or {{"data": [...]}}), got {type(value).__name__}'
    )


def _csv_rows(path: Path) -> Iterator[RawRow | Problem]:
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    # utf-8-sig drops a leading byte order mark; surrogateescape keeps reading past invalid bytes so
    # that only the rows holding them are reported.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames or []
            if any(_ESCAPED_BYTES.search(name) for name in header):
                yield Problem("bad_utf8", f"{path}:1", "", "invalid UTF-8 in the header line")
                return
            for row in reader:
                where = f"{path}:{reader.line_num}"
                cells = {k: v for k, v in row.items() if k is not None}
                bad = [k for k, v in cells.items() if isinstance(v, str) and _ESCAPED_BYTES.search(v)]
                if bad:
                    yield Problem("bad_utf8", where, bad[0], "invalid UTF-8 in this cell")
                    continue
                yield RawRow(where, {k: _maybe_json(v) for k, v in cells.items()})
        except csv.Error as exc:
            raise DataValidationError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from exc


def _parquet_rows(path: Path) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    failures = (pa.ArrowException, OSError, ValueError, OverflowError)
    index = 0
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
    except failures as exc:
        raise DataValidationError(f"{path}: not a readable parquet file ({_first_line(exc)})") from exc
    while True:
        try:
            batch = next(batches, None)
            rows = None if batch is None else batch.to_pylist()
        except failures as exc:
            raise DataValidationError(
                f"{path}:row {index}: not a readable parquet file from this row on ({_first_line(exc)})"
            ) from exc
        if rows is None:
            return
        for row in rows:
            yield RawRow(f"{path}:row {index}", row)
            index += 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_rows(path: Path) -> Iterator[RawRow | Problem]:
    """Rows of one file, streamed where the format allows, each tagged with where it came from."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_rows(path)
    elif suffix == ".json":
        yield from _json_rows(path)
    elif suffix == ".csv":
        yield from _csv_rows(path)
    elif suffix == ".parquet":
        yield from _parquet_rows(path)


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
        except (ValueError, RecursionError):
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
    keys = ", ".join(_short(k, 30) for k in sorted(map(str, row))[:8]) or "none"
    raise RowError(
        "missing_field",
        "",
        f"cannot tell the format from keys [{keys}]: expected messages, conversations (ShareGPT), "
        "instruction/output (alpaca), prompt/completion or text",
    )


class FormatMismatch(RowError):
    """A row of a pinned `data.format` that carries another format's fields instead."""

    def __init__(self, pinned: DataFormat, seen: DataFormat, key: str) -> None:
        super().__init__("missing_field", key, f"no `{key}` field: the row looks like {seen.value}")
        self.pinned, self.seen = pinned, seen


# The field each format cannot do without: its absence, with another format's fields present,
# means the rows are in another format than the one pinned.
FORMAT_KEY = {
    DataFormat.messages: "messages",
    DataFormat.sharegpt: "conversations",
    DataFormat.alpaca: "instruction",
    DataFormat.prompt_completion: "prompt",
    DataFormat.text: "text",
}


def _check_pinned(row: dict[str, Any], fmt: DataFormat) -> None:
    key = FORMAT_KEY.get(fmt)
    if key is None or key in row:
        return
    try:
        seen = detect_format(row)
    except RowError:
        return  # no format's fields either: a plain missing field
    if seen is not fmt:
        raise FormatMismatch(fmt, seen, key)


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


# A message and the field its role came from, so a turn-order problem names the user's own field.
Turn = tuple[dict[str, str], str]


def _message_list(
    value: Any, field: str, role_key: str, content_key: str, roles: dict[str, str]
) -> list[Turn]:
    if not isinstance(value, list):
        raise RowError("wrong_type", field, f"expected a list of messages, got {type(value).__name__}")
    if not value:
        raise RowError("empty_content", field, "no messages")
    turns = []
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
                "unknown_role",
                f"{where}.{role_key}",
                f"unknown role {_short(role)}; allowed: {sorted(roles)}",
            )
        content = _text(_require_in(item, content_key, where), f"{where}.{content_key}")
        turns.append(({"role": roles[role], "content": content}, f"{where}.{role_key}"))
    return turns


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
    else:
        _check_pinned(row, fmt)
    identity = {role: role for role in ROLES}
    list_field = "messages"
    if fmt is DataFormat.messages:
        turns = _message_list(_require(row, "messages"), "messages", "role", "content", identity)
    elif fmt is DataFormat.sharegpt:
        list_field = "conversations"
        turns = _message_list(
            _require(row, "conversations"), "conversations", "from", "value", SHAREGPT_ROLES
        )
    elif fmt is DataFormat.alpaca:
        instruction = _text(_require(row, "instruction"), "instruction")
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            raise RowError("wrong_type", "input", f"expected a string, got {type(extra).__name__}")
        if extra is not None:
            try:
                extra.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise RowError("bad_utf8", "input", f"not encodable as UTF-8 ({exc.reason})") from exc
        prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        turns = [({"role": "user", "content": prompt}, "instruction")]
        turns.append(({"role": "assistant", "content": _text(_require(row, "output"), "output")}, "output"))
        if row.get("system") is not None:
            turns.insert(0, ({"role": "system", "content": _text(row["system"], "system")}, "system"))
    elif fmt is DataFormat.prompt_completion:
        turns = _side(_require(row, "prompt"), "prompt", "user") + _side(
            _require(row, "completion"), "completion", "assistant"
        )
    else:
        turns = [({"role": "assistant", "content": _text(_require(row, "text"), "text")}, "text")]
    messages = [message for message, _ in turns]
    check_turns(messages, fmt, [field for _, field in turns], list_field)
    return messages


def _side(value: Any, field: str, role: str) -> list[Turn]:
    """A prompt or completion: plain text, or TRL's conversational list of messages."""
    if isinstance(value, list):
        return _message_list(value, field, "role", "content", {r: r for r in ROLES})
    return [({"role": role, "content": _text(value, field)}, field)]


def check_turns(
    messages: list[dict[str, str]],
    fmt: DataFormat,
    fields: list[str] | None = None,
    list_field: str = "messages",
) -> None:
    """System only first; then user and assistant alternate from user; the last turn is the assistant's.

    `fields` names where each message's role came from (default `messages[i].role`).
    """
    fields = fields or [f"messages[{i}].role" for i in range(len(messages))]
    body = messages[1:] if messages[0]["role"] == "system" else messages
    if fmt is DataFormat.text:
        return
    if not body:
        raise RowError("no_final_assistant", list_field, "only a system message")
    for index, message in enumerate(body):
        offset = index + len(messages) - len(body)
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise RowError(
                "turn_order",
                fields[offset],
                f"expected {expected!r} here, got {message['role']!r} (after an optional system message, "
                "user and assistant must alternate, starting with user)",
            )
    if body[-1]["role"] != "assistant":
        last = fields[-1]  # messages[3].role names the message: messages[3]
        field = last.rsplit(".", 1)[0] if "[" in last else last
        raise RowError("no_final_assistant", field, "the last message must be the assistant's")


def iter_conversations(path_or_id: str, fmt: DataFormat, hub_split: str) -> Iterator[Conversation | Problem]:
    """Each row of a source as a Conversation or a Problem, in reading order, one at a time.

    Deterministic: reading the same files again yields the same sequence, which lets the data
    stage keep compact per-row facts between passes instead of the rows themselves.
    """
    for item in read_source(path_or_id, hub_split):
        if isinstance(item, Problem):
            yield item
            continue
        try:
            yield Conversation(item.where, to_messages(item.value, fmt))
        except FormatMismatch as exc:
            # Every row would fail alike: one line naming what the rows are and the key to set.
            raise DataValidationError(
                f"{item.where}: data.format is {exc.pinned.value}, but the rows look like "
                f"{exc.seen.value} (no `{exc.field}` field); set data.format={exc.seen.value}, "
                "or data.format=auto to read the format each row shows"
            ) from None
        except RowError as exc:
            yield Problem(exc.kind, item.where, exc.field, exc.reason)


def load_conversations(
    path_or_id: str, fmt: DataFormat, hub_split: str
) -> tuple[list[Conversation], list[Problem]]:
    """All conversations of a source, and all problems found, nothing raised for bad rows (small sources)."""
    conversations: list[Conversation] = []
    problems: list[Problem] = []
    for item in iter_conversations(path_or_id, fmt, hub_split):
        (problems if isinstance(item, Problem) else conversations).append(item)  # type: ignore[arg-type]
    return conversations, problems
