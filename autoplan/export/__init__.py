"""Engine launch configs for a plan: vLLM, SGLang and TensorRT-LLM shell scripts (with
TensorRT-LLM's LLM-API YAML), a Dynamo deployment of vLLM, SGLang or TensorRT-LLM workers.

``export(plan, engine)`` runs the validator's rules first (a plan ``autoplan validate``
refuses is refused, with its first broken rule: device ids not of the topology, layers
that do not cover the model, stale figures), then is pure: it returns the files to write (``launch.sh`` or
``deployment.yaml``), the commands in them and the warnings. Where an engine cannot
express part of a plan (a pool on devices it does not run on, different TP degrees
across the stages of one pipeline, GPUs of two vendors in one pipeline) that pool is
left out and a warning says so; the rest is exported.

One module an engine, each with one builder ``build(ctx, pools) -> Export``, registered
in :data:`REGISTRY`; every flag they write is in the documented sets of
:mod:`autoplan.export.flags`.
"""

from __future__ import annotations

from autoplan.errors import InputError
from autoplan.export import dynamo, sglang, trtllm, vllm
from autoplan.export.common import Command, Ctx, Engine, Export, model_path, write_export
from autoplan.export.pools import pools
from autoplan.plan_schema import Plan
from autoplan.rules.validate import check as check_plan

REGISTRY: dict[str, Engine] = {"vllm": vllm.ENGINE, "sglang": sglang.ENGINE,
                               "trtllm": trtllm.ENGINE, "dynamo": dynamo.ENGINE}
ENGINES = tuple(REGISTRY)

__all__ = ["ENGINES", "REGISTRY", "Command", "Export", "check_engine", "export", "write_export"]


def check_engine(engine: str) -> str:
    e = engine.strip().lower()
    if e not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    return e


def export(plan: Plan | dict | str, engine: str, *, check: bool = True,
           backend: str | None = None) -> Export:
    """Launch configs for ``plan`` (a Plan, its dict or a plan file) on ``engine`` (vllm,
    sglang, trtllm or dynamo; ``backend``: Dynamo's workers, vllm | sglang | trtllm,
    default the plan's ``inputs.engine``).

    Raises :class:`InputError` for an unknown engine, a plan that does not validate
    (``check=False`` skips the rules: the names in the plan are still checked and every
    one is quoted where it is written), a model that would read as a flag, a pool the
    engine refuses to start (:data:`autoplan.export.flags.ENGINE_LIMITS`: the pool and the
    rule are named), or when the engine can express no pool of the plan at all.
    """
    engine = check_engine(engine)
    if backend is not None and engine != "dynamo":
        raise InputError(f"--backend picks Dynamo's workers; it does not apply to {engine}")
    plan = check_plan(plan) if check else Plan.load(plan)
    label, build = REGISTRY[engine]
    warn: list[str] = []
    ctx = Ctx(plan, engine, label, model_path(plan, warn), warn, backend)
    found = pools(plan, label, warn)
    if found:
        exp = build(ctx, found)
        if exp.commands:
            return exp
    raise InputError(f"{label} can express no part of this plan: {warn[-1]}")
