"""The data stage: validated train/eval splits and a calibration set drawn from train only.

Outputs `train.jsonl`, `eval.jsonl`, `calibration.jsonl` and `stats.json`. Calibration rows
carry the exact `input_ids` every quantizer must feed on, rendered with the same chat
template as training, so GPTQ, AWQ and the GGUF importance matrix all see the same tokens.

Memory stays bounded by the number of rows, not their size: the dataset is streamed three
times instead of held. Pass 1 validates every row before any tokenizer loads (bad rows fail
fast); pass 2 renders and counts the tokens of each valid row and keeps only an `Index` of
it (a token count and two 16-byte hashes, 40 bytes a row); the split, the train/eval
de-duplication and the calibration draw are decided on that index; pass 3 writes the rows
where they belong and renders the few calibration samples. Reading is deterministic, so the
n-th valid row is the same row in every pass (a file changed between passes is an error).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import statistics
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from rich.progress import track

from trainer.config import CalibrationConfig, CalibrationSource, DataConfig, Policy
from trainer.conversations import Conversation, Problem, fold_system, iter_conversations
from trainer.errors import DataValidationError, TrainerError
from trainer.modeling import load_tokenizer
from trainer.pipeline import StageContext

log = logging.getLogger(__name__)

KEY_BYTES = 16  # hash prefix kept per row: collisions are negligible below 2**64 rows
KEY_DTYPE = f"S{KEY_BYTES}"  # numpy compares these byte strings in byte order
TOKENIZE_BATCH = 256


def render(tokenizer: Any, conversations: list[Conversation]) -> list[str]:
    """Each conversation through the chat template; one the template refuses names its row and the fix."""
    from jinja2 import TemplateError

    texts = []
    for conversation in conversations:
        try:
            texts.append(tokenizer.apply_chat_template(conversation.messages, tokenize=False))
        except TemplateError as exc:
            fix = (
                "set data.fold_system=true to put the system message in front of the first user message, "
                "or drop the system messages"
                if any(m["role"] == "system" for m in conversation.messages)
                else "set model.chat_template to a template that renders it"
            )
            raise DataValidationError(
                f"{conversation.where}: the model's chat template refuses this conversation ({exc}); {fix}"
            ) from exc
    return texts


def text_key(text: str) -> bytes:
    """What identifies a rendered text: equal texts, equal keys (dedupe and overlap use it)."""
    return hashlib.sha256(text.encode("utf-8")).digest()[:KEY_BYTES]


def split_key(messages: list[dict[str, str]], seed: int) -> bytes:
    """A seeded hash of the content: the split depends on what a row says, not where it sits."""
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(f"{seed}\0{blob}".encode()).digest()[:KEY_BYTES]


def same_key(key: bytes, stored: bytes) -> bool:
    """Whether a fresh key equals one read back from a KEY_DTYPE array (numpy drops its trailing NULs)."""
    return key.rstrip(b"\0") == stored


# ---------------------------------------------------------------- problems


class ProblemLog:
    """Problems counted by kind, keeping only the few an error message shows (bounded memory)."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.counts: Counter[str] = Counter()
        self.fatal: Counter[str] = Counter()
        self.shown: list[Problem] = []

    def add(self, problem: Problem) -> None:
        self.counts[problem.kind] += 1
        if self.cfg.on_problem.get(problem.kind, Policy.error) is Policy.error:
            self.fatal[problem.kind] += 1
            if len(self.shown) < self.cfg.max_reported_problems:
                self.shown.append(problem)


