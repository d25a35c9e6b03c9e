"""The data stage against hostile input: generated rows and files, and a dataset larger than memory should need.

Property: whatever a dataset file holds, the data stage's reading and validation either yields
valid conversations or raises a TrainerError whose message names the file and, for a row, its
line (and field where there is one) -- never another exception. Examples are derandomized so
the reliability table they record (docs/RELIABILITY.md) does not change between runs; the
input classes are wide enough that a fixed sample still covers every reader and check.

Memory: the stage streams its input. A child process reads a few hundred MB of jsonl and its
peak RSS must stay within a bound that loading the rows into memory exceeds several times over.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ASSETS, REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability import record, record_counts
from rich.console import Console

from trainer.config import PROBLEMS, DataConfig, DataFormat, ModelConfig, Policy, TrainerConfig
from trainer.conversations import ROLES, Conversation, Problem
from trainer.errors import TrainerError
from trainer.pipeline import StageContext
from trainer.stages import data as data_stage

EXPECTED = "valid conversations, or TrainerError naming file:line (and field)"
SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# ------------------------------------------------------------------ generated values

ROLE_NAMES = ["system", "user", "assistant", "human", "gpt", "model", "bot", "", "User", "tool"]
# Text a row may hold: ordinary, blank, lone surrogates (not encodable), control characters, huge.
TEXT = st.one_of(
    st.text(max_size=24),
    st.sampled_from(["", "   ", "\n", "ok", "\ud800", "a\udcff", "nul\x00byte", "\u2028", "é" * 3]),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "😀"]), st.integers(1, 200_000)),
)
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
ROLE = st.one_of(st.sampled_from(ROLE_NAMES), JSON_VALUE)
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": ROLE, "content": st.one_of(TEXT, JSON_VALUE)}),
    st.fixed_dictionaries({}, optional={"role": ROLE, "content": TEXT, "from": ROLE, "value": TEXT}),
    JSON_VALUE,
)
# Well-formed rows, so that accepted files are common too and their checks run.
WORDS = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=20)
GOOD_MESSAGES = st.builds(
    lambda system, pairs: (
        ([{"role": "system", "content": system}] if system else [])
        + [m for q, a in pairs for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    ),
    st.one_of(st.none(), st.just("Tu es un agent.")),
    st.lists(st.tuples(WORDS, WORDS), min_size=1, max_size=3),
)
GOOD_ROW = st.one_of(
    st.fixed_dictionaries({"messages": GOOD_MESSAGES}),
    st.fixed_dictionaries({"instruction": WORDS, "output": WORDS}, optional={"input": WORDS}),
    st.fixed_dictionaries({"prompt": WORDS, "completion": WORDS}),
    st.fixed_dictionaries({"text": WORDS}),
)
ROW = st.one_of(
    st.fixed_dictionaries({"messages": GOOD_MESSAGES}),
    st.fixed_dictionaries({"messages": st.one_of(st.lists(MESSAGE, max_size=4), JSON_VALUE)}),
    st.fixed_dictionaries({"conversations": st.lists(MESSAGE, max_size=4)}),
    st.fixed_dictionaries(
        {"instruction": st.one_of(TEXT, JSON_VALUE), "output": st.one_of(TEXT, JSON_VALUE)},
        optional={"input": st.one_of(TEXT, JSON_VALUE), "system": st.one_of(TEXT, JSON_VALUE)},
    ),
    st.fixed_dictionaries(
        {
            "prompt": st.one_of(TEXT, st.lists(MESSAGE, max_size=3)),
            "completion": st.one_of(TEXT, st.lists(MESSAGE, max_size=2)),
        }
    ),
    st.fixed_dictionaries({"text": st.one_of(TEXT, JSON_VALUE)}),
    JSON_VALUE,  # non-object rows, objects of unknown keys
)
FORMAT = st.one_of(st.just(DataFormat.auto), st.sampled_from(list(DataFormat)))
POLICY = st.one_of(
    st.sampled_from([Policy.error, Policy.drop]).map(lambda p: dict.fromkeys(PROBLEMS, p)),
    st.fixed_dictionaries({k: st.sampled_from([Policy.error, Policy.drop]) for k in PROBLEMS}),
)

# Byte-level damage: where a file is cut or what is spliced into it.
JUNK = st.sampled_from(
    [
        b"\xff",
        b"\xc3",
        b"\xed\xa0\x80",  # an encoded surrogate: invalid UTF-8
        b"\x00",
        b"\xef\xbb\xbf",
        b"\n",
        b"\r\n",
        b"{",
        b'"',
        b"\\",
        b",",
        b"[" * 3000,  # nesting deeper than the parser recurses
        b"1" * 5000,  # a number longer than Python converts
    ]
)
EXTRA_LINE = st.sampled_from(
    [
        b"[" * 100_000,
        b'{"text": ' + b"9" * 5000 + b"}",
        b'{"text": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        b"null",
        b"[]",
        b'"just a string"',
        b"   ",
        b'{"text": "' + b"x" * 300_000 + b'"}',
        b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}',
        b'\xef\xbb\xbf{"text": "bom"}',
    ]
)
DAMAGE = st.one_of(
    st.just([]),
    st.lists(
        st.one_of(
            st.tuples(st.just("cut"), st.floats(0, 1)),
            st.tuples(st.just("splice"), st.floats(0, 1), JUNK),
            st.tuples(st.just("line"), EXTRA_LINE),
            st.tuples(st.just("bom")),
        ),
        min_size=1,
        max_size=3,
    ),
)
ROWS = st.lists(st.one_of(GOOD_ROW, ROW), max_size=6)


def damage(data: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    for op in ops:
        if op[0] == "cut":
            data = data[: int(op[1] * len(data))]
        elif op[0] == "splice":
            at = int(op[1] * len(data))
            data = data[:at] + op[2] + data[at:]
        elif op[0] == "line":
            data = data + b"\n" + op[1] + b"\n"
        else:
            data = b"\xef\xbb\xbf" + data
    return data


def to_bytes(text: str) -> bytes:
    # surrogatepass writes lone surrogates as the (invalid) bytes a careless encoder would emit
    return text.encode("utf-8", "surrogatepass")


def dumps(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


# ------------------------------------------------------------------ files


@st.composite
def jsonl_file(draw: st.DrawFn) -> bytes:
    rows = draw(ROWS)
    ascii_only = draw(st.booleans())
    text = "".join(dumps(r, ascii_only) + draw(st.sampled_from(["\n", "\r\n", "\n\n"])) for r in rows)
    return damage(to_bytes(text), draw(DAMAGE))


@st.composite
def json_file(draw: st.DrawFn) -> bytes:
    rows = draw(ROWS)
    shape = draw(st.sampled_from(["list", "list-indented", "data", "scalar", "object"]))
    value: Any = {
        "list": rows,
        "list-indented": rows,
        "data": {"data": rows},
        "scalar": draw(JSON_LEAF),
        "object": {"rows": rows},
    }[shape]
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), indent=2 if shape == "list-indented" else None)
    return damage(to_bytes(text), draw(DAMAGE))


CSV_COLUMNS = [
    "messages",
    "conversations",
    "instruction",
    "input",
    "output",
    "prompt",
    "completion",
    "text",
    "other",
]


@st.composite
def csv_file(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):  # a well-formed alpaca table
        columns, cell = ["instruction", "output"], WORDS
    else:
        columns = draw(st.lists(st.sampled_from(CSV_COLUMNS), min_size=1, max_size=4, unique=True))
        cell = st.one_of(TEXT, GOOD_MESSAGES.map(json.dumps), st.lists(MESSAGE, max_size=3).map(json.dumps))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for _ in range(draw(st.integers(0, 5))):
        width = draw(st.integers(0, len(columns) + 1))  # short and long rows too
        writer.writerow([draw(cell) for _ in range(width)])
    return damage(to_bytes(buffer.getvalue()), draw(DAMAGE))


MESSAGE_STRUCT = pa.struct([("role", pa.string()), ("content", pa.string())])
PARQUET_ROLE = st.one_of(st.none(), st.sampled_from(ROLE_NAMES))
PARQUET_TEXT = st.one_of(st.none(), WORDS, st.text(max_size=20), st.sampled_from(["", " ", "a\x00b"]))


@st.composite
def parquet_file(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(1, 5))
    kind = draw(
        st.sampled_from(
            ["good", "messages", "text", "text-int", "text-binary", "alpaca", "map", "no-columns"]
        )
    )
    if kind == "good":
        table = pa.table(
            {"messages": pa.array([draw(GOOD_MESSAGES) for _ in range(n)], pa.list_(MESSAGE_STRUCT))}
        )
    elif kind == "messages":
        column = st.one_of(
            st.none(),
            st.lists(st.fixed_dictionaries({"role": PARQUET_ROLE, "content": PARQUET_TEXT}), max_size=4),
        )
        table = pa.table({"messages": pa.array([draw(column) for _ in range(n)], pa.list_(MESSAGE_STRUCT))})
    elif kind == "text":
        table = pa.table({"text": pa.array([draw(PARQUET_TEXT) for _ in range(n)], pa.string())})
    elif kind == "text-int":
        table = pa.table(
            {"text": pa.array([draw(st.integers(-(2**63), 2**63 - 1)) for _ in range(n)], pa.int64())}
        )
    elif kind == "text-binary":
        table = pa.table({"text": pa.array([draw(st.binary(max_size=8)) for _ in range(n)], pa.binary())})
    elif kind == "alpaca":
        table = pa.table(
            {
                "instruction": pa.array([draw(PARQUET_TEXT) for _ in range(n)], pa.string()),
                "output": pa.array([draw(PARQUET_TEXT) for _ in range(n)], pa.string()),
            }
        )
    elif kind == "map":
        pairs = st.lists(st.tuples(st.sampled_from(["role", "content"]), st.text(max_size=5)), max_size=2)
        values = [draw(st.lists(pairs, max_size=3)) for _ in range(n)]
        table = pa.table({"messages": pa.array(values, pa.list_(pa.map_(pa.string(), pa.string())))})
    else:
        table = pa.table({"other": pa.array(list(range(n)), pa.int64())})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return damage(buffer.getvalue(), draw(DAMAGE))


FILES: dict[str, Callable[[], st.SearchStrategy[bytes]]] = {
    ".jsonl": jsonl_file,
    ".json": json_file,
    ".csv": csv_file,
    ".parquet": parquet_file,
}


# ------------------------------------------------------------------ the property


# Where a row is: line N, a parquet row, an item of a {"data": [...]} list.
LOCATION = r"(\d+|row \d+|data item \d+)"
# Errors about a whole file or folder, where no line applies; every other error must name one.
WHOLE_FILE = ("not a readable parquet file (", "holds no usable row", "folder holds no")
# Problems about one field of a row must name it.
FIELD_KINDS = {"empty_content", "unknown_role", "turn_order", "no_final_assistant"}


def assert_valid(conversation: Conversation, fmt: DataFormat, files: list[Path]) -> None:
    """What every accepted row must be: the chat shape training renders, in text that encodes."""
    assert any(conversation.where.startswith(f"{f}:") for f in files), conversation.where
    messages = conversation.messages
    assert messages and all(set(m) == {"role", "content"} for m in messages)
    for m in messages:
        assert m["role"] in ROLES
        assert isinstance(m["content"], str) and m["content"].strip()
        m["content"].encode("utf-8")  # raises on a lone surrogate
    roles = [m["role"] for m in messages]
    body = roles[1:] if roles[0] == "system" else roles
    if roles != ["assistant"]:  # else a plain text row: one assistant turn
        assert fmt is not DataFormat.text, roles
        assert body and body == ["user", "assistant"] * (len(body) // 2), roles
    json.dumps(messages, ensure_ascii=False).encode("utf-8")  # what the split key hashes


def assert_names_place(message: str, files: list[Path], root: Path) -> None:
    """A rejection names the file (or folder) and, unless it is about the whole file, the line."""
    assert str(root) in message, message
    if any(phrase in message for phrase in WHOLE_FILE):
        return
    places = "|".join(re.escape(str(f)) for f in files)
    listed = [line for line in message.splitlines() if line.startswith("  /")]
    for line in listed or [message]:
        assert re.search(rf"({places}):{LOCATION}", line), line


def check(root: Path, fmt: DataFormat, policy: dict[str, Policy]) -> str:
    """Validate a dataset as the stage does; assert the property; return the outcome class."""
    files = sorted(root.iterdir()) if root.is_dir() else [root]
    cfg = DataConfig(path=str(root), format=fmt, on_problem=policy, max_reported_problems=5)
    try:
        read, problems = data_stage.validate_sources(cfg)
    except TrainerError as exc:
        assert_names_place(str(exc), files, root)
        if "invalid row(s)" in str(exc):
            return "rejected: rows listed"
        return "rejected: file named"
    # every row again, as later passes read them: valid ones valid, dropped ones named
    valid = 0
    for item in data_stage.sources(cfg)["train"].read():
        if isinstance(item, Conversation):
            assert_valid(item, fmt, files)
            valid += 1
        else:
            assert isinstance(item, Problem) and item.kind in PROBLEMS
            assert policy[item.kind] is Policy.drop
            assert re.match(rf"({'|'.join(re.escape(str(f)) for f in files)}):{LOCATION}", item.where)
            assert item.field or item.kind not in FIELD_KINDS, item
    assert valid == read["train"] > 0
    return "accepted, rows dropped" if problems.counts else "accepted"


@pytest.mark.reliability
@pytest.mark.parametrize(
    ("suffix", "examples"), [(".jsonl", 150), (".json", 80), (".csv", 80), (".parquet", 60)]
)
def test_any_file_becomes_valid_rows_or_a_named_error(suffix: str, examples: int) -> None:
    outcomes: Counter[str] = Counter()

    @settings(SETTINGS, max_examples=examples)
    @given(data=FILES[suffix](), fmt=FORMAT, policy=POLICY)
    def prop(data: bytes, fmt: DataFormat, policy: dict[str, Policy]) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"d{suffix}"
            path.write_bytes(data)
            outcomes[check(path, fmt, policy)] += 1

    prop()
    assert len(outcomes) >= 2, outcomes  # the generators reach more than one outcome
    record_counts(
        "data: generated files (hypothesis)",
        f"{suffix} files: arbitrary JSON rows, wrong types, huge strings, deep nesting, invalid UTF-8, "
        "truncation, BOM, spliced junk, any format and policy",
        EXPECTED,
        outcomes,
    )


@pytest.mark.reliability
def test_any_folder_becomes_valid_rows_or_a_named_error() -> None:
    outcomes: Counter[str] = Counter()

    @settings(SETTINGS, max_examples=40)
    @given(
        files=st.lists(st.tuples(st.sampled_from(sorted(FILES)), st.data()), max_size=3),
        extras=st.lists(st.sampled_from(["notes.txt", "empty.jsonl", "empty.csv"]), unique=True),
        fmt=FORMAT,
        policy=POLICY,
    )
    def prop(
        files: list[tuple[str, st.DataObject]], extras: list[str], fmt: DataFormat, policy: dict[str, Policy]
    ) -> None:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder) / "dataset"
            root.mkdir()
            for index, (suffix, data) in enumerate(files):
                (root / f"part-{index}{suffix}").write_bytes(data.draw(FILES[suffix]()))
            for name in extras:
                (root / name).write_bytes(b"" if name != "notes.txt" else b"not data")
            outcomes[check(root, fmt, policy)] += 1

    prop()
    assert len(outcomes) >= 2, outcomes
    record_counts(
        "data: generated files (hypothesis)",
        "folders of 0-3 generated files plus empty files and an unsupported .txt",
        EXPECTED,
        outcomes,
    )


# ------------------------------------------------------------------ found by the properties


def _parquet(damaged: str) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": ["a" * 100] * 50}), buffer)
    data = buffer.getvalue()
    return data[: len(data) // 2] if damaged == "cut" else data[:10] + b"\xff" + data[11:]


# Each input here escaped as a traceback, or lost its file and line, before the fixes; kept as
# plain examples: (case, suffix, file content, what the outcome must match).
REGRESSIONS: list[tuple[str, str, bytes, str]] = [
    (
        "jsonl row nested 5000 deep",
        ".jsonl",
        b"[" * 5000 + b"\n",
        r"d\.jsonl:1: not JSON .*nested too deeply",
    ),
    (
        "jsonl row holding a 5000-digit number",
        ".jsonl",
        b'{"text": ' + b"1" * 5000 + b"}\n",
        r"d\.jsonl:1: not JSON",
    ),
    ("json array item nested 5000 deep", ".json", b'[{"text": "a"},\n' + b"[" * 5000, r"d\.json:2: not JSON"),
    ("json array item of 5000 digits", ".json", b"[\n" + b"1" * 5000 + b"]", r"d\.json:2: not JSON"),
    ("csv cell of 200,000 characters", ".csv", b"text\n" + b"x" * 200_000 + b"\n", "accepted"),
    ("csv cell holding a JSON list nested 5000 deep", ".csv", b"text\n" + b"[" * 5000 + b"\n", "accepted"),
    ("csv starting with a byte order mark", ".csv", b"\xef\xbb\xbfinstruction,output\nq,a\n", "accepted"),
    ("parquet file cut in half", ".parquet", _parquet("cut"), r"d\.parquet: not a readable parquet file"),
    (
        "parquet file with a junk byte in a page",
        ".parquet",
        _parquet("junk"),
        r"d\.parquet(:row \d+)?: not a readable",
    ),
    (
        "alpaca input holding a lone surrogate",
        ".jsonl",
        b'{"instruction": "q", "input": "\\ud800", "output": "a"}\n',
        r"d\.jsonl:1: input: not encodable as UTF-8",
    ),
]


@pytest.mark.reliability
@pytest.mark.parametrize(("case", "suffix", "data", "outcome"), REGRESSIONS, ids=[r[0] for r in REGRESSIONS])
def test_inputs_that_escaped_before(
    tmp_path: Path, case: str, suffix: str, data: bytes, outcome: str
) -> None:
    path = tmp_path / f"d{suffix}"
    path.write_bytes(data)
    policy = dict.fromkeys(PROBLEMS, Policy.error)
    if outcome == "accepted":
        assert check(path, DataFormat.auto, policy) == "accepted"
        observed = "valid row"
    else:
        with pytest.raises(TrainerError) as caught:
            data_stage.validate_sources(DataConfig(path=str(path), on_problem=policy))
        message = str(caught.value)
        assert re.search(outcome, message), message
        assert_names_place(message, [path], path)
        named = next(line for line in message.splitlines() if str(path) in line)
        observed = "TrainerError: " + named.strip().replace(str(path), f"d{suffix}")[:100]
    record("data: inputs that once crashed", case, "valid row, or TrainerError naming file:line", observed)


# ------------------------------------------------------------------ the whole stage


def _stage_cfg(path: Path, policy: dict[str, Policy]) -> TrainerConfig:
    data = DataConfig(path=str(path), on_problem=policy, max_length=256)
    data.calibration.samples = 4
    return TrainerConfig(model=ModelConfig(name_or_path=str(ASSETS / "tiny-base")), data=data)


@pytest.mark.reliability
def test_the_whole_stage_on_generated_datasets() -> None:
    """Past validation: split, dedupe and calibration on whatever rows survive, or a named error."""
    outcomes: Counter[str] = Counter()

    @settings(SETTINGS, max_examples=12)
    @given(
        good=st.lists(GOOD_ROW, max_size=10),
        wild=st.lists(ROW, max_size=4),
        duplicates=st.integers(0, 3),
        order=st.randoms(use_true_random=False),
    )
    def prop(good: list[Any], wild: list[Any], duplicates: int, order: Any) -> None:
        rows = good + wild + good[:duplicates]
        order.shuffle(rows)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "d.jsonl"
            path.write_bytes(to_bytes("".join(json.dumps(r) + "\n" for r in rows)))
            out = Path(folder) / "out"
            out.mkdir()
            cfg = _stage_cfg(path, dict.fromkeys(PROBLEMS, Policy.drop))
            try:
                summary = data_stage.run(StageContext(cfg, Path(folder), out, Console(quiet=True)))
            except TrainerError as exc:
                assert str(path) in str(exc), str(exc)
                outcomes["rejected: file named"] += 1
                return
            train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
            evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
            assert (len(train), len(evals)) == (summary["train"], summary["eval"]) and train and evals
            train_texts = {json.dumps(r["messages"]) for r in train}
            assert not train_texts & {json.dumps(r["messages"]) for r in evals}
            for row in train + evals:
                assert_valid(Conversation(row["where"], row["messages"]), DataFormat.auto, [path])
            calibration = [json.loads(line) for line in (out / "calibration.jsonl").read_text().splitlines()]
            assert 0 < len(calibration) <= 4
            outcomes["accepted"] += 1

    prop()
    assert outcomes["accepted"], outcomes
    record_counts(
        "data: generated files (hypothesis)",
        "whole data stage on generated jsonl rows with duplicates, every problem dropped",
        "train/eval/calibration written with no eval row in train, or TrainerError naming the file",
        outcomes,
    )


# ------------------------------------------------------------------ bounded memory

CHILD = r"""
import json, sys
from pathlib import Path
from rich.console import Console
from trainer.config import DataConfig, DataFormat, ModelConfig, TrainerConfig
from trainer.conversations import load_conversations
from trainer.pipeline import StageContext
from trainer.stages import data

