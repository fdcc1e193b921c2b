"""The rules a deployment must obey, as functions that return violations.

Every violation is one line that starts with the rule's name (:data:`RULES`), so a
reader, a test or ``explain`` can tell which rule broke. ``validate``, ``explain`` and
the planner's own self-check call these functions; none has rules of its own.

Structure (no pricing needed): layer coverage, TP degrees the model allows, known
devices of the stage's kind, no device used twice, TP groups inside one fast domain,
replicas that repeat the first replica's shape, the pools of the placement. Figures
(priced by :func:`autoplan.cost.evaluate.evaluate`): memory headroom, SLOs, the device
budget and the request rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from autoplan.cost.evaluate import Figures
from autoplan.cost.expert_parallel import check_ep
from autoplan.cost.pipeline import StagePlacement
from autoplan.cost.roofline import check_tp
from autoplan.errors import InputError
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec

RULES = ("layer coverage", "stage order", "TP", "devices", "device disjointness",
         "TP inside fast domains", "replicas", "placement", "memory headroom", "SLO",
         "device budget", "request rate", "uniform TP", "expert parallelism",
         "disaggregated PP")
"""Rule names: every violation starts with one of them and a colon."""

SLO_TOL = 1e-9
"""Relative slack on SLO, budget and rate comparisons (float noise, not a margin)."""


def domain_map(topo: Topology) -> dict[str, int]:
    """Fast-domain index of every device."""
    return topo.domain_of


def coverage(name: str, model: ModelSpec, stages: Sequence[StagePlacement]) -> list[str]:
    """Contiguous stages that cover every decoder layer once, in order."""
    expect = 0
    for s in stages:
        if s.first != expect or s.end <= s.first:
            return [f"layer coverage: {name} stage layers [{s.first}, {s.end}) do not "
                    f"continue from layer {expect}"]
        expect = s.end
    if expect != model.num_layers:
        return [f"layer coverage: {name} stages end at layer {expect}, the model has "
                f"{model.num_layers}"]
    return []


def tp_degree(where: str, model: ModelSpec, tp: int) -> list[str]:
    """A TP degree the model's heads and widths allow."""
    try:
        check_tp(model, tp)
    except InputError as e:
        return [f"TP: {where}: {e}"]
    return []


