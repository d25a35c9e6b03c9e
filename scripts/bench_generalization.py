"""Fit against generalisation: does a support-fr fine-tune act on phrasings it never saw?

The task score mixes two abilities: reproducing what training showed, and carrying it to new
customer phrasings (the eval split's openings are phrasings the train split never uses). This
separates them. For each model: greedy first replies to the openings of train conversations and
of eval conversations (system prompt and first customer message), and the share whose reply
names the intent the conversation is about (`make_support_tasks.ACTIONS`, the regex of the task
set's action check, matched against the acknowledgement or the answer). Only conversations whose
reference first reply passes that regex are asked. Beside them, what plain word overlap gets: each
eval opening takes the intent of the train opening sharing the largest share of its words
(Jaccard, 1-nearest neighbour).

    python scripts/bench_generalization.py --model 1.7=runs/support-fr/merge/model \
        --model 3=runs/epochs3/merge/model --out docs/benchmarks/generalization.json
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import bench_util as bu
from make_support_tasks import ACTIONS

from trainer.runtimes import first_turn, generate, load

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "trainer" / "assets" / "support-fr"
WORD = re.compile(r"[^\W\d_]{3,}")


def checkable(rows: list[dict[str, Any]], actions: dict[str, str], count: int) -> list[dict[str, Any]]:
    """The first `count` rows whose reference first reply names their intent."""
    picked = []
    for row in rows:
        reply = row["messages"][len(first_turn(row["messages"]))]["content"]
        if re.search(actions[row["intent"]], reply, re.I):
            picked.append(row)
    return picked[:count]


def words(text: str) -> frozenset[str]:
    return frozenset(WORD.findall(text.lower()))


def word_bank(train: list[dict[str, Any]]) -> list[tuple[frozenset[str], str]]:
    """Each train conversation's first customer message as a set of words, with its intent."""
    return [(words(first_turn(row["messages"])[-1]["content"]), row["intent"]) for row in train]


def nearest_intent(bank: list[tuple[frozenset[str], str]], text: str) -> str:
    """The intent of the train opening whose words overlap `text`'s the most (Jaccard)."""
    query = words(text)
    return max(bank, key=lambda entry: len(query & entry[0]) / (len(query | entry[0]) or 1))[1]


def names_intent(replies: list[str], rows: list[dict[str, Any]], actions: dict[str, str]) -> list[bool]:
    """Whether each reply names its conversation's intent, as the task set's action check reads it."""
    return [
        bool(re.search(actions[r["intent"]], reply, re.I)) for reply, r in zip(replies, rows, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", action="append", required=True, help="LABEL=DIR of a transformers model (repeatable)"
    )
    parser.add_argument("--asset", type=Path, default=ASSET, help="a folder with train.jsonl and eval.jsonl")
    parser.add_argument("--rows", type=int, default=160, help="conversations asked per split")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/generalization.json"))
    args = parser.parse_args()
    models = dict(spec.split("=", 1) if "=" in spec else (spec, spec) for spec in args.model)
    missing = [d for d in models.values() if not (Path(d) / "config.json").is_file()]
    if missing:
        parser.error(f"--model: no config.json in {', '.join(missing)}")

    from transformers import AutoTokenizer

    splits = {
        split: [json.loads(line) for line in (args.asset / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "eval")
    }
    asked = {split: checkable(rows, ACTIONS, args.rows) for split, rows in splits.items()}
    bu.log("conversations asked: " + ", ".join(f"{s} {len(r)}" for s, r in asked.items()))
    bank = word_bank(splits["train"])
    guessed = [nearest_intent(bank, first_turn(r["messages"])[-1]["content"]) for r in asked["eval"]]
    word_overlap = sum(g == r["intent"] for g, r in zip(guessed, asked["eval"], strict=True)) / len(
        asked["eval"]
    )
    results = []
    for label, folder in models.items():
        model = load("transformers", Path(folder))
        tokenizer = AutoTokenizer.from_pretrained(folder)
        row: dict[str, Any] = {"model": label, "dir": folder}
        for split, rows in asked.items():
            replies = [
                g["reply"]
                for g in generate(
                    model, tokenizer, [first_turn(r["messages"]) for r in rows], args.max_new_tokens
                )
            ]
            named = names_intent(replies, rows, ACTIONS)
            row[split] = sum(named) / len(rows)
            missed = Counter(r["intent"] for r, hit in zip(rows, named, strict=True) if not hit)
            row[f"{split}_missed_by_intent"] = dict(missed.most_common())
        bu.log(
            f"{label}: names the intent on train openings {row['train']:.0%}, on held-out ones {row['eval']:.0%}"
        )
        results.append(row)
    bu.log(f"word overlap (1-nearest train opening) on held-out openings: {word_overlap:.0%}")
    payload = {
        **bu.provenance("bench_generalization.py"),
        "asked": {split: len(rows) for split, rows in asked.items()},
        "word_overlap_eval": word_overlap,
        "results": results,
    }
    bu.write_json(args.out, payload)


if __name__ == "__main__":
    main()
