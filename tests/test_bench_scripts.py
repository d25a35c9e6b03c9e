"""The benchmark scripts still start, and the committed figures still redraw from their JSON.

Why: the benchmarks live outside the suite (they take an hour and need a quiet machine), so an
API change in `trainer` would otherwise break them silently, and docs/BENCHMARKS.md would cite
charts nobody can regenerate. This runs no benchmark: each script's `--help` (its imports) and
the chart/table code on the committed results.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
RESULTS = REPO / "docs" / "benchmarks"
BENCHMARKS = (
    "bench_train",
    "bench_e2e",
    "bench_calibration",
    "bench_merge",
    "bench_llama_build",
    "bench_plot",
    "bench_fidelity",
    "bench_generalization",
)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_script_starts(name: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / f"{name}.py"), "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usage:" in done.stdout


@pytest.fixture()
def bench_plot(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import bench_plot

    return bench_plot


def test_committed_results_redraw(bench_plot, tmp_path: Path) -> None:
    results = sorted(RESULTS.glob("*.json"))
    assert results, f"no benchmark results in {RESULTS}"
    for path in results:
        shutil.copy(path, tmp_path / path.name)
    made = bench_plot.plot_all(tmp_path)
    charts = {p.name for p in made}
    assert "calibration.png" in charts and "merge.png" in charts and "train.png" in charts
    for chart in made:
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for chart in sorted(RESULTS.glob("*.png")):
        assert chart.name in charts, f"{chart} is committed but no JSON redraws it"
    tables = bench_plot.markdown_all(tmp_path)
    for name in ("train-tiny", "calibration", "llama_build", "precision", "fidelity"):
        assert f"### {name}" in tables


def test_committed_results_say_how_they_were_made() -> None:
    """Every result names its machine, library versions, commit and command: reproducible."""
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        missing = [k for k in ("machine", "versions", "commit", "command") if k not in data]
        assert not missing, f"{path.name} lacks {missing}; rerun the command in docs/BENCHMARKS.md"


def test_calibration_table_shows_the_task_score_beside_perplexity(bench_plot, tmp_path: Path) -> None:
    """bench_calibration's two metrics reach the table and the chart: a task score the
    benchmark measured is never dropped on the way to docs/BENCHMARKS.md."""
    data = {
        "merged_perplexity": 4.4,
        "merged_task_score": 0.36,
        "seeds": [0, 1, 2],
        "median_delta_pct": {"gptq-w4g128/train": 0.3, "gptq-w4g128/generic": 0.5},
        "median_task_score": {"gptq-w4g128/train": 0.351, "gptq-w4g128/generic": 0.297},
    }
    table = bench_plot.markdown_calibration(data)
    assert "| gptq-w4g128 | +0.300% / 0.351 | +0.500% / 0.297 | - |" in table
    chart = bench_plot.plot_calibration(data, tmp_path / "calibration.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generalization_bench_asks_only_checkable_rows_and_guesses_by_word_overlap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench_generalization's baseline and filter: a conversation whose reference reply fails the
    action regex is never asked (no model could pass it), and an unseen opening takes the intent of
    the train opening sharing most of its words."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import bench_generalization as bg

    def row(intent: str, user: str, reply: str) -> dict:
        messages = [{"role": "system", "content": "Agent."}, {"role": "user", "content": user}]
        return {"intent": intent, "messages": [*messages, {"role": "assistant", "content": reply}]}

    actions = {"refund": "rembours", "warranty": "garantie"}
    train = [
        row("refund", "Je veux le remboursement de ma commande.", "Votre remboursement part demain."),
        row("warranty", "Mon appareil est en panne, est-il sous garantie ?", "La garantie couvre la panne."),
        row("warranty", "Question de garantie.", "Bonjour, je regarde."),
    ]
    assert [r["intent"] for r in bg.checkable(train, actions, 10)] == ["refund", "warranty"]
    assert bg.checkable(train, actions, 1) == train[:1]
    assert (
        bg.nearest_intent(bg.word_bank(train), "Ma cafetière est en panne : la garantie joue-t-elle ?")
        == "warranty"
    )
    assert (
        bg.nearest_intent(bg.word_bank(train), "Quand aurai-je le remboursement de la commande ?") == "refund"
    )
    assert bg.names_intent(["Le remboursement est fait.", "Voici un bon."], train[:2], actions) == [
        True,
        False,
    ]
