"""Dynamo: a ``DynamoGraphDeployment`` (``nvidia.com/v1beta1``, ``deployment.yaml``) of
vLLM, SGLang or TensorRT-LLM workers.

One component a pool (``multinode`` where it spans hosts) behind a Frontend, in
``spec.components``, each pod's container named ``main``. Prefill workers carry their KV
connector (vLLM: ``--kv-transfer-config`` NIXL; SGLang: ``--disaggregation-transfer-backend
nixl``; TensorRT-LLM: the cache transceiver of its engine YAML, in a ConfigMap).
Kubernetes places the pods, so the plan's device ids are not pinned.
"""

from __future__ import annotations

import json
import re

import yaml

from autoplan.errors import InputError
from autoplan.export.common import (
    Command,
    Ctx,
    Engine,
    Export,
    engine_tp,
    parallel_args,
    precision_flags,
    sizing_args,
)
from autoplan.export.flags import (
    DYNAMO_API_VERSION,
    DYNAMO_BACKENDS,
    DYNAMO_V1BETA1_DOCS,
    SGLANG_KV_FP8,
    SGLANG_PAGE,
    SGLANG_SIZING,
    VLLM_BLOCK,
    VLLM_KV_FP8,
    VLLM_SIZING,
)
from autoplan.export.limits import check_limits, check_parallel
from autoplan.export.pools import Pool
from autoplan.export.trtllm import llm_api_options, pool_warnings

FILE = "deployment.yaml"
IMAGES = {"vllm": "nvcr.io/nvidia/ai-dynamo/vllm-runtime:${DYNAMO_VERSION}",
          "sglang": "nvcr.io/nvidia/ai-dynamo/sglang-runtime:${DYNAMO_VERSION}",
          "trtllm": "nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:${DYNAMO_VERSION}"}
_PREFIX = {"vllm": "Vllm", "sglang": "Sglang", "trtllm": "Trtllm"}
_ROLE = {"server": "Worker", "prefill": "PrefillWorker", "decode": "DecodeWorker"}
_TYPE = {"server": "worker", "prefill": "prefill", "decode": "decode"}
BOOTSTRAP_PORT = 12345  # SGLang's --disaggregation-bootstrap-port, as Dynamo's examples
CONFIG_DIR = "/config"


def backend_of(ctx: Ctx) -> str:
    """The backend: ``--backend``, else the engine that priced the plan, else vLLM."""
    if ctx.backend is not None and not ctx.backend:
        raise InputError("--backend is empty; expected one of vllm, sglang, trtllm")
    b = ctx.backend or ctx.plan.inputs.engine or "vllm"
    b = b.strip().lower()
    if b not in DYNAMO_BACKENDS:
        if ctx.backend is None:  # the plan's engine (e.g. a profile name) is not a backend
            ctx.warn.append(f"the plan was priced for engine {b!r}, not a Dynamo backend; "
                            f"exporting vLLM workers (--backend to pick another)")
            return "vllm"
        raise InputError(f"unknown Dynamo backend {ctx.backend!r}; expected one of "
                         f"{', '.join(DYNAMO_BACKENDS)}")
    return b


def _args(ctx: Ctx, pool: Pool, backend: str, config: str | None) -> list[str]:
    if backend == "vllm":
        args = ["--model", ctx.model,
                *sizing_args(ctx, pool, VLLM_SIZING, VLLM_BLOCK, engine_tp(pool, "vllm"),
                             per_rank=True),
                *parallel_args(pool, "vllm"), *precision_flags(ctx, VLLM_KV_FP8)]
        if pool.role != "server":
            args += ["--disaggregation-mode", pool.role]
        if pool.role == "prefill":  # dynamo.vllm prefill workers require a KV connector
            args += ["--kv-transfer-config",
                     json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"},
                                separators=(",", ":"))]
        return args
    if backend == "sglang":
        args = ["--model-path", ctx.model, "--served-model-name", ctx.model,
                *sizing_args(ctx, pool, SGLANG_SIZING, SGLANG_PAGE, engine_tp(pool, "sglang")),
                *parallel_args(pool, "sglang"), "--page-size", str(SGLANG_PAGE),
                *precision_flags(ctx, SGLANG_KV_FP8)]
        if pool.role != "server":
            args += ["--disaggregation-mode", pool.role, "--disaggregation-transfer-backend",
                     "nixl", "--disaggregation-bootstrap-port", str(BOOTSTRAP_PORT)]
        return args + ["--host", "0.0.0.0"]
    args = ["--model-path", ctx.model, "--served-model-name", ctx.model,
            "--extra-engine-args", f"{CONFIG_DIR}/{config}"]
    if pool.role != "server":
        args += ["--disaggregation-mode", pool.role]
    return args