def enforce(problems: ProblemLog, cfg: DataConfig, report_drops: bool = True) -> Counter[str]:
    """Raise on the problems whose policy is `error` (listing the first ones); count the dropped ones."""
    if problems.fatal:
        total = sum(problems.fatal.values())
        shown = "\n".join(f"  {p}" for p in problems.shown)
        more = total - len(problems.shown)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        counts = ", ".join(f"{k}={n}" for k, n in sorted(problems.fatal.items()))
        fixes = ", ".join(f"data.on_problem.{k}=drop" for k in sorted(problems.fatal))
        raise DataValidationError(
            f"{total} invalid row(s) in the dataset ({counts}):\n{shown}{tail}\n"
            f"Fix these rows, or drop such rows and count them with {fixes}"
        )
    if report_drops:
        for kind, n in sorted(problems.counts.items()):
            log.warning("dropped %d row(s) with problem %s (data.on_problem.%s=drop)", n, kind, kind)
    return Counter(problems.counts)


# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """One dataset input (`data.path` or `data.eval_path`), read as often as the stage needs."""

    key: str
    path: str
    cfg: DataConfig

    def read(self) -> Iterator[Conversation | Problem]:
        """The source's rows in order; a file that cannot be read is a TrainerError naming it."""
        items = iter_conversations(self.path, self.cfg.format, self.cfg.hub_split)
        while True:
            try:
                item = next(items)
            except StopIteration:
                return
            except TrainerError:
                raise
            except (OSError, ValueError) as exc:  # missing, unreadable, unsupported: the message names it
                raise TrainerError(f"{self.key}: {exc}") from exc
            if isinstance(item, Conversation) and self.cfg.fold_system:
                item = Conversation(item.where, fold_system(item.messages))
            yield item

    def conversations(self, expected: int) -> Iterator[Conversation]:
        """The valid rows again (after pass 1 counted `expected` of them); a changed file is an error."""
        n = 0
        for item in self.read():
            if isinstance(item, Conversation):
                n += 1
                if n > expected:
                    break
                yield item
        if n != expected:
            raise self.changed()

    def changed(self) -> TrainerError:
        return TrainerError(f"{self.key}: {self.path} changed while the data stage was reading it; run again")


def sources(cfg: DataConfig) -> dict[str, Source]:
    found = {"train": Source("data.path", cfg.path, cfg)}
    if cfg.eval_path:
        found["eval"] = Source("data.eval_path", cfg.eval_path, cfg)
    return found


def validate_sources(cfg: DataConfig) -> tuple[dict[str, int], ProblemLog]:
    """Pass 1, before any tokenizer loads: every row checked, fatal problems raised, rows counted.

    Returns the number of valid rows per source and the problems (all dropped by policy).
    Streams: memory does not grow with the dataset.
    """
    problems = ProblemLog(cfg)
    read: dict[str, int] = {}
    for label, source in sources(cfg).items():
        read[label] = 0
        for item in source.read():
            if isinstance(item, Problem):
                problems.add(item)
            else:
                read[label] += 1
    enforce(problems, cfg, report_drops=False)
    for label, source in sources(cfg).items():
        if not read[label]:
            dropped = ", ".join(f"{k}={n}" for k, n in sorted(problems.counts.items())) or "none"
            raise DataValidationError(
                f"{source.key}: {source.path} holds no usable row (rows dropped by data.on_problem: {dropped})"
            )
    return read, problems


# ---------------------------------------------------------------- the index


@dataclass
class Index:
    """Per valid row of a source, in reading order: what the split, dedupe and calibration need."""

    tokens: np.ndarray  # int64, rendered with the chat template
    split_keys: np.ndarray  # KEY_DTYPE, see split_key
    text_keys: np.ndarray  # KEY_DTYPE, see text_key

    def __len__(self) -> int:
        return len(self.tokens)


