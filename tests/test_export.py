"""What the export writes about a run must never carry a secret."""

from __future__ import annotations

from conftest import compose_typed

from trainer.stages.export import scrub


def test_secrets_are_redacted_from_the_recorded_config() -> None:
    cfg = compose_typed(["train.report_to=[wandb]", "model.revision=hf_abcdefghijklmnopqrstuvwxyz0123"])
    recorded = scrub(cfg)
    assert recorded["model"]["revision"] == "<redacted>"
    assert recorded["train"]["report_to"] == ["wandb"]
    assert recorded["merge"]["base"] == "auto"  # enums become plain values
    nested = scrub({"hub": {"HF_TOKEN": "abc", "api_key": "x", "note": "key sk-" + "a" * 24}})
    assert nested == {"hub": {"HF_TOKEN": "<redacted>", "api_key": "<redacted>", "note": "key <redacted>"}}


def test_the_table_names_the_type_each_model_computed_in_beside_its_runtime() -> None:
    """Runs on machines that compute differently are not alike: a reader comparing two must see the type."""
    from trainer.stages.export import table_rows

    common = {
        "format": "hf-bf16",
        "size_bytes": 1e6,
        "perplexity": 2.0,
        "delta_pct": 0.0,
        "passed_gate": None,
    }
    task = {"score": 0.6, "self_ended": 1.0}
    rows = table_rows(
        [
            {**common, "name": "merged", "runtime": "transformers", "compute_dtype": "float32", "task": task},
            {**common, "name": "gguf", "runtime": "llama.cpp", "compute_dtype": None, "task": task},
            {**common, "name": "failed", "runtime": "gptqmodel", "task": None},
        ]
    )
    assert [row[2] for row in rows] == ["transformers (float32)", "llama.cpp", "gptqmodel"]


def test_the_task_section_says_when_a_cut_off_reply_failed_its_checks() -> None:
    """A reader of report.md must know that a 0 may be a reply that never stopped, not a wrong one."""
    from trainer.stages.export import tasks_markdown

    def model(cut_off_fails: bool) -> dict:
        task = {"per_task": {"answer": 0.5}, "per_check": {"order number": 0.5}, "chrf": None}
        return {"name": "merged", "task": {**task, "cut_off_fails": cut_off_fails}, "replies": []}

    assert "fails every check of its row" in tasks_markdown([model(True)])
    assert "fails every check of its row" not in tasks_markdown([model(False)])