def build(ctx: Ctx, pools: list[Pool]) -> Export:
    i = ctx.plan.inputs
    if "$" in ctx.model:
        # Kubernetes expands $(NAME) in a container's args from its environment (the HF
        # token secret included), and the operator's shell wrap of multinode workers
        # expands $ again; no quoting holds for both, so a name with $ is not exported
        raise InputError(f"Dynamo: the model {ctx.model!r} contains '$', which Kubernetes "
                         "expands in a worker's args from its environment; serve it from a "
                         "path without '$'")
    backend = backend_of(ctx)
    if backend == "vllm" and ctx.plan.placement == "disaggregated":
        check_limits("dynamo-vllm", pools)
    check_parallel(f"dynamo-{backend}", pools)
    if backend == "trtllm":
        pool_warnings(ctx, pools)
    image = IMAGES[backend]
    name = _k8s_name(f"{i.model.rsplit('/', 1)[-1]}-{ctx.plan.placement}")
    config_map = f"{name}-engine-config"
    components: list[dict] = [
        {"name": "Frontend", "type": "frontend", "replicas": 1,
         "podTemplate": {"spec": {"containers": [{"name": "main", "image": image}]}}},
    ]
    engine_files: dict[str, str] = {}
    cmds: list[Command] = []
    module = f"dynamo.{backend}"
    for pool in pools:
        per_node = pool.gpus
        multinode = None
        if pool.hosts is not None and len(pool.hosts) > 1:
            sizes = {len(idx) for _, idx in pool.hosts}
            if len(sizes) > 1:
                ctx.warn.append(f"Dynamo gives every node of a multinode worker the same number "
                                f"of GPUs, but the {pool.role} pool puts "
                                f"{', '.join(f'{len(x)} on {h}' for h, x in pool.hosts)}; "
                                f"it is not exported")
                continue
            per_node = sizes.pop()
            multinode = {"nodeCount": len(pool.hosts)}
        config = None
        if backend == "trtllm":
            config = f"{pool.role}{'' if pool.design == 1 else pool.design}.yaml"
            engine_files[config] = yaml.safe_dump(llm_api_options(ctx, pool), sort_keys=False,
                                                  allow_unicode=False, width=1 << 16)
        args = _args(ctx, pool, backend, config)
        var = {"vllm": "VLLM_PP_LAYER_PARTITION", "sglang": "SGLANG_PP_LAYER_PARTITION"}
        env = pool.partition_env(var[backend]) if backend in var else {}
        main: dict = {"name": "main", "image": image,
                      "workingDir": f"/workspace/examples/backends/{backend}",
                      "command": ["python3", "-m", module], "args": args,
                      "envFrom": [{"secretRef": {"name": "hf-token-secret"}}]}
        if env:
            main["env"] = [{"name": k, "value": v} for k, v in env.items()]
        main["resources"] = {"limits": {"nvidia.com/gpu": str(per_node)}}
        spec: dict = {"containers": [main]}
        if config is not None:
            main["volumeMounts"] = [{"name": "engine-config", "mountPath": CONFIG_DIR,
                                     "readOnly": True}]
            spec["volumes"] = [{"name": "engine-config", "configMap": {"name": config_map}}]
        suffix = "" if pool.design == 1 else str(pool.design)
        comp: dict = {"name": f"{_PREFIX[backend]}{_ROLE[pool.role]}{suffix}",
                      "type": _TYPE[pool.role],
                      "replicas": pool.phase.replicas}
        if multinode:
            comp["multinode"] = multinode
        comp["podTemplate"] = {"spec": spec}
        components.append(comp)
        cmds.append(Command(pool.role, ["python3", "-m", module, *args], env, None, 0))
    if not cmds:
        return Export(ctx.engine, {}, ctx.warn, [])
    notes = [(f"autoplan export --to dynamo --backend {backend}: {i.model} on {i.topology}, "
              f"{ctx.plan.placement}; isl {i.isl}, osl {i.osl}, batch {i.batch}, dtype "
              f"{i.dtype}, KV {i.kv_dtype}")]
    for pool in pools:
        n = pool.phase.replicas
        notes.append(f"{pool.label}: {n} replica{'s' * (n != 1)} of {pool.where()}"
                     f"{' (replica 1)' if n > 1 else ''}")
    # Plan text goes in as data (annotations), emitted by the YAML serializer; the
    # comment lines are fixed text.
    annotations = {"autoplan/plan": "\n".join(notes)}
    if ctx.warn:
        annotations["autoplan/warnings"] = "\n".join(ctx.warn)
    doc = {"apiVersion": DYNAMO_API_VERSION, "kind": "DynamoGraphDeployment",
           "metadata": {"name": name, "annotations": annotations},
           "spec": {"backendFramework": backend, "components": components}}
    docs = [doc]
    if engine_files:
        docs.insert(0, {"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": config_map}, "data": engine_files})
    head = ["# autoplan export --to dynamo: what the plan deploys is in metadata.annotations",
            "# (autoplan/plan; autoplan/warnings: what is not exported, and why).",
            "# Substitute DYNAMO_VERSION (envsubst '$DYNAMO_VERSION', naming it: a bare envsubst",
            "# also rewrites any $ in the plan's text) and create the hf-token-secret first.",
            "# Kubernetes places the pods: the plan's device ids are not pinned here.",
            "# Format documented at:", *[f"#   {u}" for u in DYNAMO_V1BETA1_DOCS]]
    text = "\n".join(head) + "\n" + yaml.safe_dump_all(docs, sort_keys=False,
                                                        allow_unicode=False, width=1 << 16)
    return Export(ctx.engine, {FILE: text}, ctx.warn, cmds)


def _k8s_name(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:40].rstrip("-") or "autoplan"


ENGINE = Engine("Dynamo", build)
