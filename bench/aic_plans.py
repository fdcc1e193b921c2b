"""aiconfigurator's picks as concrete autoplan plans, priced by autoplan's cost model.

Used by ``bench/vs_aiconfigurator.py``. aiconfigurator (``cli default``) writes, per
serving mode, ``<save-dir>/<run>/{agg,disagg}/best_config_topn.csv``: one row per
parallel layout (the best of its batch sizes), ranked by ``tokens/s/gpu_cluster``.

How a row maps to an autoplan plan (see the README section "autoplan vs
aiconfigurator"):

- **agg** row = one *worker* (``num_total_gpus`` = ``tp*pp*dp`` GPUs) running in-flight
  batching with ``bs`` sequences per attention-DP rank; aiconfigurator replicates it
  ``total_gpus // num_total_gpus`` times. autoplan: ``placement colocated``, one pipeline
  of ``pp`` stages (layers split evenly, the first stages taking the remainder, as
  TensorRT-LLM does), each of ``tp`` devices, ``replicas`` = that count, decode
  ``batch`` = ``global_bs`` (= ``bs * dp``), ``prefill_batch`` 1 (aiconfigurator's agg
  step carries one context request: ``num_ctx_reqs`` 1).
- **disagg** row = one xPyD *replica*: ``(p)workers`` prefill workers and
  ``(d)workers`` decode workers, each a ``tp*pp*dp`` layout with its own batch;
  ``num_total_gpus`` is the replica's GPUs and it is copied ``total_gpus //
  num_total_gpus`` times. autoplan: ``placement disaggregated``, prefill replicas =
  ``(p)workers * copies``, decode replicas = ``(d)workers * copies``, ``prefill_batch`` =
  ``(p)global_bs``, ``batch`` = ``(d)global_bs``. Devices are laid out replica by
  replica (its prefill workers, then its decode workers), each TP group inside one
  NVLink domain, so KV hand-offs stay where aiconfigurator's replica puts them.
- **MoE layouts** ``tp{a}pp{b}dp{c}etp{d}ep{e}``: attention TP ``a`` replicated over ``c``
  data-parallel ranks (``a*c`` GPUs per stage), MoE layers sharded ``d``-way TP times
  ``e``-way expert parallel (``d*e = a*c``). With ``dp == 1`` and ``ep == 1`` (MoE pure
  TP, ``etp == tp``) this is an ordinary autoplan TP stage. With EP or attention DP it
  needs the plan Stage's ``ep`` / ``attention_dp`` fields (issue 12 scope 2); until the
  schema has them such a pick is reported "not priced (EP/DP not yet in autoplan)".
  :func:`stage_fields` is the one place to extend.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

NOT_PRICED_EP = "not priced (EP/DP not yet in autoplan)"


@dataclass(frozen=True)
class Layout:
    """One worker's parallel layout as aiconfigurator reports it."""

    tp: int
    pp: int
    dp: int
    moe_tp: int
    moe_ep: int
    bs: int         # sequences per attention-DP rank
    global_bs: int  # sequences per worker (bs * dp)

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    def label(self) -> str:
        s = f"tp{self.tp}pp{self.pp}"
        if self.dp > 1 or self.moe_ep > 1:
            s += f"dp{self.dp}etp{self.moe_tp}ep{self.moe_ep}"
        return s


@dataclass(frozen=True)
class Pick:
    """aiconfigurator's best configuration of one serving mode."""

    mode: str                 # "agg" or "disagg"
    copies: int               # replicas of the row's unit that fit in total_gpus
    unit_gpus: int            # GPUs of the unit (agg: a worker; disagg: an xPyD replica)
    prefill: Layout           # agg: the worker's layout (prefill and decode alike)
    decode: Layout
    prefill_workers: int      # per unit (agg: 1)
    decode_workers: int
    tokens_per_s_per_gpu: float       # aiconfigurator's, over the unit's GPUs
    tokens_per_s_per_gpu_cluster: float  # over total_gpus (idle GPUs count)
    tokens_per_s_per_user: float
    tokens_per_s: float       # of one unit
    ttft_ms: float
    tpot_ms: float
    memory_gb: tuple[float, ...]  # aiconfigurator's per-GPU memory (agg: 1; disagg: p, d)
    row: dict

    @property
    def used_gpus(self) -> int:
        return self.copies * self.unit_gpus

    def summary(self) -> str:
        if self.mode == "agg":
            return (f"agg {self.copies}x {self.decode.label()} bs{self.decode.global_bs}")
        p, d = self.prefill, self.decode
        return (f"disagg {self.copies}x ({self.prefill_workers}P {p.label()} "
                f"bs{p.global_bs} + {self.decode_workers}D {d.label()} bs{d.global_bs})")


