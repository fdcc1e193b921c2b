"""Dynamo: a ``DynamoGraphDeployment`` (``deployment.yaml``) of vLLM workers.

One worker service a pool (``multinode`` where it spans hosts) behind a Frontend;
Kubernetes places the pods, so the plan's device ids are not pinned.
"""

from __future__ import annotations

import re

import yaml

from autoplan.export.common import Command, Ctx, Engine, Export, precision_flags, sizing_args
from autoplan.export.flags import DYNAMO_DOCS, VLLM_KV_FP8, VLLM_SIZING
from autoplan.export.pools import Pool

FILE = "deployment.yaml"
IMAGE = "nvcr.io/nvidia/ai-dynamo/vllm-runtime:${DYNAMO_VERSION}"
_SERVICE = {"server": "VllmWorker", "prefill": "VllmPrefillWorker",
            "decode": "VllmDecodeWorker"}


def build(ctx: Ctx, pools: list[Pool]) -> Export:
    i = ctx.plan.inputs
    prec = precision_flags(ctx, VLLM_KV_FP8)
    services: dict[str, dict] = {
        "Frontend": {"componentType": "frontend", "replicas": 1,
                     "extraPodSpec": {"mainContainer": {"image": IMAGE}}},
    }
    cmds: list[Command] = []
    for pool in pools:
        args = ["--model", ctx.model, *sizing_args(ctx, pool, VLLM_SIZING), *prec]
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
        env = pool.partition_env("VLLM_PP_LAYER_PARTITION")
        if env:
            svc["envs"] = [{"name": k, "value": v} for k, v in env.items()]
        svc["extraPodSpec"] = {"mainContainer": {
            "image": IMAGE, "workingDir": "/workspace/examples/backends/vllm",
            "command": ["python3", "-m", "dynamo.vllm"], "args": args}}
        services[_SERVICE[pool.role]] = svc
        cmds.append(Command(pool.role, ["python3", "-m", "dynamo.vllm", *args], env, None, 0))
    notes = [(f"autoplan export --to dynamo: {i.model} on {i.topology}, {ctx.plan.placement}; "
              f"isl {i.isl}, osl {i.osl}, batch {i.batch}, dtype {i.dtype}, KV {i.kv_dtype}")]
    for pool in pools:
        n = pool.phase.replicas
        notes.append(f"{pool.role}: {n} replica{'s' * (n != 1)} of {pool.where()}"
                     f"{' (replica 1)' if n > 1 else ''}")
    # Plan text goes in as data (annotations), emitted by the YAML serializer; the
    # comment lines are fixed text.
    annotations = {"autoplan/plan": "\n".join(notes)}
    if ctx.warn:
        annotations["autoplan/warnings"] = "\n".join(ctx.warn)
    doc = {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
           "metadata": {"name": _k8s_name(f"{i.model.rsplit('/', 1)[-1]}-{ctx.plan.placement}"),
                        "annotations": annotations},
           "spec": {"backendFramework": "vllm", "services": services}}
    head = ["# autoplan export --to dynamo: what the plan deploys is in metadata.annotations",
            "# (autoplan/plan; autoplan/warnings: what is not exported, and why).",
            "# Substitute DYNAMO_VERSION (e.g. envsubst) and create the hf-token-secret first.",
            "# Kubernetes places the pods: the plan's device ids are not pinned here.",
            "# Format documented at:", *[f"#   {u}" for u in DYNAMO_DOCS]]
    text = "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=False,
                                                    width=1 << 16)
    return Export(ctx.engine, {FILE: text}, ctx.warn, cmds)


def _k8s_name(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:63].rstrip("-") or "autoplan"


ENGINE = Engine("Dynamo's vLLM workers", build)
