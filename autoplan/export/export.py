"""Engine launch configs for a plan: vLLM and SGLang shell scripts, a Dynamo deployment.

``export(plan, engine)`` is pure: it returns the files to write (``launch.sh`` or
``deployment.yaml``), the commands in them and the warnings. Where an engine cannot
express part of a plan (a pool on devices it does not run on, different TP degrees
across the stages of one pipeline, GPUs of two vendors in one pipeline) that pool is
left out and a warning says so; the rest is exported.

Every flag written is in one of the documented flag sets below, each with the page it
comes from (the tests check every emitted flag against these sets):

* vLLM engine and server arguments (``--tensor-parallel-size``, ``--pipeline-parallel-size``,
  ``--max-model-len``, ``--max-num-seqs``, ``--gpu-memory-utilization``, ``--dtype``,
  ``--kv-cache-dtype {auto,fp8,fp8_e5m2,fp8_e4m3}``, ``--quantization fp8``,
  ``--distributed-executor-backend ray``, ``--kv-transfer-config``):
  https://docs.vllm.ai/en/v0.8.5/serving/engine_args.html
* vLLM ``--port`` and the NixlConnector KV-transfer config (``kv_connector``, ``kv_role``
  ``kv_producer``/``kv_consumer``, ``VLLM_NIXL_SIDE_CHANNEL_PORT``/``_HOST``, the toy proxy):
  https://docs.vllm.ai/en/stable/features/nixl_connector_usage.html
* ``VLLM_PP_LAYER_PARTITION``: comma-separated decoder layers per pipeline stage; its
  length must equal the PP size and its sum the model's layer count
  (``get_pp_indices`` in https://github.com/vllm-project/vllm/blob/main/vllm/distributed/utils.py,
  read through https://github.com/vllm-project/vllm/blob/main/vllm/envs.py)
* vLLM across nodes runs on a Ray cluster (``ray start --head`` / ``ray start --address``,
  ``--distributed-executor-backend ray``):
  https://docs.vllm.ai/en/latest/serving/parallelism_scaling.html
* vLLM on ROCm selects GPUs with ``HIP_VISIBLE_DEVICES``:
  https://docs.vllm.ai/en/v0.11.0/api/vllm/platforms/rocm.html
* SGLang server arguments (``--model-path``, ``--tp-size``, ``--pp-size``,
  ``--context-length``, ``--max-running-requests``, ``--mem-fraction-static``,
  ``--kv-cache-dtype {auto,fp8_e5m2,fp8_e4m3,bf16,...}``, ``--quantization fp8``,
  ``--nnodes``/``--node-rank``/``--dist-init-addr``, ``--disaggregation-mode``,
  ``--disaggregation-transfer-backend``, ``--disaggregation-bootstrap-port``):
  https://docs.sglang.io/advanced_features/server_arguments.html
  (source: https://github.com/sgl-project/sglang/blob/main/docs/advanced_features/server_arguments.md)
* SGLang PD disaggregation and its router line
  (``python -m sglang_router.launch_router --pd-disaggregation --prefill URL [BOOTSTRAP_PORT]
  --decode URL``): https://docs.sglang.io/advanced_features/pd_disaggregation.html and
  https://github.com/sgl-project/sglang/blob/main/docs/advanced_features/router.md
* SGLang's router over several colocated replicas (``python -m sglang_router.launch_router
  --worker-urls URL1 URL2 ... --host --port``, "Separate Launch (HTTP)"):
  https://github.com/sgl-project/sglang/blob/main/docs/advanced_features/router.md
* vLLM has no router across separate servers: several colocated replicas are independent
  ``vllm serve`` processes and an HTTP load balancer spreads requests over them ("External
  Load Balancing"):
  https://docs.vllm.ai/en/latest/serving/data_parallel_deployment.html
* ``SGLANG_PP_LAYER_PARTITION`` (same rules as vLLM's):
  https://github.com/sgl-project/sglang/blob/main/python/sglang/srt/distributed/utils.py
* Dynamo ``DynamoGraphDeployment`` (``nvidia.com/v1alpha1``; ``spec.services`` with a
  Frontend and workers, ``subComponentType`` prefill/decode, ``resources.limits.gpu``,
  ``multinode.nodeCount``, ``extraPodSpec.mainContainer`` command/args, ``python3 -m
  dynamo.vllm`` with vLLM engine args and ``--disaggregation-mode prefill|decode``):
  https://github.com/ai-dynamo/dynamo/blob/main/examples/backends/vllm/deploy/disagg.yaml and
  https://github.com/ai-dynamo/dynamo/blob/main/examples/backends/sglang/deploy/disagg-multinode.yaml
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from autoplan.errors import InputError
from autoplan.plan_schema import PhasePlan, Plan

ENGINES = ("vllm", "sglang", "dynamo")

# ---------------------------------------------------------------- documented flag sets

# Several replicas are several independent `vllm serve` processes behind an HTTP load
# balancer ("External Load Balancing"); vLLM itself ships no router across them.
VLLM_DP_LB_DOC = ("https://docs.vllm.ai/en/latest/serving/data_parallel_deployment.html"
                  "#external-load-balancing")
VLLM_DOCS = (
    "https://docs.vllm.ai/en/v0.8.5/serving/engine_args.html",
    "https://docs.vllm.ai/en/stable/features/nixl_connector_usage.html",
    "https://docs.vllm.ai/en/latest/serving/parallelism_scaling.html",
    VLLM_DP_LB_DOC,
)
VLLM_FLAGS = frozenset({
    "--tensor-parallel-size", "--pipeline-parallel-size", "--max-model-len", "--max-num-seqs",
    "--gpu-memory-utilization", "--dtype", "--kv-cache-dtype", "--quantization",
    "--distributed-executor-backend", "--kv-transfer-config", "--port", "--host",
})
VLLM_KV_CACHE_DTYPES = frozenset({"auto", "fp8", "fp8_e5m2", "fp8_e4m3"})
VLLM_DTYPES = frozenset({"auto", "half", "float16", "bfloat16", "float", "float32"})
VLLM_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "VLLM_PP_LAYER_PARTITION",
                      "VLLM_NIXL_SIDE_CHANNEL_PORT", "VLLM_NIXL_SIDE_CHANNEL_HOST",
                      "RAY_ADDRESS"})
# ray start --head --port / ray start --address, as in the vLLM multi-node guide above.
RAY_START_FLAGS = frozenset({"--head", "--port", "--address"})

SGLANG_DOCS = (
    "https://docs.sglang.io/advanced_features/server_arguments.html",
    "https://docs.sglang.io/advanced_features/pd_disaggregation.html",
    "https://github.com/sgl-project/sglang/blob/main/docs/advanced_features/router.md",
)
SGLANG_FLAGS = frozenset({
    "--model-path", "--tp-size", "--pp-size", "--context-length", "--max-running-requests",
    "--mem-fraction-static", "--dtype", "--kv-cache-dtype", "--quantization", "--host", "--port",
    "--nnodes", "--node-rank", "--dist-init-addr", "--disaggregation-mode",
    "--disaggregation-transfer-backend", "--disaggregation-bootstrap-port",
})
SGLANG_KV_CACHE_DTYPES = frozenset({"auto", "fp8_e5m2", "fp8_e4m3", "bf16", "bfloat16"})
# --worker-urls URL ...: the router over several regular (colocated) servers, "Separate
# Launch (HTTP)" in https://github.com/sgl-project/sglang/blob/main/docs/advanced_features/router.md
SGLANG_ROUTER_FLAGS = frozenset({"--pd-disaggregation", "--prefill", "--decode", "--host",
                                 "--port", "--worker-urls"})
SGLANG_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
                        "SGLANG_PP_LAYER_PARTITION"})

DYNAMO_DOCS = (
    "https://github.com/ai-dynamo/dynamo/blob/main/examples/backends/vllm/deploy/disagg.yaml",
    ("https://github.com/ai-dynamo/dynamo/blob/main/examples/backends/sglang/deploy/"
    "disagg-multinode.yaml"),
)
# dynamo.vllm takes vLLM's engine arguments plus its own --model and --disaggregation-mode.
DYNAMO_VLLM_FLAGS = frozenset((VLLM_FLAGS - {"--port", "--host", "--kv-transfer-config",
                                             "--distributed-executor-backend"})
                              | {"--model", "--disaggregation-mode"})
DYNAMO_IMAGE = "nvcr.io/nvidia/ai-dynamo/vllm-runtime:${DYNAMO_VERSION}"

_LABEL = {"vllm": "vLLM", "sglang": "SGLang", "dynamo": "Dynamo's vLLM workers"}
_FILE = {"vllm": "launch.sh", "sglang": "launch.sh", "dynamo": "deployment.yaml"}
_UNPINNED = ("not pinned: run it on a host you pick, with its visible devices set (the "
             "router/proxy line calls that host HOST)")
_SERVER_PORT = 8100
_ROUTER_PORT = 8000
_NIXL_PORT = 5600
_RAY_PORT = 6379
_SGLANG_BOOTSTRAP_PORT = 8998
_SGLANG_DIST_PORT = 5000

# "<node>.d<k>" (autoplan topologies), "<node>/gpu<k>", "<node>/<k>", "<node>:<k>"
_DEVICE_ID = (re.compile(r"^(.+)\.d(\d+)$"), re.compile(r"^(.+)/gpu(\d+)$"),
              re.compile(r"^(.+)/(\d+)$"), re.compile(r"^(.+):(\d+)$"))


@dataclass
class Command:
    """One command of an export: where it runs, its environment and its argument list."""

    role: str  # server | prefill | decode | router | ray-head | ray-worker
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    host: str | None = None  # topology node it runs on; None when the plan does not say
    replica: int = 0

    def line(self) -> str:
        envs = [f'{k}="{v}"' if v.startswith("$") else f"{k}={shlex.quote(v)}"
                for k, v in self.env.items()]
        return " ".join(envs + [shlex.join(self.argv)])


@dataclass
class Export:
    engine: str
    files: dict[str, str]
    warnings: list[str]
    commands: list[Command]


def check_engine(engine: str) -> str:
    e = engine.strip().lower()
    if e not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    return e


# ---------------------------------------------------------------- pools


@dataclass
class _Pool:
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

    @property
    def hosts(self) -> list[tuple[str, list[int]]] | None:
        """The first replica's hosts."""
        return self.replica_hosts[0]

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def visible_env(self) -> str:
        return "HIP_VISIBLE_DEVICES" if self.vendor == "amd" else "CUDA_VISIBLE_DEVICES"


