"""What a solve is asked (:class:`Limits`) and what it answers (:class:`SolveResult`, its
stages as :class:`StageChoice`): plain data shared by the solver and its callers."""

from __future__ import annotations

from dataclasses import dataclass, field

TOO_LARGE = ("a stage's time is too large for the planner's integer tables (months): give "
             "a shorter --isl / --osl or faster devices (autoplan estimate prices it)")


@dataclass
class StageChoice:
    role: str
    config: int
    length: int
    count: int = 1


@dataclass
class SolveResult:
    status: str  # optimal | feasible | infeasible
    objective_t: float | None
    best_bound_t: float | None
    wall_s: float
    pools: dict[str, list[StageChoice]] = field(default_factory=dict)
    ttft_t: int = 0
    tpot_t: int = 0
    kv_t: int = 0
    devices: int = 0
    usage: tuple[int, ...] = ()
    interrupted: bool = False  # Ctrl-C stopped the search (see stop_on_sigint)
    # The solution as values of the model's variables (see ``solve``'s ``exclude``):
    # ``shape`` the stage counts of every group, ``full`` with the lengths too.
    shape: tuple[int, ...] = ()
    full: tuple[int, ...] = ()

    @property
    def gap(self) -> float:
        if self.objective_t is None or self.best_bound_t is None or self.objective_t <= 0:
            return 0.0
        return max(0.0, (self.objective_t - self.best_bound_t) / self.objective_t)


@dataclass
class Limits:
    ttft_slo_t: int | None = None
    tpot_slo_t: int | None = None
    time_limit_s: float = 30.0
    progress: bool = False
    max_devices: int | None = None  # devices the plan may use in all (a budget)
    label: str = ""  # what this solve is (its placement), shown with its incumbents
    header: str = ""  # a line said before this solve's first incumbent (its phase)