def _layout(row: dict, pre: str) -> Layout:
    g = lambda k: int(float(row[pre + k]))
    return Layout(g("tp"), g("pp"), g("dp"), g("moe_tp"), g("moe_ep"), g("bs"), g("global_bs"))


def parse_row(mode: str, row: dict, total_gpus: int) -> Pick:
    unit = int(float(row["num_total_gpus"]))
    f = lambda k: float(row[k])
    common = {"mode": mode, "copies": total_gpus // unit, "unit_gpus": unit,
                  "tokens_per_s_per_gpu": f("tokens/s/gpu"),
                  "tokens_per_s_per_gpu_cluster": f("tokens/s/gpu_cluster"),
                  "tokens_per_s_per_user": f("tokens/s/user"), "tokens_per_s": f("tokens/s"),
                  "ttft_ms": f("ttft"), "tpot_ms": f("tpot"), "row": row}
    if mode == "agg":
        lay = _layout(row, "")
        return Pick(prefill=lay, decode=lay, prefill_workers=1, decode_workers=1,
                    memory_gb=(f("memory"),), **common)
    return Pick(prefill=_layout(row, "(p)"), decode=_layout(row, "(d)"),
                prefill_workers=int(float(row["(p)workers"])),
                decode_workers=int(float(row["(d)workers"])),
                memory_gb=(f("(p)memory"), f("(d)memory")), **common)


def read_picks(save_dir: Path, total_gpus: int) -> dict[str, Pick]:
    """The rank-1 row of each mode under ``save_dir`` (aiconfigurator's ``--save-dir``)."""
    runs = [p for p in Path(save_dir).iterdir() if p.is_dir()]
    if len(runs) != 1:
        raise RuntimeError(f"{save_dir}: expected one run folder, found {len(runs)}")
    picks = {}
    for mode in ("agg", "disagg"):
        f = runs[0] / mode / "best_config_topn.csv"
        if not f.exists():
            continue
        rows = list(csv.DictReader(f.open()))
        if rows:
            best = max(rows, key=lambda r: float(r["tokens/s/gpu_cluster"]))
            picks[mode] = parse_row(mode, best, total_gpus)
    return picks


def plain(pick: Pick) -> bool:
    """No expert parallelism or attention DP in either pool (autoplan can price it
    today)."""
    return all(lay.dp == 1 and lay.moe_ep == 1 for lay in (pick.prefill, pick.decode))


def read_tp_only(save_dir: Path, total_gpus: int, ttft_ms: float, tpot_ms: float
                 ) -> dict[str, Pick]:
    """Per mode, the best layout without EP or attention DP among the points of
    aiconfigurator's Pareto frontier (``pareto.csv``) that meet the SLOs, by its own
    ``tokens/s/gpu_cluster``: a lower bound on its best TP-only configuration (the
    frontier drops points an EP layout dominates). Modes whose chosen row is already
    TP-only are left out."""
    runs = [p for p in Path(save_dir).iterdir() if p.is_dir()]
    out = {}
    for mode in ("agg", "disagg"):
        f = runs[0] / mode / "pareto.csv"
        if not f.exists():
            continue
        picks = []
        for row in csv.DictReader(f.open()):
            try:
                pk = parse_row(mode, {**row, "tokens/s/gpu_cluster": row.get(
                    "tokens/s/gpu_cluster") or row["tokens/s/gpu"]}, total_gpus)
            except (KeyError, ValueError):
                continue
            if plain(pk) and pk.copies > 0 and pk.ttft_ms <= ttft_ms and pk.tpot_ms <= tpot_ms:
                picks.append(pk)
        if picks:
            out[mode] = max(picks, key=lambda p: p.tokens_per_s_per_gpu_cluster)
    return out