def _vendor(kind: str) -> str | None:
    """nvidia / amd for GPUs, None for other accelerators, 'unknown' for custom kinds."""
    from autoplan.catalog import builtin_device_kinds

    spec = builtin_device_kinds().get(kind)
    if spec is None:
        return "unknown"
    if spec.description.startswith("NVIDIA"):
        return "nvidia"
    if spec.description.startswith("AMD"):
        return "amd"
    return None


def _split_device(dev: str) -> tuple[str, int] | None:
    for pat in _DEVICE_ID:
        m = pat.match(dev)
        if m:
            return m.group(1), int(m.group(2))
    return None


def _hosts(stage_devices: list[list[str]]) -> list[tuple[str, list[int]]] | None:
    """(host, local indices) of one replica's devices, hosts in rank order; None if unmappable."""
    out: dict[str, list[int]] = {}
    for devs in stage_devices:
        for d in devs:
            hd = _split_device(d)
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
        every = [d for rep in rd for devs in rep for d in devs]
        dup = sorted({d for d in every if every.count(d) > 1})
        if dup:
            problem = f"puts device{'s' * (len(dup) > 1)} {', '.join(dup[:4])} in two replicas"
    if problem is None:
        return rd
    if phase.replicas > 1:
        warn.append(f"{what} has {phase.replicas} replicas but its replica_devices {problem}; "
                    f"replicas 2..{phase.replicas} are exported without device pinning")
    return [first] + [None] * (phase.replicas - 1)


