"""The one held-out metric: perplexity on the assistant tokens of the eval split.

Every model of a run (base, merged, each artifact) is scored over the same token set: the
eval conversations rendered with the training chat template, masked to the assistant's
tokens. `EvalTokens` carries that set and its count so each runtime can assert it scored
exactly those tokens.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.masking import encode_with_mask


@dataclass(frozen=True)
class EvalTokens:
    sequences: list[list[int]]
    masks: list[list[int]]

    @property
    def scored_tokens(self) -> int:
        """Tokens whose prediction counts: masked-in positions after the first of each sequence."""
        return sum(sum(mask[1:]) for mask in self.masks)


def eval_tokens(eval_jsonl: Path, tokenizer: Any) -> EvalTokens:
    rows = [json.loads(line) for line in eval_jsonl.read_text(encoding="utf-8").splitlines()]
    encoded = [encode_with_mask(tokenizer, row["messages"]) for row in rows]
    return EvalTokens([e.input_ids for e in encoded], [e.assistant_masks for e in encoded])


@dataclass(frozen=True)
class Score:
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)


def score_transformers(model: Any, tokens: EvalTokens, batch_size: int = 8) -> Score:
    """Teacher-forced NLL of the assistant tokens with a transformers causal LM."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    order = sorted(range(len(tokens.sequences)), key=lambda i: len(tokens.sequences[i]))
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(tokens.sequences[i]) for i in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, i in enumerate(batch):
                seq = torch.tensor(tokens.sequences[i])
                mask = torch.tensor(tokens.masks[i], dtype=torch.bool)
                ids[row, : len(seq)] = seq
                attention[row, : len(seq)] = 1
                labels[row, : len(seq)] = torch.where(mask, seq, torch.tensor(-100))
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
            shifted = labels[:, 1:].to(device)
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                shifted.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(losses)
            count += int((shifted != -100).sum())
    if count != tokens.scored_tokens:
        raise AssertionError(f"scored {count} tokens, expected {tokens.scored_tokens}")
    return Score(total / count, count)
