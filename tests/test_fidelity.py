"""Fidelity figures (KL divergence, top-1 agreement) and the gates that approve an artifact."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.config import GatesConfig
from trainer.evaluation import gates
from trainer.evaluation.fidelity import Fidelity, TopK, coarse_kld, exact_kld, top_k


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def peaked(rng: np.random.Generator, positions: int, vocab: int = 4096, scale: float = 6.0) -> np.ndarray:
    """Log-softmax rows as peaked as a fine-tuned model's (most mass on a few tokens)."""
    return log_softmax(rng.standard_normal((positions, vocab)) * scale)


def test_identical_distributions_have_zero_kld_and_full_agreement() -> None:
    rows = peaked(np.random.default_rng(0), 50)
    ids, values = top_k(rows, 32)
    assert np.allclose(coarse_kld(TopK(ids, values.astype(np.float32)), rows), 0, atol=1e-5)
    assert (ids[:, 0] == rows.argmax(axis=1)).all()


def test_the_top_k_kld_never_exceeds_the_exact_one_and_is_close_on_peaked_rows() -> None:
    rng = np.random.default_rng(1)
    reference = peaked(rng, 400)  # 98% of the mass in the top 32
    model = log_softmax(reference + rng.standard_normal(reference.shape) * 0.3)  # a quantized twin
    exact = exact_kld(reference, model)
    ids, values = top_k(reference, 32)
    approx = coarse_kld(TopK(ids, values.astype(np.float32)), model)
    assert (approx <= exact + 1e-6).all()
    assert abs(approx.mean() - exact.mean()) / exact.mean() < 0.05
    full_ids, full_values = top_k(reference, reference.shape[1])  # k = vocabulary: exact
    assert np.allclose(coarse_kld(TopK(full_ids, full_values), model), exact, rtol=1e-6, atol=1e-9)


def test_positions_are_laid_out_by_sequence_whatever_the_scoring_order() -> None:
    rng = np.random.default_rng(2)
    lengths = [3, 5, 2]
    reference_rows = [peaked(rng, n) for n in lengths]
    model_rows = [log_softmax(r + rng.standard_normal(r.shape) * 0.5) for r in reference_rows]
    writer = Fidelity(lengths)
    for index in (2, 0, 1):  # transformers scores sequences sorted by length
        writer.add(index, reference_rows[index])
    reference = writer.top()
    reader = Fidelity(lengths, reference)
    for index in (1, 2, 0):
        reader.add(index, model_rows[index])
    expected = np.concatenate(
        [coarse_kld(TopK(*top_k(r, 128)), m) for r, m in zip(reference_rows, model_rows, strict=True)]
    )
    assert np.allclose(reader.kld, expected, rtol=1e-5)
    summary = reader.summary()
    assert summary is not None and summary["positions"] == sum(lengths)
    assert summary["mean_kld"] == pytest.approx(expected.mean(), rel=1e-5)


def test_a_reference_is_refused_for_other_tokens_and_a_missing_sequence_is_caught(tmp_path) -> None:
    writer = Fidelity([2, 2])
    writer.add(0, peaked(np.random.default_rng(3), 2))
    with pytest.raises(AssertionError, match="never scored"):
        writer.top()
    writer.add(1, peaked(np.random.default_rng(4), 2))
    path = tmp_path / "ref.npz"
    writer.top().save(path)
    loaded = TopK.load(path)
    assert np.array_equal(loaded.ids, writer.ids)
    with pytest.raises(ValueError, match="other eval tokens"):
        Fidelity([2, 3], loaded)


def scored(name: str, fmt: str, **figures) -> dict:
    base = {
        "name": name,
        "format": fmt,
        "size_bytes": figures.pop("size", 5_000_000),
        "delta_pct": figures.pop("delta", 0.5),
        "fidelity": {"mean_kld": figures.pop("kld", 0.004), "top1_agreement": figures.pop("top1", 0.97)},
        "task": {"score": figures.pop("task", 0.8), "self_ended": figures.pop("ended", 1.0)},
        "drift": {"perplexity": figures.pop("drift", 300.0)},
        "serving": {"peak_rss_mib": 400.0, "generation_tokens_per_s": 400.0},
        "error": None,
    }
    assert not figures
    return base


MERGED = scored("merged", "hf-bf16", delta=0.0, kld=None, top1=None, task=0.8)


