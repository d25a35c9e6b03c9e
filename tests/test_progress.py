"""Stage progress bars: redrawn on a terminal, a line per tenth when captured to a file."""

from __future__ import annotations

import io

from rich.console import Console

from trainer.progress import stage_bar


def test_a_captured_console_gets_a_line_per_tenth_and_a_hidden_rank_none() -> None:
    captured = io.StringIO()
    console = Console(file=captured, force_terminal=False, width=120)
    with stage_bar(console, "train", 40, "steps") as bar:
        bar.note("loss 2.500")
        for _ in range(40):
            bar.advance()
    lines = captured.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("train: 4/40 steps (loss 2.500), ") and lines[-1].startswith(
        "train: 40/40 steps"
    )

    hidden = io.StringIO()
    with stage_bar(Console(file=hidden, force_terminal=False), "train", 40, "steps", show=False) as bar:
        bar.set(40)
    assert hidden.getvalue() == ""


def test_a_terminal_redraws_one_bar_instead_of_printing_lines() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    with stage_bar(console, "quantize", 4, "artifacts") as bar:
        for _ in range(4):
            bar.advance()
    assert "quantize: 1/4" not in screen.getvalue() and "4/4" in screen.getvalue()