def _pool(role: str, phase: PhasePlan, label: str, warn: list[str]) -> _Pool | None:
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
    if len(kinds) > 1:
        warn.append(f"{what} mixes device kinds ({kinds_text}) in one pipeline; {label} has no "
                    f"per-stage device setting, so it is exported as one engine that treats "
                    f"every stage alike (one memory fraction, one batch limit)")
    per_replica = _replica_devices(phase, what, warn)
    hosts = [_hosts(rep) if rep is not None else None for rep in per_replica]
    unmapped = [r for r, rep in enumerate(per_replica) if rep is not None and hosts[r] is None]
    if unmapped:
        dev = next(d for ds in per_replica[unmapped[0]] for d in ds if _split_device(d) is None)
        reps = ("" if phase.replicas == 1 else
                f" (replica{'s' * (len(unmapped) > 1)} {', '.join(str(r + 1) for r in unmapped)})")
        warn.append(f"the device ids of {what}{reps} ({dev}, ...) do not name a host and a "
                    f"local GPU index ('<node>.d<k>' or '<node>/gpu<k>'); its commands are "
                    f"not pinned to devices")
    vendor = next((v for v in vendors.values() if v != "unknown"), "nvidia")
    return _Pool(role, phase, tps[0], len(tps),
                 [s.layers[1] - s.layers[0] for s in phase.stages], vendor, per_replica, hosts)