# ---------------------------------------------------------------------------
# translation into an autoplan plan


def stage_fields(lay: Layout) -> dict | None:
    """The autoplan Stage fields of one stage of this layout (besides layers and
    devices), or None when autoplan's plan schema cannot express it.

    A stage holds ``tp * dp`` devices: attention TP ``tp`` on each of ``dp`` ranks
    (autoplan's ``tp`` is one rank's, aiconfigurator's ``tp`` likewise), the experts split
    ``ep`` ways (``moe_tp * ep == tp * dp``).
    """
    from autoplan.plan_schema import Stage

    plain = lay.dp == 1 and lay.moe_ep == 1
    if plain:
        return {"tp": lay.tp}
    if "ep" not in Stage.model_fields or "attention_dp" not in Stage.model_fields:
        return None
    if lay.moe_tp * lay.moe_ep != lay.tp * lay.dp:
        return None
    return {"tp": lay.tp, "ep": lay.moe_ep, "attention_dp": lay.dp}


class _Devices:
    """Free devices by NVLink domain, handed out first-fit, domain order."""

    def __init__(self, topo):
        self.kind = {}
        self.free: dict[int, list[str]] = {}
        for d in topo.devices:
            self.free.setdefault(topo.domain_of[d], []).append(d)
            self.kind[d] = topo.device_kind_of(d)

    def take(self, n: int, per_rank: int | None = None) -> list[str]:
        """``n`` devices in one domain; with ``per_rank`` (attention-DP ranks of that
        many devices, wider than a domain), whole free domains, each rank in one."""
        for dom in sorted(self.free):
            if len(self.free[dom]) >= n:
                got, self.free[dom] = self.free[dom][:n], self.free[dom][n:]
                return got
        if per_rank is not None:
            whole = [d for d in sorted(self.free) if self.free[d]
                     and len(self.free[d]) % per_rank == 0]
            got: list[str] = []
            for dom in whole:
                if len(got) >= n:
                    break
                got += self.free[dom]
            if len(got) == n:
                for dom in whole:
                    self.free[dom] = [d for d in self.free[dom] if d not in got]
                return got
        raise ValueError(f"no NVLink domain has {n} free devices")


def _pipeline(devs: _Devices, lay: Layout, fields: dict, layers: int) -> list[dict]:
    stages = []
    from autoplan.cost.pipeline import even_cuts

    for k, (a, b) in enumerate(even_cuts(layers, lay.pp)):
        dp = fields.get("attention_dp", 1)
        ds = devs.take(fields["tp"] * dp, fields["tp"] if dp > 1 else None)
        stages.append({"index": k, "layers": [a, b], "device_kind": devs.kind[ds[0]],
                       "devices": ds, "time_ms": 0.0, "memory_fraction": 0.0,
                       "bottleneck": "compute", **fields})
    return stages


def _phase(stages_per_replica: list[list[dict]]) -> dict:
    first = stages_per_replica[0]
    return {"replicas": len(stages_per_replica),
            "devices": sum(s["tp"] * s.get("attention_dp", 1) for s in first),
            "time_ms": 0.0, "bottleneck": "compute", "requests_per_s": 0.0,
            "bubble_fraction": 0.0, "stages": [{**s, "devices": list(s["devices"])} for s in first],
            "replica_devices": [[list(s["devices"]) for s in rep] for rep in stages_per_replica]}


