"""Topology input: shipped files, fast domains, link bandwidths, collectives, max flow
between pools, and the errors bad files raise."""

from __future__ import annotations

import textwrap

import networkx as nx
import pytest

from autoplan.catalog import list_topologies, load_topology
from autoplan.errors import InputError

TOPOLOGIES = list_topologies()


def test_catalog_is_not_empty():
    assert len(TOPOLOGIES) >= 10


@pytest.fixture(scope="module")
def topo():
    cache: dict = {}

    def get(name):
        if name not in cache:
            cache[name] = load_topology(name)
        return cache[name]

    return get


# ---------------------------------------------------------------- shipped files


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_shipped_topology_loads_with_yaml_device_counts(name, topo, topology_yaml):
    t, y = topo(name), topology_yaml(name)
    assert t.name == y["name"]
    expected: dict[str, int] = {}
    for g in y["nodes"]:
        kind = g["devices"]["kind"]
        expected[kind] = expected.get(kind, 0) + g.get("count", 1) * g["devices"]["count"]
    assert len(t.devices) == sum(expected.values())
    assert {k: len(t.devices_of_kind(k)) for k in t.kind_names} == expected
    assert nx.is_connected(t.graph)
    # Every device has a fitted or borrowed calibration and at least one memory tier.
    for k in t.kind_names:
        assert t.calibration(k).memory_efficiency > 0
        assert t.kinds[k].capacity_bytes > 0
    # Fast domains partition the devices.
    in_domains = [d for dom in t.fast_domains for d in dom.devices]
    assert sorted(in_domains) == sorted(t.devices)


@pytest.mark.parametrize("name,sizes", [
    ("h100-sxm-x8", [8]),
    ("h100-sxm-4node", [8, 8, 8, 8]),
    ("lpu-576", [576]),
    ("h100-sxm-x1", [1]),
    ("l40s-x8", [8]),
    ("gb200-nvl72", [72]),
])
def test_fast_domains(name, sizes, topo):
    t = topo(name)
    assert [d.size for d in t.fast_domains] == sizes


def test_lpu_tensor_parallel_spans_nodes(topo):
    t = topo("lpu-576")
    (dom,) = t.fast_domains
    nodes = {t.graph.nodes[d]["node"] for d in dom.devices}
    assert len(nodes) > 1  # TP may span the 8-chip nodes
    assert t.max_fast_domain("lpu") == 576


def test_heterogeneous_fast_domains(topo):
    t = topo("h100x8-lpu576")
    assert set(t.kind_names) == {"h100-sxm", "lpu"}
    assert [d.size for d in t.domains_of_kind("lpu")] == [576]
    assert [d.size for d in t.domains_of_kind("h100-sxm")] == [8]
    for d in t.fast_domains:
        assert {t.device_kind_of(x) for x in d.devices} == {d.kind}


# ---------------------------------------------------------------- bandwidths


# PyYAML reads "450.0e9" (no exponent sign) as a string; pydantic coerces it, so do we.
def _fabric_bw(y: dict, group: str) -> float:
    g = next(g for g in y["nodes"] if g["name"] == group)
    return float(g["fabric"]["bandwidth_bytes_per_s"])


def _network_bw(y: dict, name: str) -> float:
    return float(next(n for n in y["networks"] if n["name"] == name)["bandwidth_bytes_per_s"])


@pytest.mark.parametrize("name", ["h100-sxm-x8", "h100-sxm-4node", "l40s-x8", "mi300x-x8"])
def test_intra_node_bandwidth_is_fabric(name, topo, topology_yaml):
    t, y = topo(name), topology_yaml(name)
    group = y["nodes"][0]["name"]
    bw, lat = t.path(f"{group}0.d0", f"{group}0.d1")
    assert bw == _fabric_bw(y, group)
    assert lat > 0
    assert t.group_link(t.fast_domains[0].devices)[0] == _fabric_bw(y, group)


def test_inter_node_bandwidth_is_infiniband(topo, topology_yaml):
    t, y = topo("h100-sxm-4node"), topology_yaml("h100-sxm-4node")
    ib = _network_bw(y, "ib")
    assert ib < _fabric_bw(y, "node")
    for a, b in [("node0.d0", "node1.d0"), ("node0.d3", "node3.d7"), ("node2.d5", "node1.d5")]:
        assert t.path(a, b)[0] == ib
    # Crossing nodes is slower in latency too.
    assert t.path("node0.d0", "node1.d0")[1] > t.path("node0.d0", "node0.d1")[1]
    # A ring over devices of two nodes is limited by the network.
    assert t.group_link(("node0.d0", "node0.d1", "node1.d0", "node1.d1"))[0] == ib


# ---------------------------------------------------------------- collectives


def test_allreduce_monotone(topo):
    t = topo("h100-sxm-x8")
    devs = t.devices
    sizes = [1e3, 1e5, 1e7, 1e9]
    times = [t.allreduce_time_s(devs[:4], s) for s in sizes]
    assert all(a < b for a, b in zip(times, times[1:])), times
    by_group = [t.allreduce_time_s(devs[:g], 1e7) for g in (2, 4, 8)]
    assert all(a < b for a, b in zip(by_group, by_group[1:])), by_group
    assert t.allreduce_time_s(devs[:1], 1e9) == 0.0
    assert t.allreduce_time_s((), 1e9) == 0.0


