"""Planner speed: wall time and peak RSS per case, and solve time as devices grow.

    python bench/solve_scale.py            # the table (each case in a fresh process)

Prints a markdown table. Targets (issue 3, 2-core machine): 70B on 16xH200 <= 1 s,
DeepSeek-V3 and Qwen3-235B-A22B on 32xH200 <= 3 s, Llama-3.1-405B on 4,096 devices of
4 kinds <= 10 s, flat from 64 to 4,096 devices. Timings are measured, not asserted.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

KINDS = ["h100-sxm", "h200", "b200", "a100-sxm-80gb"]
SLO = dict(isl=4000, osl=500, ttft_slo_ms=2000.0, tpot_slo_ms=30.0)

# Throughput: prefill one prompt at a time; decode as many sequences per replica as the
# TPOT SLO allows on these devices (with the shipped calibration, 30 ms allows batch 4 for
# DeepSeek-V3 and only batch 1 for Qwen3-235B, whose many small expert kernels each pay a
# launch overhead).
THROUGHPUT = {**SLO, "objective": "throughput", "batch": 32, "prefill_batch": 1}

CASES = {
    "Llama-3.1-70B / 16xH200, latency": ("meta-llama/Llama-3.1-70B", ("h200", 2), SLO),
    "Llama-3.1-70B / 16xH200, throughput": ("meta-llama/Llama-3.1-70B", ("h200", 2), THROUGHPUT),
    "DeepSeek-V3 fp8 / 32xH200, latency": ("deepseek-ai/DeepSeek-V3", ("h200", 4),
                                           {**SLO, "dtype": "fp8"}),
    "DeepSeek-V3 fp8 / 32xH200, throughput": ("deepseek-ai/DeepSeek-V3", ("h200", 4),
                                              {**THROUGHPUT, "dtype": "fp8", "batch": 4}),
    "Qwen3-235B-A22B / 32xH200, latency": ("Qwen/Qwen3-235B-A22B", ("h200", 4), SLO),
    "Qwen3-235B-A22B / 32xH200, throughput": ("Qwen/Qwen3-235B-A22B", ("h200", 4),
                                              {**THROUGHPUT, "batch": 1}),
    **{f"Llama-3.1-405B / {n} devices, 4 kinds": ("meta-llama/Llama-3.1-405B", ("mixed", n),
                                                   dict(isl=2048, osl=256))
       for n in (64, 256, 1024, 4096)},
    **{f"Llama-3.1-405B / {n} devices, 4 kinds, throughput": (
        "meta-llama/Llama-3.1-405B", ("mixed", n),
        dict(isl=2048, osl=256, batch=16, prefill_batch=1, objective="throughput",
             ttft_slo_ms=2000.0, tpot_slo_ms=100.0, time_limit_s=30.0))
       for n in (64, 4096)},
}


def topology(spec: tuple[str, int]):
    from autoplan.catalog import builtin_device_kinds, default_calibrations
    from autoplan.graphs.topology import build_topology
    from autoplan.inputs.topology import TopologySpec

    kind, n = spec
    nv = {"kind": "nvlink", "bandwidth_bytes_per_s": 450e9, "latency_s": 2e-6,
          "tensor_parallel": True}
    if kind == "mixed":
        nodes = [{"name": k.replace("-", ""), "count": n // 32,
                  "devices": {"kind": k, "count": 8}, "fabric": nv} for k in KINDS]
    else:
        nodes = [{"name": "node", "count": n, "devices": {"kind": kind, "count": 8}, "fabric": nv}]
    data = {"name": f"{kind}-{n}", "nodes": nodes,
            "networks": [{"name": "ib", "kind": "infiniband", "bandwidth_bytes_per_s": 50e9,
                          "latency_s": 3e-6}]}
    return build_topology(TopologySpec.model_validate(data), builtin_device_kinds(),
                          default_calibrations())


def one(name: str) -> dict:
    from autoplan.errors import InfeasibleError
    from autoplan.search.planner import plan

    model, topo_spec, kw = CASES[name]
    t0 = time.perf_counter()
    topo = topology(topo_spec)
    try:
        p = plan(model, topo, **kw)
        res = {"status": p.status + ("" if p.stop_reason == "completed" else
                                     f" ({p.stop_reason})"), "gap": p.gap, "solve_s": p.solve_seconds,
               "placement": p.placement, "devices": p.devices, "e2e_ms": p.e2e_ms,
               "tok_s": p.throughput_tokens_per_s,
               "replicas": f"{p.prefill.replicas}+{p.decode.replicas}" + (
                   f" (+{len(p.more_designs)} more designs: "
                   f"{'+'.join(str((m.prefill or m.decode).replicas) for m in p.more_designs)})"
                   if p.more_designs else "")}
    except InfeasibleError as e:
        res = {"status": f"infeasible ({e.reason})", "gap": None, "solve_s": None,
               "placement": "-", "devices": 0, "e2e_ms": None, "tok_s": None, "replicas": "-"}
    res["wall_s"] = time.perf_counter() - t0
    res["devices_total"] = len(topo.devices)
    res["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2])))
        return
    print("| case | devices | status | placement | replicas (prefill+decode) | used | "
          "tokens/s | wall s (load+tables+solve) | solver s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in CASES:
        out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        solve = f"{r['solve_s']:.2f}" if r["solve_s"] is not None else "-"
        tok = f"{r['tok_s']:.0f}" if r["tok_s"] is not None else "-"
        print(f"| {name} | {r['devices_total']} | {r['status']} | {r['placement']} | "
              f"{r['replicas']} | {r['devices']} | {tok} | {r['wall_s']:.2f} | {solve} | "
              f"{r['rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
