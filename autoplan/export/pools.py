"""What gets exported from a plan: its pools of engine servers, their replicas and hosts.

A pool is one phase of the plan as one engine process group (the colocated server, or the
prefill and the decode pool of a disaggregated plan). Where an engine cannot run a pool
(devices it does not run on, different TP degrees across the stages of one pipeline, GPUs
of two vendors in one pipeline) the pool is left out and a warning says so.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

from autoplan.catalog import builtin_device_kinds
from autoplan.plan_schema import PhasePlan, Plan

# "<node>.d<k>" (autoplan topologies), "<node>/gpu<k>", "<node>/<k>", "<node>:<k>"
_DEVICE_ID = (re.compile(r"^(.+)\.d(\d+)$"), re.compile(r"^(.+)/gpu(\d+)$"),
              re.compile(r"^(.+)/(\d+)$"), re.compile(r"^(.+):(\d+)$"))


@dataclass
class Pool:
    role: str  # server | prefill | decode
    phase: PhasePlan
    tp: int
    pp: int
    partition: list[int]
    vendor: str
    # per replica: its devices per stage, and (host, local GPU indices) in rank order, or
    # None where the replica is not pinned (device ids name no host, or the plan does not
    # give that replica's devices)
    replica_devices: list[list[list[str]] | None]
    replica_hosts: list[list[tuple[str, list[int]]] | None]
    ep: int = 1  # expert-parallel degree of the MoE layers
    dp: int = 1  # data-parallel attention ranks of tp GPUs each, per stage
    design: int = 1  # which design of its role (2, 3, ...: the plan's more_designs)
    batch: int | None = None  # a more design's own batch (None: the plan's)

    @property
    def label(self) -> str:
        """The role, with the design's number where the role has several designs."""
        return self.role if self.design == 1 else f"{self.role} design {self.design}"

    @property
    def hosts(self) -> list[tuple[str, list[int]]] | None:
        """The first replica's hosts."""
        return self.replica_hosts[0]

    @property
    def gpus(self) -> int:
        return self.tp * self.dp * self.pp

    @property
    def visible_env(self) -> str:
        return "HIP_VISIBLE_DEVICES" if self.vendor == "amd" else "CUDA_VISIBLE_DEVICES"

    def visible(self, idx: list[int]) -> dict[str, str]:
        """The environment that makes local GPUs ``idx`` the visible ones."""
        return {self.visible_env: ",".join(map(str, idx))}

    def partition_env(self, name: str) -> dict[str, str]:
        """The engine's layer-partition variable ``name``, where the pool is a pipeline."""
        return {name: ",".join(map(str, self.partition))} if self.pp > 1 else {}

    @cached_property
    def _cuts(self) -> str:
        """The layer cuts of the pipeline (shared by all replicas: computed once)."""
        st = self.phase.stages
        cuts = [f"[{s.layers[0]}, {s.layers[1]})" for s in (st if len(st) <= 8 else
                                                             [*st[:4], st[-1]])]
        return ", ".join(cuts) if len(st) <= 8 else f"{', '.join(cuts[:4])}, ..., {cuts[-1]}"

    def where(self, replica: int = 0) -> str:
        """Stages, TP, layer cuts and devices of one replica, for a comment line."""
        rep = self.replica_devices[replica]
        devs = [d for ds in rep for d in ds] if rep is not None else []
        shown = (" ".join(devs) if len(devs) <= 8 else f"{' '.join(devs[:4])} ... {devs[-1]}") \
            if rep is not None else "not given by the plan"
        par = (f" x attention DP {self.dp}" if self.dp > 1 else "") + (
            f", EP {self.ep}" if self.ep > 1 else "")
        return (f"{self.pp} stage{'s' * (self.pp != 1)} x TP {self.tp}{par}, layers "
                f"{self._cuts}; devices {shown}")

    def title(self, replica: int) -> str:
        """The comment line that opens a replica's commands."""
        return (f"{self.label} replica {replica + 1} of {self.phase.replicas}: "
                f"{self.where(replica)}")


def split_device(dev: str) -> tuple[str, int] | None:
    """(host, local GPU index) of a device id, or None where the id names no host."""
    for pat in _DEVICE_ID:
        m = pat.match(dev)
        if m:
            return m.group(1), int(m.group(2))
    return None


def pools(plan: Plan, label: str, warn: list[str]) -> list[Pool]:
    """The pools of ``plan`` engine ``label`` can run; a warning for each it cannot."""
    if plan.placement == "colocated":
        def shape(ph: PhasePlan) -> tuple:
            return ([(s.layers, s.device_kind, s.tp, s.ep, s.attention_dp, s.devices)
                     for s in ph.stages],
                    ph.replicas, getattr(ph, "replica_devices", None))

        if shape(plan.prefill) != shape(plan.decode):
            warn.append("colocated plan whose prefill and decode stages differ; "
                        "exporting the prefill stages")
        found = [_pool("server", plan.prefill, label, warn)]
    else:
        found = [_pool("prefill", plan.prefill, label, warn),
                 _pool("decode", plan.decode, label, warn)]
    number = {"server": 1, "prefill": 1, "decode": 1}
    for d in plan.more_designs:  # one pool of servers per more design, after the firsts
        role = "server" if d.pool == "colocated" else d.pool
        number[role] += 1
        pool = _pool(role, d.prefill if d.pool != "decode" else d.decode, label, warn)
        if pool is not None:
            pool.design, pool.batch = number[role], d.batch
        found.append(pool)
    if len({tuple(d.kv_to) for d in plan.more_designs if d.pool == "prefill"}
           | {tuple(sorted({s.device_kind for s in plan.decode.stages}))}) > 1:
        warn.append("the plan's prefill designs send their KV to decode designs of different "
                    "device kinds; the exported router does not keep each prompt within its "
                    "group, so route by hand to keep the planned KV paths")
    return [p for p in found if p is not None]