def _pools(plan: Plan, label: str, warn: list[str]) -> list[_Pool]:
    if plan.placement == "colocated":
        def shape(ph: PhasePlan) -> tuple:
            return ([(s.layers, s.device_kind, s.tp, s.devices) for s in ph.stages],
                    ph.replicas, getattr(ph, "replica_devices", None))

        if shape(plan.prefill) != shape(plan.decode):
            warn.append("colocated plan whose prefill and decode stages differ; "
                        "exporting the prefill stages")
        pools = [_pool("server", plan.prefill, label, warn)]
    else:
        pools = [_pool("prefill", plan.prefill, label, warn),
                 _pool("decode", plan.decode, label, warn)]
    return [p for p in pools if p is not None]


# ---------------------------------------------------------------- shared settings


@dataclass
class _Ctx:
    plan: Plan
    engine: str
    label: str
    model: str
    warn: list[str]

    @property
    def max_len(self) -> int:
        return self.plan.inputs.isl + self.plan.inputs.osl


def _model_path(plan: Plan, warn: list[str]) -> str:
    m = plan.inputs.model
    p = Path(m)
    if p.suffix == ".json":
        folder = str(p.parent) if str(p.parent) not in ("", ".") else "."
        warn.append(f"the plan's model is a config file ({m}); the launch lines use its folder "
                    f"{folder!r} as the model path, which must also hold the weights")
        return folder
    return m


def _precision_flags(ctx: _Ctx) -> list[str]:
    """Weights and KV-cache formats as engine flags; a warning for what has no flag."""
    i = ctx.plan.inputs
    flags: list[str] = []
    dtype_names = {"bf16": "bfloat16", "fp16": "float16"}
    if i.dtype in dtype_names:
        flags += ["--dtype", dtype_names[i.dtype]]
    elif i.dtype == "fp8":
        flags += ["--quantization", "fp8"]
    else:
        ctx.warn.append(f"weights format {i.dtype} has no single {ctx.label} flag: serve a "
                        f"checkpoint already quantized to {i.dtype} (the engine reads its "
                        f"quantization config); no quantization flag is exported")
    act = i.dtype if i.dtype in dtype_names else None
    if i.kv_dtype == "fp8":
        flags += ["--kv-cache-dtype", "fp8_e4m3" if ctx.engine == "sglang" else "fp8"]
    elif i.kv_dtype in ("bf16", "fp16"):
        if act is not None and i.kv_dtype != act:
            ctx.warn.append(f"a {i.kv_dtype} KV cache with {i.dtype} weights has no "
                            f"{ctx.label} flag; the KV cache follows the weights ({i.dtype})")
    else:
        ctx.warn.append(f"a {i.kv_dtype} KV cache has no {ctx.label} flag; the KV cache is "
                        f"left at the engine's default")
    return flags


def _partition_env(pool: _Pool, name: str) -> dict[str, str]:
    return {name: ",".join(map(str, pool.partition))} if pool.pp > 1 else {}


def _where(pool: _Pool, replica: int = 0) -> str:
    rep = pool.replica_devices[replica]
    devs = [d for ds in rep for d in ds] if rep is not None else []
    shown = (" ".join(devs) if len(devs) <= 8 else f"{' '.join(devs[:4])} ... {devs[-1]}") \
        if rep is not None else "not given by the plan"
    cuts = ", ".join(f"[{s.layers[0]}, {s.layers[1]})" for s in pool.phase.stages)
    return (f"{pool.pp} stage{'s' * (pool.pp != 1)} x TP {pool.tp}, layers {cuts}; "
            f"devices {shown}")


# ---------------------------------------------------------------- vLLM


