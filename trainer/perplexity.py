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
from typing import TYPE_CHECKING, Any

from trainer.masking import encode_with_mask

if TYPE_CHECKING:
    from trainer.evaluation.fidelity import Fidelity


@dataclass(frozen=True)
class EvalTokens:
    sequences: list[list[int]]
    masks: list[list[int]]

    @property
    def scored_tokens(self) -> int:
        """Tokens whose prediction counts: masked-in positions after the first of each sequence."""
        return sum(sum(mask[1:]) for mask in self.masks)

    def scored_per_sequence(self) -> list[int]:
        return [sum(mask[1:]) for mask in self.masks]


def eval_tokens(eval_jsonl: Path, tokenizer: Any) -> EvalTokens:
    rows = [json.loads(line) for line in eval_jsonl.read_text(encoding="utf-8").splitlines()]
    encoded = [encode_with_mask(tokenizer, row["messages"]) for row in rows]
    return EvalTokens([e.input_ids for e in encoded], [e.assistant_masks for e in encoded])


def text_tokens(texts: list[str], tokenizer: Any, max_tokens: int, max_length: int = 512) -> EvalTokens:
    """Plain texts (``<s>`` + text, cut at ``max_length``), every token scored, until ``max_tokens``:
    the token set of the broad-drift perplexity (generic text outside the fine-tune's domain)."""
    sequences: list[list[int]] = []
    budget = max_tokens
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"][:max_length]
        if len(ids) < 2:
            continue
        sequences.append(ids[: budget + 1])
        budget -= len(sequences[-1]) - 1
        if budget <= 0:
            break
    return EvalTokens(sequences, [[1] * len(ids) for ids in sequences])


@dataclass(frozen=True)
class Score:
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)


def score_transformers(
    model: Any, tokens: EvalTokens, batch_size: int = 8, fidelity: Fidelity | None = None
) -> Score:
    """Teacher-forced NLL of the assistant tokens with a transformers causal LM; `fidelity`, when
    given, receives the log-softmax rows of each sequence's scored positions."""
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
            if fidelity is not None:
                scored = shifted != -100
                for row, i in enumerate(batch):
                    rows = logits[row, :-1][scored[row]].log_softmax(-1)
                    fidelity.add(i, rows.cpu().double().numpy())
    if count != tokens.scored_tokens:
        raise AssertionError(f"scored {count} tokens, expected {tokens.scored_tokens}")
    return Score(total / count, count)