def _vendor(kind: str) -> str | None:
    """nvidia / amd for GPUs, None for other accelerators, 'unknown' for custom kinds."""
    spec = builtin_device_kinds().get(kind)
    if spec is None:
        return "unknown"
    if spec.description.startswith("NVIDIA"):
        return "nvidia"
    if spec.description.startswith("AMD"):
        return "amd"
    return None


def _hosts(stage_devices: list[list[str]]) -> list[tuple[str, list[int]]] | None:
    """(host, local indices) of one replica's devices, hosts in rank order; None if unmappable."""
    out: dict[str, list[int]] = {}
    for devs in stage_devices:
        for d in devs:
            hd = split_device(d)
            if hd is None:
                return None
            out.setdefault(hd[0], []).append(hd[1])
    return list(out.items())


def _replica_devices(phase: PhasePlan, what: str,
                     warn: list[str]) -> list[list[list[str]] | None]:
    """Devices per stage of every replica, from ``replica_devices``; None for a replica whose
    devices the plan does not give consistently (it is exported unpinned, with a warning)."""
    first = [list(s.devices) for s in phase.stages]
    rd = [[list(d) for d in rep] for rep in (getattr(phase, "replica_devices", None) or [])]
    problem = None
    if len(rd) != phase.replicas:
        problem = f"lists {len(rd)} replica{'s' * (len(rd) != 1)}"
    elif rd[0] != first:
        problem = "gives a first replica other than its stages"
    elif any([len(d) for d in rep] != [len(d) for d in first] for rep in rd):
        problem = "gives a replica a different number of devices per stage"
    else:
        seen = Counter(d for rep in rd for devs in rep for d in devs)
        dup = sorted(d for d, n in seen.items() if n > 1)
        if dup:
            problem = f"puts device{'s' * (len(dup) > 1)} {', '.join(dup[:4])} in two replicas"
    if problem is None:
        return rd
    if phase.replicas > 1:
        warn.append(f"{what} has {phase.replicas} replicas but its replica_devices {problem}; "
                    f"replicas 2..{phase.replicas} are exported without device pinning")
    return [first] + [None] * (phase.replicas - 1)


def _pool(role: str, phase: PhasePlan, label: str, warn: list[str]) -> Pool | None:
    name = "colocated" if role == "server" else role
    kinds = list(dict.fromkeys(s.device_kind for s in phase.stages))
    vendors = {k: _vendor(k) for k in kinds}
    tps = [s.tp for s in phase.stages]
    devices = sum(len(s.devices) for s in phase.stages)
    kinds_text = ", ".join(kinds)
    what = (f"the {name} pool ({devices} {kinds_text} devices in {len(tps)} "
            f"stage{'s' * (len(tps) != 1)})")
    bad = [k for k, v in vendors.items() if v is None]
    if bad:
        warn.append(f"{label} cannot run on {', '.join(bad)} devices; {what} is not exported")
        return None
    for k, v in vendors.items():
        if v == "unknown":
            warn.append(f"device kind {k!r} is not a built-in kind: autoplan cannot tell whether "
                        f"{label} runs on it; {what} is exported as if it were a CUDA GPU")
    if len({v for v in vendors.values() if v != "unknown"}) > 1:
        warn.append(f"{what} mixes GPU vendors ({kinds_text}) in one pipeline, and one "
                    f"engine process group cannot span CUDA and ROCm GPUs; it is not exported")
        return None
    if len(set(tps)) > 1:
        warn.append(f"{label} runs one tensor-parallel degree in every stage of a pipeline, but "
                    f"{what} uses TP {', '.join(map(str, tps))}; it is not exported (the largest "
                    f"TP would need devices the plan does not give it, the smallest would not "
                    f"hold the weights the plan sized); re-plan that pool with one TP degree")
        return None
    for what_par, vals in (("expert-parallel", [s.ep for s in phase.stages]),
                           ("attention data-parallel", [s.attention_dp for s in phase.stages])):
        if len(set(vals)) > 1:
            warn.append(f"{label} runs one {what_par} degree per server, but {what} uses "
                        f"{', '.join(map(str, vals))}; it is not exported")
            return None
    if len(kinds) > 1:
        warn.append(f"{what} mixes device kinds ({kinds_text}) in one pipeline; {label} has no "
                    f"per-stage device setting, so it is exported as one engine that treats "
                    f"every stage alike (one memory fraction, one batch limit)")
    per_replica = _replica_devices(phase, what, warn)
    hosts = [_hosts(rep) if rep is not None else None for rep in per_replica]
    unmapped = [r for r, rep in enumerate(per_replica) if rep is not None and hosts[r] is None]
    if unmapped:
        dev = next(d for ds in per_replica[unmapped[0]] for d in ds if split_device(d) is None)
        reps = ("" if phase.replicas == 1 else
                f" (replica{'s' * (len(unmapped) > 1)} {', '.join(str(r + 1) for r in unmapped)})")
        warn.append(f"the device ids of {what}{reps} ({dev}, ...) do not name a host and a "
                    f"local GPU index ('<node>.d<k>' or '<node>/gpu<k>'); its commands are "
                    f"not pinned to devices")
    vendor = next((v for v in vendors.values() if v != "unknown"), "nvidia")
    return Pool(role, phase, tps[0], len(tps),
                [s.layers[1] - s.layers[0] for s in phase.stages], vendor, per_replica, hosts,
                phase.stages[0].ep, phase.stages[0].attention_dp)