def _vllm(ctx: _Ctx, pools: list[_Pool]) -> tuple[list[tuple[str, list[str], Command | None]],
                                                  list[Command], list[str]]:
    """(block, comment lines, command) rows; the proxy comment; extra header lines."""
    rows: list[tuple[str, list[str], Command | None]] = []
    prec = _precision_flags(ctx)
    i = ctx.plan.inputs
    port = _SERVER_PORT
    instance = 0
    ray_port = _RAY_PORT
    endpoints: dict[str, list[tuple[str, int]]] = {"server": [], "prefill": [], "decode": []}
    ray_hosts: dict[str, int] = {}
    for pool in pools:
        for r in range(pool.phase.replicas):
            hosts = pool.replica_hosts[r]
            argv = ["vllm", "serve", ctx.model,
                    "--tensor-parallel-size", str(pool.tp),
                    "--pipeline-parallel-size", str(pool.pp),
                    "--max-model-len", str(ctx.max_len),
                    "--max-num-seqs", str(_seqs(i, pool.role)),
                    "--gpu-memory-utilization", f"{i.max_memory_fraction:g}"] + prec
            env = _partition_env(pool, "VLLM_PP_LAYER_PARTITION")
            if pool.role != "server":
                role = "kv_producer" if pool.role == "prefill" else "kv_consumer"
                argv += ["--kv-transfer-config",
                         json.dumps({"kv_connector": "NixlConnector", "kv_role": role},
                                    separators=(",", ":"))]
                env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(_NIXL_PORT + instance)
                env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = "$HOST_IP"
            argv += ["--port", str(port)]
            title = (f"{'server' if pool.role == 'server' else pool.role} replica {r + 1} of "
                     f"{pool.phase.replicas}: {_where(pool, r)}")
            if hosts is None:
                block = "unpinned"
                rows.append((block, [title, _UNPINNED],
                             Command(pool.role, argv, env, None, r)))
                endpoints.get(pool.role, []).append(("HOST", port))
            elif len(hosts) == 1:
                host, idx = hosts[0]
                env = {pool.visible_env: ",".join(map(str, idx)), **env}
                rows.append((host, [title], Command(pool.role, argv, env, host, r)))
                endpoints.get(pool.role, []).append((host, port))
            else:
                head = hosts[0][0]
                addr = f"{head}:{ray_port}"
                names = ", ".join(h for h, _ in hosts)
                which = ("" if pool.phase.replicas == 1 else
                         f"replica {r + 1} of {pool.phase.replicas} of ")
                ctx.warn.append(f"{which}the "
                                f"{pool.role if pool.role != 'server' else 'colocated'} "
                                f"pool spans hosts {names}: vLLM needs a Ray cluster across "
                                f"them; launch.sh starts one (run it on {head} first, then on "
                                f"the others) and Ray, not the plan, decides which host runs "
                                f"which stage")
                for h, _ in hosts:
                    ray_hosts[h] = ray_hosts.get(h, 0) + 1
                argv[argv.index("--port"):argv.index("--port")] = [
                    "--distributed-executor-backend", "ray"]
                head_idx = hosts[0][1]
                others = ", ".join(h for h, _ in hosts[1:])
                rows.append((head, [title, (f"Ray head of this server's cluster ({addr}); "
                             f"vLLM waits for the other hosts ({others}) to join")],
                             Command("ray-head", ["ray", "start", "--head", f"--port={ray_port}"],
                                     {pool.visible_env: ",".join(map(str, head_idx))}, head, r)))
                for h, idx in hosts[1:]:
                    rows.append((h, [(f"join the Ray cluster of the {pool.role} replica {r + 1} "
                                     f"at {addr}")],
                                 Command("ray-worker", ["ray", "start", f"--address={addr}"],
                                         {pool.visible_env: ",".join(map(str, idx))}, h, r)))
                env = {"RAY_ADDRESS": addr, **env}
                rows.append((head, [], Command(pool.role, argv, env, head, r)))
                endpoints.get(pool.role, []).append((head, port))
                ray_port += 1
            port += 1
            instance += 1
    for h, n in ray_hosts.items():
        if n > 1:
            ctx.warn.append(f"host {h} takes part in {n} Ray clusters; give each `ray start` "
                            f"its own ports (see `ray start --help`)")
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
                (f"  python toy_proxy_server.py --port {_ROUTER_PORT} "
                f"--prefiller-hosts {' '.join(h for h, _ in pre)} "
                f"--prefiller-ports {' '.join(str(p) for _, p in pre)} "
                f"--decoder-hosts {' '.join(h for h, _ in dec)} "
                f"--decoder-ports {' '.join(str(p) for _, p in dec)}"),
            ]
        else:
            ctx.warn.append("no proxy line: one of the two pools is not exported, so the "
                            "exported workers cannot serve requests by themselves")
    return rows, [], proxy


