"""Long work (loading the models, measuring the device, exact mode's self-check) as progress bars
on stderr: :class:`ProgressBars` is a :class:`~edgespec.generate.Pair`'s ``progress`` callback.
Shown on a terminal only, and gone once each piece of work is done (nothing is left in a log)."""

from __future__ import annotations

from rich.console import Console
from rich.errors import LiveError
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class ProgressBars:
    """A bar per stage (``loading target``, ...), each removed when it reaches the end.

    Args:
        console: where to draw (stderr); nothing is drawn unless it is a terminal.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._stage = ""

    def __call__(self, stage: str, fraction: float) -> None:
        if not self.console.is_terminal:
            return
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._open(stage)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=fraction)
            if fraction >= 1.0:
                self.close()

    def _open(self, stage: str) -> None:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        try:
            progress.start()
        except LiveError:  # another live display (a spinner) owns the terminal: no bar
            return
        self._progress, self._task = progress, progress.add_task(stage, total=1.0)

    def close(self) -> None:
        """Remove the bar in progress, if any."""
        if self._progress is not None:
            self._progress.stop()
        self._progress = self._task = None
        self._stage = ""