def build_index(
    tokenizer: Any, source: Source, expected: int, cfg: DataConfig, problems: ProblemLog, label: str
) -> Index:
    """Pass 2: render and count every valid row, keeping 40 bytes of it; long rows become problems."""
    tokens = array("q")
    split_keys = bytearray()
    text_keys = bytearray()
    batch: list[Conversation] = []

    def flush() -> None:
        texts = render(tokenizer, batch)
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        for conversation, text, ids in zip(batch, texts, encoded, strict=True):
            if len(ids) > cfg.max_length:
                problems.add(
                    Problem(
                        "too_long",
                        conversation.where,
                        "",
                        f"{len(ids)} tokens > data.max_length={cfg.max_length}",
                    )
                )
            tokens.append(len(ids))
            split_keys.extend(split_key(conversation.messages, cfg.split_seed))
            text_keys.extend(text_key(text))
        batch.clear()

    rows = source.conversations(expected)
    for conversation in track(rows, total=expected, description=f"tokenizing {label}", transient=True):
        batch.append(conversation)
        if len(batch) == TOKENIZE_BATCH:
            flush()
    if batch:
        flush()
    return Index(
        np.frombuffer(tokens, dtype=np.int64),
        np.frombuffer(bytes(split_keys), dtype=KEY_DTYPE),
        np.frombuffer(bytes(text_keys), dtype=KEY_DTYPE),
    )


def first_ranked(index: Index, kept: np.ndarray, n: int) -> np.ndarray:
    """A mask of the `n` kept rows whose seeded content hash ranks first (independent of row order)."""
    candidates = np.flatnonzero(kept)
    ranked = candidates[np.argsort(index.split_keys[candidates], kind="stable")]
    mask = np.zeros(len(index), dtype=bool)
    mask[ranked[:n]] = True
    return mask


