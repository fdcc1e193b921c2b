"""KV-cache hand-off physics: bytes a prefill pass leaves behind and the links that carry
them from the prefill pool to the decode pool."""

from __future__ import annotations

from autoplan.cost.pipeline import StagePlacement
from autoplan.cost.roofline import (
    kv_bytes_per_token_layer,
)
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.workload import Workload


def kv_pair_bandwidth(topo: Topology, kind_from: str, kind_to: str) -> tuple[float, float]:
    """Per-device (bandwidth, latency) of the KV hand-off path between two kinds.

    From the first device of ``kind_from`` to the last device of ``kind_to`` (another
    device, in another domain where there is one): the conservative path of the pair.
    """
    a = topo.devices_of_kind(kind_from)[0]
    cands = [d for d in topo.devices_of_kind(kind_to) if d != a]
    if not cands:
        return float("inf"), 0.0
    return topo.path(a, cands[-1])


def kv_link_bandwidth(topo: Topology, kinds_from, kinds_to) -> float:
    """Per-device KV bandwidth between two pools: their slowest pair of kinds."""
    return min(kv_pair_bandwidth(topo, a, b)[0] for a in sorted(kinds_from)
               for b in sorted(kinds_to))


def kv_stage_bytes(model: ModelSpec, work: Workload, layers: int) -> float:
    """KV cache of one prefill pass's prompts for ``layers`` layers (the whole cache)."""
    return work.pb * work.isl * kv_bytes_per_token_layer(model, 1, work.precision) * layers


def kv_stage_time_s(model: ModelSpec, topo: Topology, work: Workload, layers: int, tp: int,
                    kind_from: str, kind_to: str) -> float:
    """A prefill stage ships its layers' KV over its ``tp`` devices' links in parallel
    (``tp``: all the stage's devices, its data-parallel ranks included)."""
    bw, lat = kv_pair_bandwidth(topo, kind_from, kind_to)
    return kv_stage_bytes(model, work, layers) / (tp * bw) + lat




def kv_link_bytes_per_s(topo: Topology, pre: list[StagePlacement], dec: list[StagePlacement],
                        replicas: tuple[int, int]) -> float:
    """KV bandwidth between the pools: every prefill device sends and every decode device
    receives at its kinds' per-device path bandwidth; the smaller side bounds the flow."""
    bw = kv_link_bandwidth(topo, {s.kind for s in pre}, {s.kind for s in dec})
    return min(replicas[0] * sum(s.size for s in pre), replicas[1] * sum(s.size for s in dec)) * bw