# ---------------------------------------------------------------- SGLang


def _sglang(ctx: _Ctx, pools: list[_Pool]) -> tuple[list[tuple[str, list[str], Command | None]],
                                                    list[Command], list[str]]:
    rows: list[tuple[str, list[str], Command | None]] = []
    prec = _precision_flags(ctx)
    i = ctx.plan.inputs
    port = _SERVER_PORT
    boot = _SGLANG_BOOTSTRAP_PORT
    dist = _SGLANG_DIST_PORT
    endpoints: dict[str, list[tuple[str, int, int]]] = {"server": [], "prefill": [],
                                                          "decode": []}
    disagg = ctx.plan.placement == "disaggregated"
    for pool in pools:
        uneven = [r for r in range(pool.phase.replicas) if _sglang_uneven(pool, r)]
        if uneven:
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
        for r in range(pool.phase.replicas):
            if r in uneven:
                continue
            rh = pool.replica_hosts[r]
            base = ["python", "-m", "sglang.launch_server", "--model-path", ctx.model,
                    "--tp-size", str(pool.tp), "--pp-size", str(pool.pp),
                    "--context-length", str(ctx.max_len),
                    "--max-running-requests", str(_seqs(i, pool.role)),
                    "--mem-fraction-static", f"{i.max_memory_fraction:g}"] + prec
            if pool.role != "server":
                base += ["--disaggregation-mode", pool.role,
                         "--disaggregation-transfer-backend", "nixl"]
                if pool.role == "prefill":
                    base += ["--disaggregation-bootstrap-port", str(boot)]
                base += ["--host", "0.0.0.0"]
            elif pool.phase.replicas > 1:  # the router reaches it from another host
                base += ["--host", "0.0.0.0"]
            base += ["--port", str(port)]
            env0 = _partition_env(pool, "SGLANG_PP_LAYER_PARTITION")
            title = (f"{pool.role} replica {r + 1} of {pool.phase.replicas}: "
                     f"{_where(pool, r)}")
            if rh is None:
                rows.append(("unpinned", [title, _UNPINNED],
                             Command(pool.role, base, env0, None, r)))
                head = "HOST"
            elif len(rh) == 1:
                host, idx = rh[0]
                env = {pool.visible_env: ",".join(map(str, idx)), **env0}
                rows.append((host, [title], Command(pool.role, base, env, host, r)))
                head = host
            else:
                head = rh[0][0]
                for k, (h, idx) in enumerate(rh):
                    argv = base + ["--nnodes", str(len(rh)), "--node-rank", str(k),
                                   "--dist-init-addr", f"{head}:{dist}"]
                    env = {pool.visible_env: ",".join(map(str, idx)), **env0}
                    note = [title] if k == 0 else []
                    note.append(f"node {k} of {len(rh)} of this server")
                    rows.append((h, note, Command(pool.role, argv, env, h, r)))
                dist += 1
            if pool.role in endpoints:
                endpoints[pool.role].append((head, port, boot))
            if pool.role == "prefill":
                boot += 1
            port += 1
    router: list[Command] = []
    if disagg:
        if endpoints["prefill"] and endpoints["decode"]:
            argv = ["python", "-m", "sglang_router.launch_router", "--pd-disaggregation"]
            for h, p, b in endpoints["prefill"]:
                argv += ["--prefill", f"http://{h}:{p}", str(b)]
            for h, p, _ in endpoints["decode"]:
                argv += ["--decode", f"http://{h}:{p}"]
            argv += ["--host", "0.0.0.0", "--port", str(_ROUTER_PORT)]
            router.append(Command("router", argv, {}, None, 0))
        else:
            ctx.warn.append("no router line: one of the two pools is not exported, so the "
                            "exported workers cannot serve requests by themselves")
    elif len(endpoints["server"]) > 1:
        argv = ["python", "-m", "sglang_router.launch_router", "--worker-urls",
                *[f"http://{h}:{p}" for h, p, _ in endpoints["server"]],
                "--host", "0.0.0.0", "--port", str(_ROUTER_PORT)]
        router.append(Command("router", argv, {}, None, 0))
    return rows, router, []


