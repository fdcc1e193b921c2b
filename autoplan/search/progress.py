"""Search progress on a terminal: one rich progress bar per search phase (its placement,
the incumbent and the bound, time against the limit). Piped, the solver prints a labelled
line per phase and incumbent instead (:func:`incumbent_printer`)."""

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


_PRINTERS: dict = {}


def incumbent_printer(base: type) -> type:
    """The solution callback that prints each incumbent and the bound to stderr (the CLI
    asks for it), over CP-SAT's callback class ``base`` (the solver passes it: it alone
    imports OR-Tools)."""
    if base in _PRINTERS:
        return _PRINTERS[base]

    class Progress(base):  # type: ignore[misc, valid-type]
        def __init__(self, scale: float, label: str = "", header: str = "",
                     bar: PhaseBar | None = None) -> None:
            super().__init__()
            self._scale = scale
            self._bar = bar  # on a terminal: the phase's progress bar instead of lines
            self._label = f"[{label}] " if label else ""
            self._header = header  # said once, with the first incumbent (none: no line)
            self._t0 = time.perf_counter()
            self._last = (float("inf"), -1.0)

        def on_solution_callback(self) -> None:
            obj = self.objective_value / self._scale
            bound = self.best_objective_bound / self._scale
            now = time.perf_counter()
            # Only material improvements, or a heartbeat each second: tie-break steps
            # are noise.
            if obj > self._last[0] * (1 - 1e-4) and now - self._last[1] < 1.0:
                return
            self._last = (obj, now)
            if self._bar is not None:
                self._bar.incumbent(f"incumbent {obj:.3f} ms, bound {bound:.3f} ms")
                return
            if self._header:
                print(self._header, file=sys.stderr)
                self._header = ""
            print(f"  {self._label}[{time.perf_counter() - self._t0:6.2f}s] incumbent "
                  f"{obj:.3f} ms, bound {bound:.3f} ms", file=sys.stderr)

    _PRINTERS[base] = Progress
    return Progress
