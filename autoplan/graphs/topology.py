"""Topology input: device kinds, devices, fabrics and networks, as a networkx Graph.

A topology YAML names device kinds (or uses the built-in ones from
``hardware/device_kinds.yaml``), groups of identical nodes, each node with its devices
and an intra-node fabric (NVSwitch, NVLink mesh, PCIe, chip-to-chip), and networks that
join nodes (InfiniBand, Ethernet, chip-to-chip). Links marked ``tensor_parallel: true``
are fast enough for tensor parallelism; the connected components over them are the
*fast domains*.

The graph has one vertex per device (``type="device"``) and one per fabric or network
switch (``type="switch"``); every edge carries ``bandwidth_bytes_per_s`` (per device, per
direction), ``latency_s``, ``kind`` and ``tensor_parallel``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import ValidationError

from autoplan.errors import InputError, first_error
from autoplan.inputs.reading import read_text
from autoplan.inputs.safe_yaml import MAX_YAML_BYTES, YAML_ERRORS, safe_load_yaml, yaml_problem
from autoplan.inputs.topology import Calibration, DeviceKind, LinkSpec, TopologySpec


@dataclass(frozen=True)
class FastDomain:
    """Devices of one kind joined by tensor-parallel links, in canonical order."""

    index: int
    kind: str
    devices: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.devices)


@dataclass
class Topology:
    """A validated topology with its graph and derived queries."""

    spec: TopologySpec
    kinds: dict[str, DeviceKind]
    graph: nx.Graph
    _pair_cache: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def devices(self) -> tuple[str, ...]:
        return tuple(n for n, d in self.graph.nodes(data=True) if d["type"] == "device")

    def device_kind_of(self, device: str) -> str:
        return self.graph.nodes[device]["kind"]

    def devices_of_kind(self, kind: str) -> tuple[str, ...]:
        return tuple(d for d in self.devices if self.device_kind_of(d) == kind)

    @cached_property
    def kind_names(self) -> tuple[str, ...]:
        seen: list[str] = []
        for d in self.devices:
            k = self.device_kind_of(d)
            if k not in seen:
                seen.append(k)
        return tuple(seen)

    @cached_property
    def fast_domains(self) -> tuple[FastDomain, ...]:
        """Components over tensor-parallel links, split by device kind, in device order."""
        fast = nx.Graph()
        fast.add_nodes_from(self.graph.nodes)
        fast.add_edges_from((u, v) for u, v, d in self.graph.edges(data=True)
                            if d["tensor_parallel"])
        order = {d: i for i, d in enumerate(self.devices)}
        groups: list[tuple[str, tuple[str, ...]]] = []
        for comp in nx.connected_components(fast):
            devs = sorted((n for n in comp if n in order), key=order.__getitem__)
            by_kind: dict[str, list[str]] = {}
            for d in devs:
                by_kind.setdefault(self.device_kind_of(d), []).append(d)
            groups += [(k, tuple(v)) for k, v in by_kind.items()]
        groups.sort(key=lambda g: order[g[1][0]])
        return tuple(FastDomain(i, k, devs) for i, (k, devs) in enumerate(groups))

    @cached_property
    def domain_of(self) -> dict[str, int]:
        """Fast-domain index of every device."""
        return {d: dom.index for dom in self.fast_domains for d in dom.devices}

    def domains_of_kind(self, kind: str) -> tuple[FastDomain, ...]:
        return tuple(d for d in self.fast_domains if d.kind == kind)

    def max_fast_domain(self, kind: str) -> int:
        return max((d.size for d in self.domains_of_kind(kind)), default=0)

    @cached_property
    def _widest_tree(self) -> nx.Graph:
        # On a maximum spanning tree the path between two vertices is a widest path.
        return nx.maximum_spanning_tree(self.graph, weight="bandwidth_bytes_per_s")

    def path(self, a: str, b: str) -> tuple[float, float]:
        """(bandwidth of the widest route, latency of the quickest route) between devices."""
        if a == b:
            return float("inf"), 0.0
        key = (a, b) if a < b else (b, a)
        hit = self._pair_cache.get(key)
        if hit is not None:
            return hit
        try:
            nodes = nx.shortest_path(self._widest_tree, a, b)
        except nx.NetworkXNoPath:
            raise InputError(f"topology {self.name!r}: no path between {a} and {b}") from None
        bw = min(self.graph.edges[u, v]["bandwidth_bytes_per_s"] for u, v in zip(nodes, nodes[1:]))
        lat = nx.shortest_path_length(self.graph, a, b, weight="latency_s")
        self._pair_cache[key] = (bw, lat)
        return bw, lat

    def paths_from(self, a: str) -> dict[str, tuple[float, float]]:
        """:meth:`path` from ``a`` to every reachable node, in one traversal each of the
        widest tree and the latency graph (and into the pair cache)."""
        lat = nx.single_source_dijkstra_path_length(self.graph, a, weight="latency_s")
        bw = {a: float("inf")}
        for u, v in nx.bfs_edges(self._widest_tree, a):
            bw[v] = min(bw[u], self.graph.edges[u, v]["bandwidth_bytes_per_s"])
        out = {}
        for d, b in bw.items():
            if d != a and d in lat:
                out[d] = (b, lat[d])
                self._pair_cache.setdefault((a, d) if a < d else (d, a), out[d])
        return out

    def group_link(self, group: tuple[str, ...] | list[str]) -> tuple[float, float]:
        """(bottleneck bandwidth, worst latency) around a ring over ``group``."""
        if len(group) < 2:
            return float("inf"), 0.0
        ring = list(group) + [group[0]]
        bws, lats = zip(*(self.path(a, b) for a, b in zip(ring, ring[1:])))
        return min(bws), max(lats)

    def bottleneck_between(self, src: list[str], dst: list[str]) -> tuple[float, float]:
        """(aggregate bandwidth, latency) from one pool to another.

        Devices move data in parallel: the aggregate is the max flow from the source pool
        to the destination pool over the graph (edge capacity = per-direction bandwidth).
        """
        if set(src) & set(dst):
            return float("inf"), 0.0
        flow_graph = nx.DiGraph()
        for u, v, d in self.graph.edges(data=True):
            flow_graph.add_edge(u, v, capacity=d["bandwidth_bytes_per_s"])
            flow_graph.add_edge(v, u, capacity=d["bandwidth_bytes_per_s"])
        for s in src:
            flow_graph.add_edge("__src__", s, capacity=float("inf"))
        for t in dst:
            flow_graph.add_edge(t, "__dst__", capacity=float("inf"))
        value = nx.maximum_flow_value(flow_graph, "__src__", "__dst__")
        latency = max(self.path(src[0], t)[1] for t in dst[:1]) if dst else 0.0
        return value, latency

    def allreduce_time_s(self, group: tuple[str, ...] | list[str], message_bytes: float) -> float:
        """All-reduce of ``message_bytes`` over ``group``.

        ``2(t-1)/t * M / B + 2 ceil(log2 t) * latency + launch``: the ring's bandwidth
        term with ``B`` the ring's bottleneck bandwidth, and the latency of a tree
        (NCCL, and scheduled fabrics, use trees or in-switch reduction for the small
        messages of inference, so latency grows with log t, not with t), plus the device
        kind's fixed collective cost ``collective_launch_s`` (``hardware/calibration.yaml``).
        """
        t = len(group)
        if t < 2:
            return 0.0
        bw, lat = self.group_link(group)
        launch = self.calibration(self.device_kind_of(group[0])).collective_launch_s
        steps = math.ceil(math.log2(t))
        return 2 * (t - 1) / t * message_bytes / bw + 2 * steps * lat + launch

    def p2p_time_s(self, a: str, b: str, message_bytes: float) -> float:
        """Send ``message_bytes`` from device ``a`` to device ``b``."""
        if a == b:
            return 0.0
        bw, lat = self.path(a, b)
        launch = self.calibration(self.device_kind_of(a)).collective_launch_s
        return message_bytes / bw + lat + launch

    def with_calibration(self, calibrations: dict[str, Calibration]) -> Topology:
        """The same topology with other calibration for the named kinds (graph shared)."""
        kinds = {k: v.model_copy(update={"calibration": calibrations.get(k, v.calibration)})
                 for k, v in self.kinds.items()}
        return Topology(spec=self.spec, kinds=kinds, graph=self.graph, _pair_cache=self._pair_cache)

    def calibration(self, kind: str) -> Calibration:
        cal = self.kinds[kind].calibration
        assert cal is not None  # filled by build_topology
        return cal


def _same_as_builtin(topology: str, name: str, given: DeviceKind, builtin: DeviceKind) -> None:
    """A topology may repeat a built-in kind's definition, not change it: plans, exports
    and the engines' kernel data know the kind by its name (a custom kind gets a name of
    its own, and export says engines cannot be told its figures)."""
    def figures(kind: DeviceKind) -> dict:
        d = kind.model_dump(exclude={"calibration", "description", "source"})
        for ref in ("calibrate_like", "kernels_like"):  # itself: the built-in's own data
            if d.get(ref) == name:
                d[ref] = None
        d["memory_tiers"] = [{k: v for k, v in t.items() if k != "name"}
                             for t in d["memory_tiers"]]  # a tier's name is no figure
        return d

    a, b = figures(given), figures(builtin)
    changed = sorted(k for k in a if a[k] != b.get(k))
    if changed or given.calibration not in (None, builtin.calibration):
        fields = ", ".join(changed) or "calibration"
        raise InputError(f"topology {topology!r}: device kind {name!r} is a built-in kind, and "
                         f"this file defines it differently ({fields}); leave it out of "
                         f"device_kinds to use the built-in, or give a kind of your own "
                         f"figures a name of its own")


def build_topology(spec: TopologySpec, builtin_kinds: dict[str, DeviceKind] | None = None,
                   calibrations: dict[str, Calibration] | None = None) -> Topology:
    """Expand node groups into a graph and resolve device kinds and their calibration."""
    builtin_kinds = builtin_kinds or {}
    calibrations = calibrations or {}
    kinds: dict[str, DeviceKind] = {}
    for group in spec.nodes:
        name = group.devices.kind
        if name in kinds:
            continue
        kind = spec.device_kinds.get(name) or builtin_kinds.get(name)
        if name in spec.device_kinds and name in builtin_kinds:
            _same_as_builtin(spec.name, name, spec.device_kinds[name], builtin_kinds[name])
        if kind is None:
            raise InputError(
                f"topology {spec.name!r}: unknown device kind {name!r} (define it under "
                f"device_kinds or use one of: {', '.join(sorted(builtin_kinds))})"
            )
        known = set(builtin_kinds) | set(spec.device_kinds)
        for ref in ("calibrate_like", "kernels_like"):
            if getattr(kind, ref) is not None and getattr(kind, ref) not in known:
                raise InputError(f"topology {spec.name!r}: device kind {name!r} has {ref} "
                                 f"{getattr(kind, ref)!r}, which is no device kind")
        if kind.calibration is None:
            cal = calibrations.get(name) or _generic_calibration(name, kind, calibrations)
            kind = kind.model_copy(update={"calibration": cal})
        kinds[name] = kind

    g = nx.Graph(name=spec.name)
    members: dict[str, list[str]] = {}
    for group in spec.nodes:
        members[group.name] = []
        if group.devices.count > 1 and group.fabric is None:
            raise InputError(
                f"topology {spec.name!r}: node group {group.name!r} has "
                f"{group.devices.count} devices but no fabric joining them"
            )
        for i in range(group.count):
            node = f"{group.name}{i}"
            switch = f"{node}.fabric"
            if f"{node}.d0" in g:  # e.g. group "a" (count 11) and group "a1" both make "a10"
                raise InputError(f"topology {spec.name!r}: node name {node!r} is made twice; "
                                 f"rename node group {group.name!r}")
            if group.fabric is not None:
                g.add_node(switch, type="switch", kind=group.fabric.kind, node=node)
            for j in range(group.devices.count):
                dev = f"{node}.d{j}"
                g.add_node(dev, type="device", kind=group.devices.kind, node=node)
                members[group.name].append(dev)
                if group.fabric is not None:
                    _add_link(g, dev, switch, group.fabric)
    for net in spec.networks:
        switch = f"net.{net.name}"
        g.add_node(switch, type="switch", kind=net.kind, node=None)
        for gname in net.node_groups or list(members):
            for dev in members[gname]:
                _add_link(g, dev, switch, net)
    if not nx.is_connected(g):
        raise InputError(f"topology {spec.name!r}: devices are not all connected; add a network")
    return Topology(spec=spec, kinds=kinds, graph=g)


def _add_link(g: nx.Graph, dev: str, switch: str, link: LinkSpec) -> None:
    # A device-to-device path crosses two such edges, so each carries half the latency.
    g.add_edge(dev, switch, bandwidth_bytes_per_s=link.bandwidth_bytes_per_s,
               latency_s=link.latency_s / 2, kind=link.kind,
               tensor_parallel=link.tensor_parallel)


def _generic_calibration(name: str, kind: DeviceKind,
                         calibrations: dict[str, Calibration]) -> Calibration:
    """Calibration for a kind the profile does not name.

    The kind's ``calibrate_like`` if it names one; else an SRAM-only chip borrows the
    LPU's parameters and anything else the H100's: the closest measured devices. Users
    with measurements fit their own with ``autoplan calibrate``.
    """
    sram_only = all("sram" in t.name.lower() for t in kind.memory_tiers)
    like = kind.calibrate_like or ("lpu" if sram_only else "h100-sxm")
    ref = calibrations.get(like)
    if ref is None:
        raise InputError(f"device kind {name!r} has no calibration, and {like!r}, whose it "
                         f"would borrow (calibrate_like), has none either")
    return ref


def parse_topology_yaml(text: str, origin: str,
                        builtin_kinds: dict[str, DeviceKind] | None = None,
                        calibrations: dict[str, Calibration] | None = None) -> Topology:
    """Safe-load and validate topology YAML; errors are one line naming ``origin``."""
    try:
        data: Any = safe_load_yaml(text)
    except YAML_ERRORS as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"topology {origin!r} is not valid YAML{where}{yaml_problem(e)}") \
            from None
    if not isinstance(data, dict):
        raise InputError(f"topology {origin!r} must be a YAML mapping")
    try:
        spec = TopologySpec.model_validate(data)
    except ValidationError as e:
        raise InputError(f"topology {origin!r}: {first_error(e)}") from None
    return build_topology(spec, builtin_kinds, calibrations)


def load_topology_file(path: str | Path, builtin_kinds: dict[str, DeviceKind] | None = None,
                       calibrations: dict[str, Calibration] | None = None) -> Topology:
    p = Path(path)
    text = read_text(p, "topology", MAX_YAML_BYTES)  # a regular file, bounded
    return parse_topology_yaml(text, str(p), builtin_kinds, calibrations)