def _sglang_uneven(pool: _Pool, r: int) -> bool:
    """Whether replica ``r`` spans hosts unevenly or out of rank order (SGLang cannot run it)."""
    hosts = pool.replica_hosts[r]
    if hosts is None or len(hosts) < 2:
        return False
    order = [d for ds in pool.replica_devices[r] for d in ds]
    grouped = [d for h, _ in hosts for d in order if _split_device(d)[0] == h]
    return len({len(idx) for _, idx in hosts}) > 1 or order != grouped


# ---------------------------------------------------------------- shell script


def _script(ctx: _Ctx, rows, extra: list[Command], notes: list[str], sources) -> str:
    p = ctx.plan
    blocks: dict[str, list[str]] = {}
    for block, comments, cmd in rows:
        lines = blocks.setdefault(block, [])
        lines += [f"# {c}" for c in comments]
        if cmd is not None:
            daemon = cmd.role.startswith("ray-")
            lines.append(cmd.line() + ("" if daemon else " &"))
    for cmd in extra:
        blocks.setdefault(cmd.role, []).append(cmd.line() + " &")
    labels = list(blocks)
    head = [
        "#!/usr/bin/env bash",
        (f"# autoplan export --to {ctx.engine}: {p.inputs.model} on {p.inputs.topology}, "
        f"{p.placement}"),
        (f"# isl {p.inputs.isl}, osl {p.inputs.osl}, batch {p.inputs.batch}, dtype "
        f"{p.inputs.dtype}, KV {p.inputs.kv_dtype}; plan TTFT {p.ttft_ms:.2f} ms, "
        f"TPOT {p.tpot_ms:.3f} ms"),
        f"# Usage: launch.sh GROUP, on the host of that group; groups: {' '.join(labels)}",
        "# Host names are the topology's node names; they must resolve on every host.",
        "# Flags documented at:",
        *[f"#   {u}" for u in sources],
    ]
    head += [f"# WARNING: {w}" for w in ctx.warn]
    head += [f"# {n}" for n in notes]
    head += ["set -euo pipefail"]
    default = f"{labels[0]}" if len(labels) == 1 else ""
    head.append(f'GROUP="${{1:-{default}}}"')
    if any("$HOST_IP" in c.line() for _, _, c in rows if c is not None):
        head.append("HOST_IP=\"${HOST_IP:-$(hostname -I | awk '{print $1}')}\"  "
                    "# address the KV-transfer side channel listens on")
    body = ['case "$GROUP" in']
    for label in labels:
        body.append(f"  {shlex.quote(label)})")
        body += [f"    {line}" for line in blocks[label]]
        body.append("    ;;")
    body.append(f'  *) echo "launch.sh: unknown group \'$GROUP\' (expected one of: '
                f'{" ".join(labels)})" >&2; exit 2 ;;')
    body.append("esac")
    body.append("wait")
    return "\n".join(head + body) + "\n"


# ---------------------------------------------------------------- Dynamo


def _k8s_name(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:63].rstrip("-") or "autoplan"