mode, path = sys.argv[1], sys.argv[2]
if mode == "stage":
    from trainer.modeling import load_tokenizer
    cfg = TrainerConfig(model=ModelConfig(name_or_path=sys.argv[3]), data=DataConfig(path=path, max_length=512))
    load_tokenizer(cfg.model)  # imports transformers before the baseline
def status_mib(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
base = status_mib("VmRSS")
if mode == "validate":
    rows = data.validate_sources(DataConfig(path=path))[0]["train"]
elif mode == "load":
    rows = len(load_conversations(path, DataFormat.auto, "train")[0])
else:
    out = Path(sys.argv[4])
    rows = sum(data.run(StageContext(cfg, out, out, Console(quiet=True)))[k] for k in ("train", "eval"))
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork and exec, so it starts at the size of
# the pytest process that spawned this one; the address space's high-water mark starts afresh.
peak = status_mib("VmHWM")
print(json.dumps({"rows": rows, "growth_mib": peak - base}))
"""

FILLER = "Merci pour votre message, nous regardons votre dossier et revenons vers vous rapidement. " * 4


def write_big_jsonl(path: Path, megabytes: int) -> int:
    """Distinct support conversations of about 500 bytes each, up to the size asked."""
    rows = 0
    with open(path, "w", encoding="utf-8") as handle:
        while handle.tell() < megabytes * 1_000_000:
            lines = []
            for i in range(rows, rows + 10_000):
                question = {
                    "role": "user",
                    "content": f"Question {i} : où est ma commande {i * 7919 % 100003} ?",
                }
                answer = {"role": "assistant", "content": f"Réponse {i}. {FILLER}"}
                lines.append(json.dumps({"messages": [question, answer]}, ensure_ascii=False) + "\n")
            handle.write("".join(lines))
            rows += 10_000
    return rows


def measure(*args: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


VALIDATE_MB, VALIDATE_BOUND_MIB = 250, 64
STAGE_MB, STAGE_BOUND_MIB = 12, 160


@pytest.mark.reliability
def test_validation_streams_a_large_jsonl_in_bounded_memory(tmp_path: Path) -> None:
    # Measured here (2 cores, Python 3.11): 250 MB, 500k rows: validation grows RSS by ~0 MiB;
    # loading the rows into a list (what the stage did before) grows it by ~590 MiB.
    path = tmp_path / "big.jsonl"
    rows = write_big_jsonl(path, VALIDATE_MB)
    streamed = measure("validate", str(path))
    assert streamed["rows"] == rows
    assert streamed["growth_mib"] < VALIDATE_BOUND_MIB, streamed
    loaded = measure("load", str(path))  # the bound is one that holding the rows breaks
    assert loaded["rows"] == rows
    assert loaded["growth_mib"] > 4 * VALIDATE_BOUND_MIB, loaded
    record(
        "data: bounded memory",
        f"{VALIDATE_MB} MB jsonl ({rows} rows): validation pass, peak RSS growth in a fresh process",
        f"< {VALIDATE_BOUND_MIB} MiB (holding the parsed rows: > {4 * VALIDATE_BOUND_MIB} MiB)",
        "within bound; holding the rows exceeds it",
    )


@pytest.mark.reliability
def test_whole_stage_keeps_an_index_not_the_rows(tmp_path: Path) -> None:
    # Measured here: 12 MB, 24k rows: the stage grows RSS by ~55 MiB (30 MB: ~60, 90 MB: ~80; Python
    # objects peak at ~5 MiB, the rest is the tokenizer's native memory). The implementation that
    # held rows, texts and token ids grew by ~530 MiB on the same 12 MB (~1,260 MiB on 30 MB).
    path = tmp_path / "mid.jsonl"
    rows = write_big_jsonl(path, STAGE_MB)
    out = tmp_path / "out"
    out.mkdir()
    measured = measure("stage", str(path), str(ASSETS / "tiny-base"), str(out))
    assert measured["rows"] == rows
    assert measured["growth_mib"] < STAGE_BOUND_MIB, measured
    written = 0
    for name in ("train.jsonl", "eval.jsonl"):
        with open(out / name, encoding="utf-8") as handle:
            written += sum(1 for _ in handle)
    assert written == rows
    record(
        "data: bounded memory",
        f"{STAGE_MB} MB jsonl ({rows} rows): whole data stage (validate, tokenize, split, calibrate, write)",
        f"peak RSS growth < {STAGE_BOUND_MIB} MiB (the stage that held the rows: ~530 MiB)",
        "within bound",
    )