def test_allreduce_slower_over_network(topo):
    t = topo("h100-sxm-4node")
    inside = t.allreduce_time_s(("node0.d0", "node0.d1"), 1e8)
    across = t.allreduce_time_s(("node0.d0", "node1.d0"), 1e8)
    assert across > inside


def test_allreduce_bandwidth_term_physical(topo, topology_yaml):
    """A ring all-reduce moves at least 2(t-1)/t of the message through each link."""
    t, y = topo("l40s-x8"), topology_yaml("l40s-x8")
    bw = _fabric_bw(y, "node")
    for g in (2, 4, 8):
        m = 1e9
        assert t.allreduce_time_s(t.devices[:g], m) >= 2 * (g - 1) / g * m / bw


def test_p2p(topo):
    t = topo("h100-sxm-4node")
    assert t.p2p_time_s("node0.d0", "node0.d1", 1e6) > 0
    assert t.p2p_time_s("node0.d0", "node1.d0", 1e6) > t.p2p_time_s("node0.d0", "node0.d1", 1e6)
    assert t.p2p_time_s("node0.d0", "node0.d1", 0) > 0  # latency and launch remain
    assert t.p2p_time_s("node0.d0", "node0.d0", 1e6) == 0.0


# ---------------------------------------------------------------- pools


def test_gpu_to_lpu_flow_limited_by_ethernet(topo, topology_yaml):
    t, y = topo("h100x8-lpu576"), topology_yaml("h100x8-lpu576")
    eth = _network_bw(y, "dc-ethernet")
    gpus = list(t.devices_of_kind("h100-sxm"))
    lpus = list(t.devices_of_kind("lpu"))
    for k in (1, 3):
        flow, lat = t.bottleneck_between(gpus, lpus[:k])
        # Every byte leaves a GPU through its Ethernet link; the LPU side has more.
        assert flow == pytest.approx(len(gpus) * eth)
        assert flow < _fabric_bw(y, "gpu") * len(gpus)
        assert lat > 0
    # One GPU can fan out over NVLink to every GPU's NIC (as NCCL's PXN does), so its
    # flow is still the node's total Ethernet bandwidth, not its own link's.
    one, _ = t.bottleneck_between(gpus[:1], lpus[:3])
    assert one == pytest.approx(min(len(gpus) * eth, _fabric_bw(y, "gpu") + eth))
    # Between LPU chips the c2c links, not Ethernet, carry the flow.
    lpu_flow, _ = t.bottleneck_between(lpus[:1], lpus[8:9])
    assert lpu_flow > eth


def test_flow_between_overlapping_pools_is_unbounded(topo):
    t = topo("h100-sxm-x8")
    assert t.bottleneck_between(list(t.devices[:2]), list(t.devices[1:3]))[0] == float("inf")


# ---------------------------------------------------------------- bad files

GOOD = """
name: tiny
nodes:
  - name: node
    devices: {kind: h100-sxm, count: 2}
    fabric: {kind: nvlink, bandwidth_bytes_per_s: 450.0e9, latency_s: 2.0e-6, tensor_parallel: true}
"""

BAD = {
    "zero bandwidth": (GOOD.replace("450.0e9", "0"), "bandwidth"),
    "negative bandwidth": (GOOD.replace("450.0e9", "-1.0e9"), "bandwidth"),
    "zero capacity": ("""
name: tiny
device_kinds:
  chip:
    peak_flops_per_s: {bf16: 1.0e15}
    memory_tiers: [{name: hbm, capacity_bytes: 0, bandwidth_bytes_per_s: 1.0e12}]
nodes:
  - name: node
    devices: {kind: chip, count: 1}
""", "capacity"),
    "unknown field": (GOOD.replace("name: tiny", "name: tiny\ncolour: blue"), "colour"),
    "unknown device kind": (GOOD.replace("h100-sxm", "h999"), "h999"),
    "malformed yaml": ("name: tiny\nnodes: [ {name: node\n  devices: {", "YAML"),
    "unknown node group": (GOOD + """
networks:
  - name: ib
    kind: infiniband
    bandwidth_bytes_per_s: 50.0e9
    latency_s: 3.0e-6
    node_groups: [nosuch]
""", "nosuch"),
    "no fabric": ("""
name: tiny
nodes:
  - name: node
    devices: {kind: h100-sxm, count: 2}
""", "fabric"),
    "not a mapping": ("- a\n- b\n", "mapping"),
    "no nodes": ("name: tiny\nnodes: []\n", "nodes"),
}


def test_good_topology_loads(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(GOOD)
    t = load_topology(str(p))
    assert len(t.devices) == 2 and t.max_fast_domain("h100-sxm") == 2


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_topology_raises_input_error(case, tmp_path):
    text, needle = BAD[case]
    p = tmp_path / "bad.yaml"
    p.write_text(textwrap.dedent(text))
    with pytest.raises(InputError) as ei:
        load_topology(str(p))
    msg = str(ei.value)
    print(f"{case}: {msg}")
    assert needle.lower() in msg.lower()
    assert "\n" not in msg.strip()


def test_disconnected_topology_raises(tmp_path):
    p = tmp_path / "split.yaml"
    p.write_text(GOOD.replace("    devices: {kind: h100-sxm, count: 2}",
                              "    count: 2\n    devices: {kind: h100-sxm, count: 2}"))
    with pytest.raises(InputError, match="connected"):
        load_topology(str(p))
