"""The transformers runtime, scored in process on the tiny base."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ASSETS

from trainer.precision import dtype_name, fast_float
from trainer.runtimes import score


@pytest.mark.slow
def test_a_scored_model_records_the_type_it_computed_in(tmp_path: Path) -> None:
    """bfloat16 only where the CPU runs it natively, float32 elsewhere (the project's policy,
    `fast_float`): the report shows which."""
    eval_jsonl = tmp_path / "eval2.jsonl"
    lines = (ASSETS / "support-fr" / "eval.jsonl").read_text(encoding="utf-8").splitlines()[:2]
    eval_jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    scored = score("transformers", ASSETS / "tiny-base", eval_jsonl, samples=1, max_new_tokens=4)
    assert scored["compute_dtype"] == dtype_name(fast_float("cpu"))
    assert scored["tokens"] > 0 and len(scored["generations"]) == 1
