"""One progress bar per stage on the run's console, in the stage's own units.

On a terminal the bar redraws in place. Captured to a file (CI, SLURM, Ray logs) a bar cannot
redraw, and rich would print it only when it ends; so there the bar prints one line at every
tenth of its total instead: progress on long work, in a dozen lines per stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

# Lines a bar prints over its run when the console is not a terminal.
FILE_LINES = 10


class Bar:
    """A bar of `total` units; `advance`/`set` move it, `note` says what is under way."""

    def __init__(self, progress: Progress, task: TaskID, label: str, unit: str, lines: bool) -> None:
        self._progress, self._task, self._label, self._unit = progress, task, label, unit
        self._lines = lines  # print milestone lines (a console that cannot redraw)
        self._printed = 0  # tenths already printed
        self._note = ""

    def advance(self, steps: float = 1, **fields: Any) -> None:
        self._progress.update(self._task, advance=steps, **fields)
        self._milestone()

    def set(self, completed: float, **fields: Any) -> None:
        self._progress.update(self._task, completed=completed, **fields)
        self._milestone()

    def note(self, text: str) -> None:
        self._note = text
        self._progress.update(self._task, description=f"{self._label}: {text}")

    def _milestone(self) -> None:
        task = self._progress.tasks[self._task]
        if not self._lines or not task.total:
            return
        tenth = int(FILE_LINES * task.completed / task.total)
        if tenth > self._printed:
            self._printed = tenth
            note = f" ({self._note})" if self._note else ""
            elapsed = task.elapsed or 0.0
            self._progress.console.print(
                f"{self._label}: {task.completed:g}/{task.total:g} {self._unit}{note}, {elapsed:.0f} s"
            )


@contextmanager
def stage_bar(
    console: Console, label: str, total: float | None, unit: str, show: bool = True
) -> Iterator[Bar]:
    """A bar that stays on screen when done; `show=False` (a rank other than 0) draws nothing."""
    terminal = console.is_terminal
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        console=console,
        disable=not (show and terminal),
    )
    with progress:
        yield Bar(progress, progress.add_task(label, total=total), label, unit, lines=show and not terminal)
