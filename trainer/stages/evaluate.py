"""Evaluation and the quality gate: not built yet (issue #7). The runner stops here and says so."""

from __future__ import annotations

from typing import Any

from trainer.errors import StageNotBuilt
from trainer.pipeline import StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    raise StageNotBuilt("evaluate", issue=7)
