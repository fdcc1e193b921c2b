"""SGLang: one ``sglang.launch_server`` a replica (a node rank each where it spans hosts)
in ``launch.sh``, and ``sglang_router`` in front of several servers.

A disaggregated plan's prefill and decode servers pass the KV cache over NIXL and take
requests through the router in PD mode; several colocated replicas through the router
over their URLs.
"""

from __future__ import annotations

from autoplan.export.common import (
    ROUTER_PORT,
    SERVER_PORT,
    Command,
    Ctx,
    Engine,
    Export,
    engine_tp,
    parallel_args,
    precision_flags,
    sizing_args,
)
from autoplan.export.flags import SGLANG_DOCS, SGLANG_KV_FP8, SGLANG_PAGE, SGLANG_SIZING
from autoplan.export.limits import check_parallel
from autoplan.export.pools import Pool, split_device
from autoplan.export.script import Row, launch_script, one_host_row

BOOTSTRAP_PORT = 8998  # --disaggregation-bootstrap-port of the first prefill server, up
DIST_PORT = 5000  # --dist-init-addr port of the first server across hosts, counting up


def build(ctx: Ctx, pools: list[Pool]) -> Export:
    check_parallel("sglang", pools)
    prec = precision_flags(ctx, SGLANG_KV_FP8)
    rows: list[Row] = []
    port = SERVER_PORT
    boot = BOOTSTRAP_PORT
    dist = DIST_PORT
    endpoints: dict[str, list[tuple[str, int, int]]] = {"server": [], "prefill": [],
                                                          "decode": []}
    for pool in pools:
        uneven = [r for r in range(pool.phase.replicas) if _uneven(pool, r)]
        if uneven:
            _warn_uneven(ctx, pool, uneven)
        for r in range(pool.phase.replicas):
            if r in uneven:
                continue
            rh = pool.replica_hosts[r]
            base = ["python", "-m", "sglang.launch_server", "--model-path", ctx.model,
                    *sizing_args(ctx, pool, SGLANG_SIZING, SGLANG_PAGE,
                                 engine_tp(pool, "sglang")),
                    *parallel_args(pool, "sglang"), "--page-size", str(SGLANG_PAGE), *prec]
            if pool.role != "server":
                base += ["--disaggregation-mode", pool.role,
                         "--disaggregation-transfer-backend", "nixl"]
                if pool.role == "prefill":
                    base += ["--disaggregation-bootstrap-port", str(boot)]
            # every server listens on all interfaces: a router, a load balancer or a
            # client on another host reaches it (SGLang's default is 127.0.0.1)
            base += ["--host", "0.0.0.0", "--port", str(port)]
            env = pool.partition_env("SGLANG_PP_LAYER_PARTITION")
            if rh is None or len(rh) == 1:
                row, head = one_host_row(pool, r, base, env)
                rows.append(row)
            else:
                head = rh[0][0]
                for k, (h, idx) in enumerate(rh):
                    argv = base + ["--nnodes", str(len(rh)), "--node-rank", str(k),
                                   "--dist-init-addr", f"{head}:{dist}"]
                    note = [pool.title(r)] if k == 0 else []
                    note.append(f"node {k} of {len(rh)} of this server")
                    rows.append((h, note, Command(pool.role, argv, {**pool.visible(idx), **env},
                                                  h, r)))
                dist += 1
            endpoints[pool.role].append((head, port, boot))
            if pool.role == "prefill":
                boot += 1
            port += 1
    return launch_script(ctx, rows, _router(ctx, endpoints), [], SGLANG_DOCS)


def _router(ctx: Ctx, endpoints: dict[str, list[tuple[str, int, int]]]) -> list[Command]:
    """The router in front of the servers, where there is more than one."""
    if ctx.plan.placement == "disaggregated":
        if endpoints["prefill"] and endpoints["decode"]:
            argv = ["python", "-m", "sglang_router.launch_router", "--pd-disaggregation"]
            for h, p, b in endpoints["prefill"]:
                argv += ["--prefill", f"http://{h}:{p}", str(b)]
            for h, p, _ in endpoints["decode"]:
                argv += ["--decode", f"http://{h}:{p}"]
            argv += ["--host", "0.0.0.0", "--port", str(ROUTER_PORT)]
            return [Command("router", argv, {}, None, 0)]
        ctx.warn.append("no router line: one of the two pools is not exported, so the "
                        "exported workers cannot serve requests by themselves")
    elif len(endpoints["server"]) > 1:
        argv = ["python", "-m", "sglang_router.launch_router", "--worker-urls",
                *[f"http://{h}:{p}" for h, p, _ in endpoints["server"]],
                "--host", "0.0.0.0", "--port", str(ROUTER_PORT)]
        return [Command("router", argv, {}, None, 0)]
    return []


def _uneven(pool: Pool, r: int) -> bool:
    """Whether replica ``r`` spans hosts unevenly or out of rank order (SGLang cannot run it)."""
    hosts = pool.replica_hosts[r]
    if hosts is None or len(hosts) < 2:
        return False
    # in rank order when each host's devices are one run (one pass, not hosts x devices)
    runs = 0
    last = None
    for ds in pool.replica_devices[r]:
        for d in ds:
            h = split_device(d)[0]
            runs += h != last
            last = h
    return len({len(idx) for _, idx in hosts}) > 1 or runs != len(hosts)


def _warn_uneven(ctx: Ctx, pool: Pool, uneven: list[int]) -> None:
    n = pool.phase.replicas
    first = pool.replica_hosts[uneven[0]]
    which = (f"the {pool.role} pool" if n == 1 else
             f"replica{'s' * (len(uneven) > 1)} "
             f"{', '.join(str(r + 1) for r in uneven)} of {n} of the {pool.role} pool")
    ctx.warn.append(f"SGLang gives every node the same number of GPUs in rank "
                    f"order, but {which} put{'s' * (len(uneven) == 1)} "
                    f"{', '.join(f'{len(x)} on {h}' for h, x in first)}"
                    f"{' (first of them)' if len(uneven) > 1 else ''}; "
                    f"{'it is' if len(uneven) == 1 else 'they are'} not exported")


ENGINE = Engine("SGLang", build)