def split_mask(index: Index, kept: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """Which rows are eval when there is no eval file: a seeded `eval_size` or `eval_fraction` of them."""
    n = int(kept.sum())
    n_eval = cfg.eval_size if cfg.eval_size is not None else max(1, round(cfg.eval_fraction * n))
    if n_eval >= n:
        raise DataValidationError(
            f"data.eval_size/eval_fraction: {n_eval} eval rows out of {n} usable in {cfg.path} leaves nothing "
            "to train on; lower it or give data.eval_path"
        )
    return first_ranked(index, kept, n_eval)


# ---------------------------------------------------------------- calibration


def train_wanted(calib: CalibrationConfig) -> int:
    """How many calibration samples come from train (the rest are generic text)."""
    n_generic = {
        CalibrationSource.train: 0,
        CalibrationSource.generic: calib.samples,
        CalibrationSource.mixed: round(calib.samples * calib.generic_fraction),
    }[calib.source]
    return calib.samples - n_generic


def pick_train(text_keys: np.ndarray, tokens: np.ndarray, calib: CalibrationConfig) -> list[int]:
    """Positions of the train samples to calibrate on, in draw order, from their hashes and lengths.

    Distinct texts, in a seeded shuffle of their hash order (so neither the input's order nor
    its duplicates matter), taken while they fit the token budget.
    """
    wanted = train_wanted(calib)
    if not wanted or not len(text_keys):
        return []
    _, first = np.unique(text_keys, return_index=True)
    order = first[np.random.default_rng(calib.seed % 2**64).permutation(len(first))]  # any int seed
    picked: list[int] = []
    budget = calib.max_tokens
    for position in order.tolist():
        if len(picked) == wanted or budget <= 0:
            break
        n = int(tokens[position])
        if n > budget:
            continue
        picked.append(position)
        budget -= n
    return picked


def _generic_pool(tokenizer: Any, calib: CalibrationConfig) -> list[list[int]]:
    from trainer.generic_corpus import heldout_pydoc_texts

    pool = []
    for text in heldout_pydoc_texts():
        ids = tokenizer(text, add_special_tokens=True)["input_ids"][: calib.max_sample_tokens]
        pool.append(ids)
    return pool


def assemble_calibration(
    tokenizer: Any, train_texts: list[str], eval_keys: np.ndarray, calib: CalibrationConfig
) -> list[dict[str, Any]]:
    """Calibration rows from the picked train texts (in draw order), topped up with generic text."""
    rng = random.Random(calib.seed)
    wanted = train_wanted(calib)
    n_generic = calib.samples - wanted
    pools: list[tuple[str, list[list[int]], int]] = []
    if wanted:
        encoded = tokenizer(train_texts, add_special_tokens=False)["input_ids"] if train_texts else []
        pools.append(("train", encoded, wanted))
    if n_generic:
        generic = _generic_pool(tokenizer, calib)
        rng.shuffle(generic)
        pools.append(("generic", generic, n_generic))
    rows: list[dict[str, Any]] = []
    budget = calib.max_tokens
    seen: set[tuple[int, ...]] = set()
    for source, pool, wanted_here in pools:
        taken = 0
        for ids in pool:
            if taken == wanted_here or budget <= 0:
                break
            key = tuple(ids)
            if key in seen or len(ids) > budget:
                continue
            seen.add(key)
            text = tokenizer.decode(ids, skip_special_tokens=False)
            rows.append(
                {"id": len(rows), "source": source, "tokens": len(ids), "text": text, "input_ids": ids}
            )
            budget -= len(ids)
            taken += 1
    if not rows:
        raise TrainerError(
            "data.calibration: no calibration sample fits; raise data.calibration.max_tokens "
            f"({calib.max_tokens}) or check that the {calib.source.value} source is not empty"
        )
    keys = np.array([text_key(row["text"]) for row in rows], dtype=KEY_DTYPE)
    if np.isin(keys, eval_keys).any():
        raise AssertionError("a calibration sample equals an eval conversation")
    return rows


def draw_calibration(
    tokenizer: Any, train_texts: list[str], eval_texts: set[str], calib: CalibrationConfig
) -> list[dict[str, Any]]:
    """The data stage's calibration draw over texts in memory (for scripts): same picks, same rows."""
    candidates = [t for t in train_texts if t not in eval_texts]
    keys = np.array([text_key(t) for t in candidates], dtype=KEY_DTYPE)
    encoded = tokenizer(candidates, add_special_tokens=False)["input_ids"] if candidates else []
    tokens = np.array([len(ids) for ids in encoded], dtype=np.int64)
    picked = pick_train(keys, tokens, calib)
    eval_keys = np.array([text_key(t) for t in eval_texts], dtype=KEY_DTYPE)
    return assemble_calibration(tokenizer, [candidates[i] for i in picked], eval_keys, calib)


# ---------------------------------------------------------------- writing


class JsonlWriter:
    """Rows appended one at a time to a .jsonl file, hashed as written."""

    def __init__(self, path: Path) -> None:
        self.digest = hashlib.sha256()
        self.handle: IO[str] = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        self.digest.update(line.encode("utf-8"))
        self.handle.write(line)

    def close(self) -> str:
        self.handle.close()
        return self.digest.hexdigest()


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> str:
    writer = JsonlWriter(path)
    try:
        for row in rows:
            writer.write(row)
    finally:
        digest = writer.close()
    return digest


def _length_stats(counts: np.ndarray) -> dict[str, float]:
    if not len(counts):
        return {"tokens": 0}
    values = counts.tolist()
    return {
        "tokens": sum(values),
        "min": min(values),
        "mean": round(statistics.fmean(values), 1),
        "max": max(values),
    }


def _write_rows(
    source: Source,
    index: Index,
    expected: int,
    cfg: DataConfig,
    destination: dict[str, JsonlWriter],
    where_to: np.ndarray,
    picks: dict[int, int],
    tokenizer: Any,
) -> dict[int, str]:
    """Pass 3 over one source: each row to the writer `where_to` names; the picked rows rendered."""
    names = list(destination)
    rendered: dict[int, str] = {}
    for position, conversation in enumerate(source.conversations(expected)):
        if not same_key(split_key(conversation.messages, cfg.split_seed), index.split_keys[position]):
            raise source.changed()
        target = int(where_to[position])
        if target >= 0:
            destination[names[target]].write({"messages": conversation.messages, "where": conversation.where})
        if position in picks:
            rendered[picks[position]] = tokenizer.apply_chat_template(conversation.messages, tokenize=False)
    return rendered


# ---------------------------------------------------------------- the stage

TRAIN, EVAL, NOWHERE = 0, 1, -1


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg.data
    inputs = sources(cfg)
    read, problems = validate_sources(cfg)  # fail fast, before tokenizing

    tokenizer = load_tokenizer(ctx.cfg.model)
    train = build_index(tokenizer, inputs["train"], read["train"], cfg, problems, "rows")
    evals = (
        build_index(tokenizer, inputs["eval"], read["eval"], cfg, problems, "eval rows")
        if cfg.eval_path
        else None
    )
    dropped = enforce(problems, cfg)

    train_kept = train.tokens <= cfg.max_length
    if evals is None:
        is_eval = split_mask(train, train_kept, cfg)
        eval_index, eval_rows = train, is_eval
    else:
        is_eval = np.zeros(len(train), dtype=bool)
        eval_index, eval_rows = evals, evals.tokens <= cfg.max_length
        if cfg.eval_size is not None:
            eval_rows = first_ranked(evals, eval_rows, cfg.eval_size)
    eval_keys = np.unique(eval_index.text_keys[eval_rows])
    in_train = train_kept & ~is_eval
    overlap = in_train & np.isin(train.text_keys, eval_keys)
    if overlap.any():
        log.warning("dropped %d train conversation(s) identical to eval ones", int(overlap.sum()))
    in_train &= ~overlap
    n_train, n_eval = int(in_train.sum()), int(eval_rows.sum())
    if not n_train or not n_eval:
        where = cfg.path if evals is None or not n_train else cfg.eval_path
        raise DataValidationError(
            f"data: {n_train} train and {n_eval} eval conversations remain in {where}; need both"
        )

    train_positions = np.flatnonzero(in_train)
    picked = pick_train(train.text_keys[train_positions], train.tokens[train_positions], cfg.calibration)
    picks = {int(train_positions[p]): order for order, p in enumerate(picked)}

    out = ctx.out_dir
    writers = {"train": JsonlWriter(out / "train.jsonl"), "eval": JsonlWriter(out / "eval.jsonl")}
    try:
        where_to = np.where(in_train, TRAIN, np.where(is_eval, EVAL, NOWHERE))
        rendered = _write_rows(
            inputs["train"], train, read["train"], cfg, writers, where_to, picks, tokenizer
        )
        if evals is not None:
            where_to = np.where(eval_rows, EVAL, NOWHERE)
            _write_rows(inputs["eval"], evals, read["eval"], cfg, writers, where_to, {}, tokenizer)
    finally:
        for writer in writers.values():
            writer.close()
    calibration = assemble_calibration(
        tokenizer, [rendered[i] for i in range(len(picked))], eval_keys, cfg.calibration
    )
    calibration_sha = write_jsonl(out / "calibration.jsonl", calibration)
    calib_tokens = sum(r["tokens"] for r in calibration)
    stats = {
        "path": cfg.path,
        "eval_path": cfg.eval_path,
        "rows_read": read if evals is not None else {**read, "eval": 0},
        "dropped": dict(sorted(dropped.items())),
        "train_eval_overlap_dropped": int(overlap.sum()),
        "train": {"conversations": n_train, **_length_stats(train.tokens[in_train])},
        "eval": {"conversations": n_eval, **_length_stats(eval_index.tokens[eval_rows])},
        "chat_template_sha256": hashlib.sha256(tokenizer.chat_template.encode()).hexdigest(),
        "calibration": {
            "source": cfg.calibration.source.value,
            "samples": len(calibration),
            "tokens": calib_tokens,
            "by_source": dict(Counter(r["source"] for r in calibration)),
            "sha256": calibration_sha,
            "path": "data/calibration.jsonl",
            "seed": cfg.calibration.seed,
        },
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info(
        "data: %d train / %d eval conversations, %d calibration samples (%d tokens, %s)",
        n_train,
        n_eval,
        len(calibration),
        calib_tokens,
        cfg.calibration.source.value,
    )
    return {
        "train": n_train,
        "eval": n_eval,
        "calibration": len(calibration),
        "calibration_tokens": calib_tokens,
        "dropped": sum(dropped.values()),
    }
