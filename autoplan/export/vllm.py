"""vLLM: one ``vllm serve`` a replica in ``launch.sh``, a Ray cluster where one spans hosts.

Several colocated replicas are independent servers behind a load balancer of the user's
choice; a disaggregated plan's prefill and decode servers pass the KV cache over the
NixlConnector and take requests through vLLM's example proxy.
"""

from __future__ import annotations

import json

from autoplan.export.common import (
    HOST_IP,
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
from autoplan.export.flags import VLLM_BLOCK, VLLM_DOCS, VLLM_DP_LB_DOC, VLLM_KV_FP8, VLLM_SIZING
from autoplan.export.limits import check_limits, check_parallel
from autoplan.export.pools import Pool
from autoplan.export.script import Row, launch_script, one_host_row

NIXL_PORT = 5600  # VLLM_NIXL_SIDE_CHANNEL_PORT of the first server, counting up
RAY_PORT = 6379  # the first Ray head's, counting up
DP_RPC_PORT = 13345  # --data-parallel-rpc-port of the first multi-host DP server, counting up


def build(ctx: Ctx, pools: list[Pool]) -> Export:
    if ctx.plan.placement == "disaggregated":
        check_limits("vllm", pools)
    check_parallel("vllm", pools)
    prec = precision_flags(ctx, VLLM_KV_FP8)
    rows: list[Row] = []
    port = SERVER_PORT
    instance = 0
    ray_port = RAY_PORT
    endpoints: dict[str, list[tuple[str, int]]] = {"server": [], "prefill": [], "decode": []}
    ray_hosts: dict[str, int] = {}
    for pool in pools:
        for r in range(pool.phase.replicas):
            hosts = pool.replica_hosts[r]
            argv = ["vllm", "serve", ctx.model,
                    *sizing_args(ctx, pool, VLLM_SIZING, VLLM_BLOCK, engine_tp(pool, "vllm"),
                                 per_rank=True),
                    *parallel_args(pool, "vllm"), *prec]
            env = pool.partition_env("VLLM_PP_LAYER_PARTITION")
            if pool.role != "server":
                role = "kv_producer" if pool.role == "prefill" else "kv_consumer"
                argv += ["--kv-transfer-config",
                         json.dumps({"kv_connector": "NixlConnector", "kv_role": role},
                                    separators=(",", ":"))]
                env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(NIXL_PORT + instance)
                env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = HOST_IP
            if hosts is None or len(hosts) == 1:
                row, head = one_host_row(pool, r, argv + ["--host", "0.0.0.0",
                                                          "--port", str(port)], env)
                rows.append(row)
            elif pool.dp > 1:  # whole DP ranks per host (export/limits.py checks it)
                head = hosts[0][0]
                rows += _dp_rows(pool, r, argv, env, port, DP_RPC_PORT + instance)
            else:
                head = hosts[0][0]
                argv += ["--distributed-executor-backend", "ray", "--host", "0.0.0.0",
                         "--port", str(port)]
                rows += _ray_rows(ctx, pool, r, argv, env, ray_port)
                for h, _ in hosts:
                    ray_hosts[h] = ray_hosts.get(h, 0) + 1
                ray_port += 1
            endpoints[pool.role].append((head, port))
            port += 1
            instance += 1
    for h, n in ray_hosts.items():
        if n > 1:
            ctx.warn.append(f"host {h} takes part in {n} Ray clusters; give each `ray start` "
                            f"its own ports (see `ray start --help`)")
    return launch_script(ctx, rows, [], _proxy(ctx, endpoints), VLLM_DOCS)


def _dp_rows(pool: Pool, r: int, argv: list[str], env: dict[str, str], port: int,
             rpc_port: int) -> list[Row]:
    """Replica ``r`` whose data-parallel ranks span hosts: one ``vllm serve`` per host
    with its ranks (``--data-parallel-size-local``), the first host's with the API server,
    the others ``--headless`` from their first rank (``--data-parallel-start-rank``), all
    meeting at the first host's RPC port ("Data Parallel Deployment" in vLLM's docs)."""
    hosts = pool.replica_hosts[r]
    head = hosts[0][0]
    rows: list[Row] = []
    rank = 0
    for k, (h, idx) in enumerate(hosts):
        local = len(idx) // pool.tp
        a = argv + ["--data-parallel-size-local", str(local), "--data-parallel-address", head,
                    "--data-parallel-rpc-port", str(rpc_port)]
        if k == 0:
            a += ["--host", "0.0.0.0", "--port", str(port)]
            notes = [pool.title(r), f"DP ranks 0-{local - 1} of {pool.dp} and the API server"]
        else:
            a += ["--headless", "--data-parallel-start-rank", str(rank)]
            notes = [f"DP ranks {rank}-{rank + local - 1} of the {pool.role} replica {r + 1}, "
                     f"joining {head}:{rpc_port}"]
        rows.append((h, notes, Command(pool.role, a, {**pool.visible(idx), **env}, h, r)))
        rank += local
    return rows


def _ray_rows(ctx: Ctx, pool: Pool, r: int, argv: list[str], env: dict[str, str],
              ray_port: int) -> list[Row]:
    """Replica ``r`` across hosts: the Ray head (on ``ray_port``) and the server on its first
    host, a Ray worker joining that head on each of the others."""
    hosts = pool.replica_hosts[r]
    head = hosts[0][0]
    addr = f"{head}:{ray_port}"
    names = ", ".join(h for h, _ in hosts)
    which = "" if pool.phase.replicas == 1 else f"replica {r + 1} of {pool.phase.replicas} of "
    ctx.warn.append(f"{which}the {pool.role if pool.role != 'server' else 'colocated'} "
                    f"pool spans hosts {names}: vLLM needs a Ray cluster across "
                    f"them; launch.sh starts one (run it on {head} first, then on "
                    f"the others) and Ray, not the plan, decides which host runs "
                    f"which stage")
    others = ", ".join(h for h, _ in hosts[1:])
    rows: list[Row] = [(head, [pool.title(r), (f"Ray head of this server's cluster ({addr}); "
                        f"vLLM waits for the other hosts ({others}) to join")],
                        Command("ray-head", ["ray", "start", "--head", f"--port={ray_port}"],
                                pool.visible(hosts[0][1]), head, r))]
    for h, idx in hosts[1:]:
        rows.append((h, [f"join the Ray cluster of the {pool.role} replica {r + 1} at {addr}"],
                     Command("ray-worker", ["ray", "start", f"--address={addr}"],
                             pool.visible(idx), h, r)))
    rows.append((head, [], Command(pool.role, argv, {"RAY_ADDRESS": addr, **env}, head, r)))
    return rows


def _proxy(ctx: Ctx, endpoints: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Header lines on how requests reach the servers: a load balancer or the toy proxy."""
    proxy: list[str] = []
    if len(endpoints["server"]) > 1:
        urls = " ".join(f"http://{h}:{p}" for h, p in endpoints["server"])
        proxy = [
            (f"{len(endpoints['server'])} independent vLLM servers, one per replica. vLLM has "
             f"no router across separate servers:"),
            ("spread requests over these URLs with an HTTP load balancer of your choice "
             "(external load balancing,"),
            f"{VLLM_DP_LB_DOC}):",
            f"  {urls}",
        ]
    if ctx.plan.placement == "disaggregated":
        if endpoints["prefill"] and endpoints["decode"]:
            pre, dec = endpoints["prefill"], endpoints["decode"]
            proxy = [
                ("Route requests through vLLM's example proxy (tests/v1/kv_connector/"
                "nixl_integration/toy_proxy_server.py in the vLLM repository; not installed "
                "with the wheel):"),
                (f"  python toy_proxy_server.py --host 0.0.0.0 --port {ROUTER_PORT} "
                f"--prefiller-hosts {' '.join(h for h, _ in pre)} "
                f"--prefiller-ports {' '.join(str(p) for _, p in pre)} "
                f"--decoder-hosts {' '.join(h for h, _ in dec)} "
                f"--decoder-ports {' '.join(str(p) for _, p in dec)}"),
            ]
        else:
            ctx.warn.append("no proxy line: one of the two pools is not exported, so the "
                            "exported workers cannot serve requests by themselves")
    return proxy


ENGINE = Engine("vLLM", build)
