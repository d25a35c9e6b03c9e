"""One progress bar per stage on the run's console, in the stage's own units."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class Bar:
    """A bar of `total` units; `advance` moves it, `note` says what is under way."""

    def __init__(self, progress: Progress, task: TaskID, label: str) -> None:
        self._progress, self._task, self._label = progress, task, label

    def advance(self, steps: float = 1, **fields: Any) -> None:
        self._progress.update(self._task, advance=steps, **fields)

    def set(self, completed: float, **fields: Any) -> None:
        self._progress.update(self._task, completed=completed, **fields)

    def note(self, text: str) -> None:
        self._progress.update(self._task, description=f"{self._label}: {text}")


@contextmanager
def stage_bar(
    console: Console, label: str, total: float | None, unit: str, show: bool = True
) -> Iterator[Bar]:
    """A bar that stays on screen when done (one line when the console is a file); `show=False`
    (a rank other than 0) draws nothing."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
    )
    with progress:
        yield Bar(progress, progress.add_task(label, total=total), label)