def ep_degree(where: str, model: ModelSpec, size: int, dp: int, ep: int) -> list[str]:
    """Attention DP and EP degrees a stage of ``size`` devices can run: ``dp`` dividing
    the devices, MoE models only, ``ep`` dividing the devices and the experts."""
    if dp < 1 or size % dp:
        return [f"expert parallelism: {where}: attention DP {dp} does not divide its "
                f"{size} devices"]
    try:
        check_ep(model, size // dp, dp, ep)
    except InputError as e:
        return [f"expert parallelism: {where}: {e}"]
    return []


def tp_group(name: str, where: str, devices: Iterable[str], kind: str, topo: Topology,
             domain_of: dict[str, int], seen: set[str], ranks: int = 1) -> tuple[list[str], bool]:
    """One stage's devices: known devices of its kind, none used twice in ``name``
    (``seen`` collects them), each of its ``ranks`` data-parallel TP groups (consecutive
    slices) inside one fast domain. The flag is False when a device is unknown (nothing
    more can be checked)."""
    errs: list[str] = []
    devices = list(devices)
    for d in devices:
        if d not in domain_of:
            return errs + [f"devices: {name} {where} names unknown device {d}"], False
        if topo.device_kind_of(d) != kind:
            errs.append(f"devices: {d} is not a {kind}")
        if d in seen:
            errs.append(f"device disjointness: {d} is used twice in {name}")
        seen.add(d)
    ranks = max(1, ranks)
    t = max(1, len(devices) // ranks)
    for r in range(ranks):
        if len({domain_of[d] for d in devices[r * t:(r + 1) * t]}) > 1:
            rank = f" attention-DP rank {r}" if ranks > 1 else ""
            errs.append(f"TP inside fast domains: {name} {where}{rank} spans several fast "
                        f"domains")
            break
    return errs, True


def pipeline(name: str, model: ModelSpec, topo: Topology, stages: Sequence[StagePlacement],
             domain_of: dict[str, int] | None = None) -> list[str]:
    """Every structural rule of one pipeline: coverage, TP degrees, its TP groups."""
    domain_of = domain_of if domain_of is not None else domain_map(topo)
    errs = coverage(name, model, stages)
    if errs:
        return errs
    seen: set[str] = set()
    for k, s in enumerate(stages):
        errs += tp_degree(f"{name} stage {k}", model, s.tp)
        errs += ep_degree(f"{name} stage {k}", model, s.size, s.dp, s.ep)
        group_errs, known = tp_group(name, f"stage {k}", s.devices, s.kind, topo, domain_of,
                                     seen, s.dp)
        errs += group_errs
        if not known:
            break
    return errs


def uniform_tp(name: str, topo: Topology, stage_kinds: Sequence[str],
               stage_tps: Sequence[int], engine: str | None) -> list[str]:
    """With an engine (vLLM, SGLang, TensorRT-LLM), the GPU stages of one pipeline share
    one TP degree: the engine takes one TP for the whole server
    (``hardware/engine_rules.yaml``). Kinds of their own runtime (SRAM-only) are free."""
    if engine is None:
        return []
    tps = sorted({tp for kind, tp in zip(stage_kinds, stage_tps)
                  if kind not in topo.kinds or not topo.kinds[kind].own_runtime})
    if len(tps) < 2:
        return []
    why = (f"uniform TP: {name} pipeline mixes TP {', '.join(map(str, tps))} on its GPU "
           f"stages, but {engine} runs one TP degree per pipeline")
    return [why]


def colocated_dp(stages: Sequence[StagePlacement], placement: str) -> list[str]:
    """A colocated pipeline runs one step schedule, so one attention-DP degree on every
    stage (its DP ranks schedule their own shares of the batch through all the stages;
    :func:`autoplan.cost.evaluate.phase_cost` prices the widest degree's step mix)."""
    dps = sorted({s.dp for s in stages})
    if placement != "colocated" or len(dps) < 2:
        return []
    return [f"attention DP: a colocated pipeline runs one attention-DP degree on every stage "
            f"(one step schedule); its stages have {', '.join(map(str, dps))}"]


def disaggregated_pp(name: str, topo: Topology, stage_kinds: Sequence[str], placement: str,
                     engine: str | None) -> list[str]:
    """With an engine that runs disaggregated pools without pipeline parallelism (vLLM's
    NixlConnector, ``hardware/engine_rules.yaml``), a prefill or decode pool with a stage
    on its GPU kinds has one stage. Pools all on kinds of their own runtime (SRAM-only)
    are free."""
    if engine is None or placement != "disaggregated":
        return []
    from autoplan.catalog import engine_rules

    er = engine_rules().get(engine)
    gpu = [k for k in stage_kinds if k not in topo.kinds or not topo.kinds[k].own_runtime]
    if er is None or not er.disaggregated_pp1 or not gpu or len(stage_kinds) < 2:
        return []
    return [f"disaggregated PP: the {name} pool has {len(stage_kinds)} pipeline stages, "
            f"{len(gpu)} on GPUs, but {engine}'s disaggregated KV transfer (NIXL) runs "
            f"pools without pipeline parallelism"]


def engine_parallelism(name: str, topo: Topology, stages: Sequence[StagePlacement],
                       engine: str | None) -> list[str]:
    """With an engine, the expert-parallel and attention-DP shapes it runs
    (``hardware/engine_rules.yaml``): one EP and one DP degree per pipeline on its GPU
    stages, EP over every device of a stage where the engine requires it (vLLM), attention
    DP one rank per device where the engine requires it (TensorRT-LLM)."""
    if engine is None:
        return []
    from autoplan.catalog import engine_rules

    er = engine_rules().get(engine)
    gpu = [s for s in stages if s.kind not in topo.kinds or not topo.kinds[s.kind].own_runtime]
    errs: list[str] = []
    for what, vals in (("EP", {s.ep for s in gpu}), ("attention DP", {s.dp for s in gpu})):
        if len(vals) > 1:
            errs.append(f"expert parallelism: {name} pipeline mixes {what} "
                        f"{', '.join(map(str, sorted(vals)))} on its GPU stages, but {engine} "
                        f"runs one {what} degree per server")
    for k, s in enumerate(gpu):
        if er is not None and er.ep_all_devices and s.ep not in (1, s.size):
            errs.append(f"expert parallelism: {name} stage {k} has EP {s.ep} on {s.size} "
                        f"devices, but {engine} shards experts over all of them (EP = TP x DP)")
        if er is not None and er.attention_dp_all_devices and s.dp not in (1, s.size):
            errs.append(f"expert parallelism: {name} stage {k} has attention DP {s.dp} of TP "
                        f"{s.tp}, but {engine} runs attention DP with TP 1 per rank")
    return errs


def replicas(name: str, topo: Topology, stage_kinds: Sequence[str], stage_tps: Sequence[int],
             replica_devices: Sequence[Sequence[Sequence[str]]], count: int,
             domain_of: dict[str, int], stage_dps: Sequence[int] | None = None) -> list[str]:
    """Every replica repeats the first replica's stages on devices of its own
    (``stage_tps`` attention TP degrees of ``stage_dps`` data-parallel ranks each)."""
    dps = list(stage_dps) if stage_dps is not None else [1] * len(stage_kinds)
    if len(replica_devices) != count:
        return [f"replicas: {name} lists devices of {len(replica_devices)} replicas, "
                f"not {count}"]
    errs: list[str] = []
    seen: set[str] = set()
    for r, groups in enumerate(replica_devices):
        if len(groups) != len(stage_kinds):
            errs.append(f"replicas: {name} replica {r} has {len(groups)} stages, "
                        f"not {len(stage_kinds)}")
            continue
        for k, (g, kind, tp, dp) in enumerate(zip(groups, stage_kinds, stage_tps, dps)):
            if len(g) != tp * dp:
                errs.append(f"TP: {name} replica {r} stage {k} has {len(g)} devices, not "
                            f"{tp * dp}")
            group_errs, known = tp_group(name, f"replica {r} stage {k}", g, kind, topo,
                                         domain_of, seen, dp)
            errs += group_errs
            if not known:
                return errs
    return errs


def pools(placement: str, pre_devices: set[str], dec_devices: set[str],
          same_pipeline: bool) -> list[str]:
    """Disaggregated pools share no device; a colocated pool runs both phases on one
    pipeline (``same_pipeline``: its prefill and decode stages and replicas agree)."""
    if placement == "disaggregated" and pre_devices & dec_devices:
        return [f"device disjointness: {min(pre_devices & dec_devices)} serves both pools"]
    if placement == "colocated" and not same_pipeline:
        return ["placement: colocated prefill and decode stages must be the same"]
    return []


def requested_placement(requested: str, placement: str) -> list[str]:
    """A placement the request fixed is the one used."""
    if requested != "auto" and placement != requested:
        return [f"placement: the request fixed placement={requested}"]
    return []


def memory(fig: Figures, max_memory_fraction: float, phases: Sequence[str]) -> list[str]:
    """Every stage within the memory headroom (``phases``: those with stages of their
    own; a colocated pipeline is checked once)."""
    errs = []
    for ph in phases:
        for k, frac in enumerate(fig.stage_fraction[ph]):
            if frac > max_memory_fraction + 1e-12:
                d = 1  # digits enough to tell the two apart (3.6% above 4% read as a bug)
                while d < 6 and f"{frac:.{d}%}" == f"{max_memory_fraction:.{d}%}":
                    d += 1
                errs.append(f"memory headroom: {ph} stage {k} uses {frac:.{d}%} of device "
                            f"memory, above {max_memory_fraction:.{d}%}")
    return errs


def slos(fig: Figures, ttft_slo_ms: float | None, tpot_slo_ms: float | None) -> list[str]:
    """TTFT and TPOT within their SLOs."""
    errs = []
    if ttft_slo_ms is not None and not fig.ttft_ms <= ttft_slo_ms * (1 + SLO_TOL):
        errs.append(f"SLO: TTFT {fig.ttft_ms:.2f} ms exceeds {ttft_slo_ms:g} ms")
    if tpot_slo_ms is not None and not fig.tpot_ms <= tpot_slo_ms * (1 + SLO_TOL):
        errs.append(f"SLO: TPOT {fig.tpot_ms:.3f} ms exceeds {tpot_slo_ms:g} ms")
    return errs


def budget(devices: int, max_devices: int | None) -> list[str]:
    """No more devices than the request's budget."""
    if max_devices is not None and devices > max_devices:
        return [f"device budget: the deployment uses {devices} devices, the budget is "
                f"{max_devices}"]
    return []


def rate(fig: Figures, request_rate: float | None) -> list[str]:
    """The deployment sustains the requested rate."""
    if request_rate is not None and not fig.requests_per_s >= request_rate * (1 - SLO_TOL):
        return [f"request rate: the deployment serves {fig.requests_per_s:.6g} requests/s, "
                f"below the requested {request_rate:g}"]
    return []


def figures(fig: Figures, inputs, placement: str, devices: int) -> list[str]:
    """The rules on priced figures, for a request's ``inputs`` (a PlanInputs)."""
    phases = ("prefill",) if placement == "colocated" else ("prefill", "decode")
    return (memory(fig, inputs.max_memory_fraction, phases)
            + slos(fig, inputs.ttft_slo_ms, inputs.tpot_slo_ms)
            + budget(devices, inputs.max_devices)
            + rate(fig, inputs.request_rate))


def design_figures(name: str, fig: Figures, inputs) -> list[str]:
    """The rules on the figures of one more design of a pool (``name`` says which): its
    stages within the memory headroom, its phase's SLO (prefill: TTFT, decode: TPOT,
    colocated: both)."""
    phase = "decode" if name.startswith("decode") else "prefill"
    errs = memory(fig, inputs.max_memory_fraction, (phase,))
    errs += slos(fig, inputs.ttft_slo_ms if phase == "prefill" else None,
                 inputs.tpot_slo_ms if not name.startswith("prefill") else None)
    return [f"{name}: {e}" for e in errs]