def verdicts(result: dict, merged: dict = MERGED, **thresholds) -> dict[str, bool | None]:
    return {v.key: v.passed for v in gates.judge(result, merged, GatesConfig(**thresholds))}


def test_a_healthy_artifact_passes_every_gate_of_the_defaults() -> None:
    assert set(verdicts(scored("gguf-q4_k_m", "gguf")).values()) <= {True, None}


@pytest.mark.parametrize(
    ("figures", "gate"),
    [
        ({"delta": 12.0}, "max_ppl_delta_pct"),
        ({"kld": 0.09}, "max_mean_kld"),
        ({"top1": 0.85}, "min_top1_agreement"),
        ({"task": 0.5}, "min_task_share"),
        ({"ended": 0.4}, "min_self_ended_share"),
        ({"drift": 400.0}, "max_drift_delta_pct"),
    ],
)
def test_a_broken_artifact_fails_on_the_gate_that_measures_its_fault(figures: dict, gate: str) -> None:
    judged = verdicts(scored("gguf-q2_k", "gguf", **figures))
    assert [key for key, passed in judged.items() if passed is False] == [gate]


def test_a_figure_merged_cannot_anchor_is_reported_not_gated_and_null_turns_a_gate_off() -> None:
    silent_merged = scored("merged", "hf-bf16", task=0.0)
    assert verdicts(scored("gptq-w4g128", "gptq", task=0.0), silent_merged)["min_task_share"] is None
    assert verdicts(scored("gptq-w4g128", "gptq", kld=0.5), max_mean_kld=None)["max_mean_kld"] is None
    assert verdicts(scored("gptq-w4g128", "gptq"), max_peak_rss_mib=100.0)["max_peak_rss_mib"] is False


def test_the_recommendation_takes_the_best_passing_artifact_per_target_or_says_what_stopped_each() -> None:
    results = [
        {**scored("gptq-w4g128", "gptq", task=0.7), "passed_gate": True},
        {**scored("awq-w4g128", "awq", task=0.75), "passed_gate": True},
        {**scored("gguf-q2_k", "gguf"), "passed_gate": False, "gate_failures": ["mean KLD 0.09 (max 0.05)"]},
    ]
    gpu, cpu = gates.recommend(results)
    assert gpu["artifact"] == "awq-w4g128" and "task score 0.750" in gpu["reason"]
    assert cpu["artifact"] is None and cpu["stopped"] == {"gguf-q2_k": "mean KLD 0.09 (max 0.05)"}


def test_judging_gates_every_artifact_names_why_and_leaves_base_and_merged_ungated() -> None:
    base = scored("base", "hf-bf16", delta=None, kld=None, top1=None, task=0.0)
    crashed = {**scored("gguf-q4_k_m", "gguf"), "error": "llama.cpp killed by SIGSEGV"}
    results = [base, MERGED, scored("gptq-w4g128", "gptq", delta=3.0), crashed]
    judged = gates.judge_all(results, GatesConfig())
    assert [r["passed_gate"] for r in judged.results] == [None, None, True, False]
    assert judged.reasons == {"gguf-q4_k_m": "llama.cpp killed by SIGSEGV"}
    assert judged.recommendation[0]["artifact"] == "gptq-w4g128"
    strict = gates.judge_all(results, GatesConfig(max_ppl_delta_pct=1.0))
    assert strict.failed == ["gptq-w4g128", "gguf-q4_k_m"]
    assert strict.reasons["gptq-w4g128"] == "perplexity Δ% +3.00 (max 1)"
    assert "passed_gate" not in results[2]  # the measurements are left as they were


def test_evaluate_time_is_summed_per_part_over_models_and_the_rest_is_process_start() -> None:
    from trainer.stages.evaluate import seconds_by_part

    results = [
        {
            "seconds_by_part": {"perplexity and fidelity": 3.0, "drift": 1.0, "load": 2.0},
            "wall_seconds": 10.0,
        },
        {"seconds_by_part": {"perplexity and fidelity": 4.0, "task": 5.0}, "wall_seconds": 12.0},
        {"seconds_by_part": None, "wall_seconds": None},  # a model whose runtime crashed
    ]
    assert seconds_by_part(results) == {
        "perplexity and fidelity": 7.0,
        "drift": 1.0,
        "load": 2.0,
        "process start": 7.0,
        "task": 5.0,
    }
