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
