"""Search progress on a terminal: one rich progress bar per search phase (its placement,
the incumbent and the bound, time against the limit). Piped, the solver prints a labelled
line per phase and incumbent instead (``solver._Progress``)."""

from __future__ import annotations

import sys
import time


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stderr
        return False


class PhaseBar:
    """A transient bar on stderr for one solve: description, elapsed time of the limit."""

    def __init__(self, title: str, time_limit_s: float) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._t0 = time.perf_counter()
        self._limit = max(time_limit_s, 1e-9)
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                  BarColumn(), TimeElapsedColumn(),
                                  console=Console(stderr=True), transient=True)
        self._title = title
        self._task = self._progress.add_task(title, total=self._limit)
        self._progress.start()

    @classmethod
    def maybe(cls, progress: bool, title: str, time_limit_s: float) -> PhaseBar | None:
        """A bar when progress is asked for and stderr is a terminal, else None."""
        return cls(title, time_limit_s) if progress and stderr_is_tty() else None

    def incumbent(self, text: str) -> None:
        self._progress.update(self._task, description=f"{self._title}: {text}")

    def tick(self) -> None:
        self._progress.update(self._task, completed=min(time.perf_counter() - self._t0,
                                                        self._limit))

    def close(self) -> None:
        self._progress.stop()