def to_plan(pick: Pick, inputs: dict, topology_name: str) -> dict | str:
    """The pick as an unpriced autoplan plan dict, or why it cannot be one.

    ``inputs``: the plan inputs of the case (model, topology, SLOs, dtype, engine ...);
    batch, prefill_batch and placement are set from the pick.
    """
    from autoplan.catalog import load_model, load_topology

    fp, fd = stage_fields(pick.prefill), stage_fields(pick.decode)
    if fp is None or fd is None:
        return NOT_PRICED_EP
    model = load_model(inputs["model"])
    topo = load_topology(topology_name, None, inputs.get("engine"))
    L = model.num_layers
    devs = _Devices(topo)
    try:
        if pick.mode == "agg":
            reps = [_pipeline(devs, pick.decode, fd, L) for _ in range(pick.copies)]
            pre, dec = _phase(reps), _phase(reps)
            placement = "colocated"
            batch, pbatch = pick.decode.global_bs, 1
        else:
            pre_reps, dec_reps = [], []
            for _ in range(pick.copies):
                pre_reps += [_pipeline(devs, pick.prefill, fp, L)
                             for _ in range(pick.prefill_workers)]
                dec_reps += [_pipeline(devs, pick.decode, fd, L)
                             for _ in range(pick.decode_workers)]
            pre, dec = _phase(pre_reps), _phase(dec_reps)
            placement = "disaggregated"
            batch, pbatch = pick.decode.global_bs, pick.prefill.global_bs
    except ValueError as e:
        return f"does not fit the topology: {e}"
    used = {d for ph in (pre, dec) for rep in ph["replica_devices"] for g in rep for d in g}
    return {
        "inputs": {**inputs, "batch": batch, "prefill_batch": pbatch, "placement": "auto"},
        "placement": placement, "status": "feasible", "objective": 0.0,
        "objective_unit": "tokens/s", "best_bound": None, "gap": None, "solve_seconds": 0.0,
        "ttft_ms": 0.0, "tpot_ms": 0.0, "e2e_ms": 0.0, "throughput_tokens_per_s": 0.0,
        "requests_per_s": 0.0, "kv_transfer_ms": 0.0, "devices": len(used),
        "prefill": pre, "decode": dec,
    }


def price(plan: dict) -> dict:
    """Price an unpriced plan with ``autoplan.validate``: its figures are recomputed by
    ``autoplan.evaluate``, written into the plan, and the plan validated again, so the
    errors left are the plan's own rule violations (memory, SLOs, TP domains)."""
    from autoplan import Plan, validate

    first = validate(Plan.load(plan))
    fig = first.figures
    if fig is None:
        return {"ok": False, "errors": first.errors, "figures": None, "plan": plan}
    for name, key in (("prefill", "prefill"), ("decode", "decode")):
        ph = plan[key]
        for k, s in enumerate(ph["stages"]):
            s.update(time_ms=fig.stage_ms[name][k], memory_fraction=fig.stage_fraction[name][k],
                     bottleneck=fig.stage_bottleneck[name][k])
        ph.update(time_ms=fig.prefill_ms if name == "prefill" else fig.tpot_ms,
                  bottleneck=fig.phase_bottleneck[name],
                  requests_per_s=fig.phase_requests_per_s[name],
                  bubble_fraction=fig.bubble_fraction[name])
    plan.update(objective=fig.throughput_tokens_per_s, ttft_ms=fig.ttft_ms, tpot_ms=fig.tpot_ms,
                e2e_ms=fig.e2e_ms, throughput_tokens_per_s=fig.throughput_tokens_per_s,
                requests_per_s=fig.requests_per_s, kv_transfer_ms=fig.kv_transfer_ms,
                ttft_floor_ms=fig.ttft_floor_ms, tpot_floor_ms=fig.tpot_floor_ms,
                tokens_per_s_per_device=fig.tokens_per_s_per_device,
                tokens_per_s_per_user=fig.tokens_per_s_per_user)
    rep = validate(Plan.load(plan))
    f = rep.figures
    return {"ok": rep.ok, "errors": rep.errors, "plan": plan,
            "figures": None if f is None else {
                "ttft_ms": f.ttft_ms, "tpot_ms": f.tpot_ms,
                "throughput_tokens_per_s": f.throughput_tokens_per_s,
                "tokens_per_s_per_device": f.tokens_per_s_per_device,
                "tokens_per_s_per_user": f.tokens_per_s_per_user,
                "memory_fraction": max(x for ph in f.stage_fraction.values() for x in ph)}}
