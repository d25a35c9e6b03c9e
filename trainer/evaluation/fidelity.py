"""Fidelity to the trained model: how far a model's next-token distributions are from merged BF16's.

Perplexity only looks at the probability of the one token that came next; two models with the same
perplexity can disagree everywhere else. The figures llama.cpp's perplexity tool reports when it
compares quantizations look at the whole distribution, on the same tokens: the mean KL divergence
KL(merged || model) per position, its 99th percentile, and top-1 agreement (the share of positions
where both models rank the same token first).

Memory stays bounded whatever the vocabulary: the reference (merged) keeps, per scored position,
only its ``k`` most likely tokens and their log-probabilities (``k`` x 8 bytes, not a vocabulary-wide
row). The KL divergence is then computed between the two distributions coarsened onto ``k + 1``
outcomes: each of the reference's top-k tokens, and "any other token" carrying the remaining mass
of each distribution. By the log-sum inequality this never exceeds the exact KL divergence, and it
equals it when the reference puts no mass outside its top-k; :func:`exact_kld` is there to measure
the gap (``tests/test_fidelity.py``, ``scripts/bench_fidelity.py``). Rankings are kept: on the
default run every artifact's figure is low by about the same share.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Reference tokens kept per position (1 KiB per position). On the default run's model, whose top 128
# tokens hold 97% of the mass, the mean KL divergence comes out 5% under the exact figure (14% with
# 32 tokens, 31% with 8; docs/BENCHMARKS.md, fidelity); a sharper model loses less.
TOP_K = 128
# A probability floor for the "any other token" bin of the scored model (its mass there can round to 0).
_FLOOR = 1e-12


@dataclass(frozen=True)
class TopK:
    """The reference's ``k`` most likely token ids and their log-probabilities, per scored position."""

    ids: np.ndarray  # int32 [positions, k], most likely first
    logprobs: np.ndarray  # float32 [positions, k]

    def save(self, path: Path) -> None:
        with open(path, "wb") as handle:  # np.savez would append .npz to a name without it
            np.savez(handle, ids=self.ids, logprobs=self.logprobs)

    @classmethod
    def load(cls, path: Path) -> TopK:
        with np.load(path) as data:
            return cls(ids=data["ids"], logprobs=data["logprobs"])


def top_k(logprobs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, log-probs) of the ``k`` largest entries of each row, largest first."""
    k = min(k, logprobs.shape[1])
    part = np.argpartition(-logprobs, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(logprobs, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int32), np.take_along_axis(values, order, axis=1)


def coarse_kld(reference: TopK, logprobs: np.ndarray) -> np.ndarray:
    """KL(reference || model) per position over the reference's top-k tokens plus one "other" bin.

    ``logprobs``: the model's full log-softmax rows at the same positions, float [positions, vocab].
    """
    ref_lp = reference.logprobs.astype(np.float64)
    ref_p = np.exp(ref_lp)
    model_lp = np.take_along_axis(logprobs, reference.ids.astype(np.int64), axis=1).astype(np.float64)
    ref_rest = np.clip(1.0 - ref_p.sum(axis=1), 0.0, 1.0)
    model_rest = np.clip(1.0 - np.exp(model_lp).sum(axis=1), _FLOOR, 1.0)
    head = (ref_p * (ref_lp - model_lp)).sum(axis=1)
    tail = np.where(ref_rest > 0, ref_rest * (np.log(np.maximum(ref_rest, _FLOOR)) - np.log(model_rest)), 0.0)
    return np.maximum(head + tail, 0.0)


def exact_kld(reference_logprobs: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
    """KL(reference || model) per position from both full log-softmax rows (for measuring the approximation)."""
    ref = reference_logprobs.astype(np.float64)
    return (np.exp(ref) * (ref - logprobs.astype(np.float64))).sum(axis=1)


class Fidelity:
    """Collects, sequence by sequence, a model's top-k to serve as the reference (without one) or its
    KL divergence and top-1 agreement against the reference (given one).

    Runtimes score sequences in their own order (transformers sorts them by length); positions are
    laid out by sequence index, so every runtime's figures line up with the reference's.
    """

    def __init__(self, scored_per_sequence: list[int], reference: TopK | None = None, k: int = TOP_K) -> None:
        self.starts = np.concatenate([[0], np.cumsum(scored_per_sequence)]).astype(np.int64)
        positions = int(self.starts[-1])
        if reference is not None and len(reference.ids) != positions:
            raise ValueError(
                f"the reference has {len(reference.ids)} positions, this token set {positions}: "
                "it was written for other eval tokens"
            )
        self.reference = reference
        self.k = k
        writer_rows = positions if reference is None else 0
        self.ids = np.zeros((writer_rows, k), dtype=np.int32)
        self.logprobs = np.zeros((writer_rows, k), dtype=np.float32)
        self.kld = np.full(positions if reference is not None else 0, np.nan)
        self.agree = np.zeros(positions if reference is not None else 0, dtype=bool)
        self._seen = np.zeros(len(scored_per_sequence), dtype=bool)

    def add(self, sequence: int, logprobs: np.ndarray) -> None:
        """Record the log-softmax rows [scored positions of `sequence`, vocab] of one sequence."""
        span = slice(int(self.starts[sequence]), int(self.starts[sequence + 1]))
        if logprobs.shape[0] != span.stop - span.start:
            raise ValueError(
                f"sequence {sequence}: {logprobs.shape[0]} rows, expected {span.stop - span.start}"
            )
        if self.reference is None:
            ids, values = top_k(logprobs, self.k)
            self.ids[span, : ids.shape[1]], self.logprobs[span, : ids.shape[1]] = ids, values
        else:
            ref = TopK(self.reference.ids[span], self.reference.logprobs[span])
            self.kld[span] = coarse_kld(ref, logprobs)
            self.agree[span] = logprobs.argmax(axis=1) == ref.ids[:, 0]
        self._seen[sequence] = True

    def top(self) -> TopK:
        if self.reference is not None:
            raise ValueError("a Fidelity measured against a reference keeps no top-k of its own")
        if not self._seen.all():
            raise AssertionError(f"{int((~self._seen).sum())} sequences were never scored")
        return TopK(self.ids, self.logprobs)

    def summary(self) -> dict[str, float] | None:
        """mean and 99th-percentile KL divergence (nats) and top-1 agreement, or None without a reference."""
        if self.reference is None:
            return None
        if not self._seen.all():
            raise AssertionError(f"{int((~self._seen).sum())} sequences were never scored")
        return {
            "mean_kld": float(self.kld.mean()),
            "p99_kld": float(np.percentile(self.kld, 99)),
            "top1_agreement": float(self.agree.mean()),
            "positions": len(self.kld),
            "top_k": int(self.reference.ids.shape[1]),
        }