def _dynamo(ctx: _Ctx, pools: list[_Pool]) -> tuple[str, list[Command]]:
    i = ctx.plan.inputs
    prec = _precision_flags(ctx)
    services: dict[str, dict] = {
        "Frontend": {"componentType": "frontend", "replicas": 1,
                     "extraPodSpec": {"mainContainer": {"image": DYNAMO_IMAGE}}},
    }
    cmds: list[Command] = []
    names = {"server": "VllmWorker", "prefill": "VllmPrefillWorker", "decode": "VllmDecodeWorker"}
    for pool in pools:
        args = ["--model", ctx.model,
                "--tensor-parallel-size", str(pool.tp),
                "--pipeline-parallel-size", str(pool.pp),
                "--max-model-len", str(ctx.max_len),
                "--max-num-seqs", str(_seqs(i, pool.role)),
                "--gpu-memory-utilization", f"{i.max_memory_fraction:g}"] + prec
        if pool.role != "server":
            args += ["--disaggregation-mode", pool.role]
        svc: dict = {"envFromSecret": "hf-token-secret", "componentType": "worker"}
        if pool.role != "server":
            svc["subComponentType"] = pool.role
        svc["replicas"] = pool.phase.replicas
        per_node = pool.gpus
        if pool.hosts is not None and len(pool.hosts) > 1:
            sizes = {len(idx) for _, idx in pool.hosts}
            if len(sizes) > 1:
                ctx.warn.append(f"Dynamo gives every node of a multinode worker the same number "
                                f"of GPUs, but the {pool.role} pool puts "
                                f"{', '.join(f'{len(x)} on {h}' for h, x in pool.hosts)}; "
                                f"it is not exported")
                continue
            per_node = sizes.pop()
            svc["multinode"] = {"nodeCount": len(pool.hosts)}
        svc["resources"] = {"limits": {"gpu": str(per_node)}}
        env = _partition_env(pool, "VLLM_PP_LAYER_PARTITION")
        if env:
            svc["envs"] = [{"name": k, "value": v} for k, v in env.items()]
        svc["extraPodSpec"] = {"mainContainer": {
            "image": DYNAMO_IMAGE, "workingDir": "/workspace/examples/backends/vllm",
            "command": ["python3", "-m", "dynamo.vllm"], "args": args}}
        services[names[pool.role]] = svc
        cmds.append(Command(pool.role, ["python3", "-m", "dynamo.vllm", *args], env, None, 0))
    doc = {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
           "metadata": {"name": _k8s_name(f"{i.model.rsplit('/', 1)[-1]}-{ctx.plan.placement}")},
           "spec": {"backendFramework": "vllm", "services": services}}
    p = ctx.plan
    head = [f"# autoplan export --to dynamo: {i.model} on {i.topology}, {p.placement}",
            f"# isl {i.isl}, osl {i.osl}, batch {i.batch}, dtype {i.dtype}, KV {i.kv_dtype}",
            "# Substitute DYNAMO_VERSION (e.g. envsubst) and create the hf-token-secret first.",
            "# Kubernetes places the pods: the plan's device ids are not pinned here.",
            "# Format documented at:", *[f"#   {u}" for u in DYNAMO_DOCS]]
    for pool in pools:
        n = pool.phase.replicas
        head.append(f"# {pool.role}: {n} replica{'s' * (n != 1)} of {_where(pool)}"
                    f"{' (replica 1)' if n > 1 else ''}")
    head += [f"# WARNING: {w}" for w in ctx.warn]
    return "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False), cmds


# ---------------------------------------------------------------- entry points


def export(plan: Plan, engine: str) -> Export:
    """Launch configs for ``plan`` on ``engine`` (vllm, sglang or dynamo).

    Raises :class:`InputError` for an unknown engine, or when the engine can express no
    pool of the plan at all.
    """
    engine = check_engine(engine)
    warn: list[str] = []
    label = _LABEL[engine]
    ctx = _Ctx(plan, engine, label, _model_path(plan, warn), warn)
    pools = _pools(plan, label, warn)
    if not pools:
        raise InputError(f"{label} can express no part of this plan: {warn[-1]}")
    if engine == "dynamo":
        text, cmds = _dynamo(ctx, pools)
        if len(cmds) == 0:
            raise InputError(f"{label} can express no part of this plan: {warn[-1]}")
        return Export(engine, {_FILE[engine]: text}, warn, cmds)
    if engine == "vllm":
        rows, extra, notes = _vllm(ctx, pools)
        sources = VLLM_DOCS
    else:
        rows, extra, notes = _sglang(ctx, pools)
        sources = SGLANG_DOCS
    if not rows:
        raise InputError(f"{label} can express no part of this plan: {warn[-1]}")
    text = _script(ctx, rows, extra, notes, sources)
    cmds = [c for _, _, c in rows if c is not None] + extra
    return Export(engine, {_FILE[engine]: text}, warn, cmds)


def write_export(exp: Export, out_dir: str | Path) -> list[Path]:
    """Write every file of ``exp`` into ``out_dir`` atomically; scripts are executable."""
    from autoplan.files import write_atomic

    d = Path(out_dir)
    if d.exists() and not d.is_dir():
        raise InputError(f"--out {str(d)!r} exists and is not a folder")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create folder {str(d)!r}: {e.__class__.__name__}") from None
    written = []
    for name, text in exp.files.items():
        path = d / name
        write_atomic(path, text)
        path.chmod(0o755 if name.endswith(".sh") else 0o644)
        written.append(path)
    return written


def _seqs(inputs, role: str) -> int:
    """Sequences a server runs at once: a prefill server the plan's prefill batch, the
    others its decode batch."""
    if role == "prefill" and inputs.prefill_batch:
        return inputs.prefill_batch
    return inputs.batch
