"""TensorRT-LLM: one ``trtllm-serve`` a replica in ``launch.sh``, each with its pool's
extra LLM-API options (``extra-llm-api-<pool>.yaml``), and for a disaggregated plan the
``trtllm-serve disaggregated -c disagg.yaml`` server in front of the context (prefill)
and generation (decode) servers.

Every file is written by ``yaml.safe_dump`` from plain data; every shell word is quoted.
"""

from __future__ import annotations

from dataclasses import replace

import yaml

from autoplan.cost.inflight import DEFAULT_STEP_TOKENS, step_budget
from autoplan.cost.pipeline import even_cuts
from autoplan.export.common import ROUTER_PORT, SERVER_PORT, Command, Ctx, Engine, Export
from autoplan.export.flags import TRTLLM_BLOCK, TRTLLM_DOCS, TRTLLM_MPI_DOCS
from autoplan.export.limits import block_len, check_parallel, max_seqs
from autoplan.export.pools import Pool
from autoplan.export.script import Row, launch_script, one_host_row

DISAGG_FILE = "disagg.yaml"
BACKEND = "pytorch"


def options_file(pool: Pool) -> str:
    return f"extra-llm-api-{pool.role}{'' if pool.design == 1 else pool.design}.yaml"


def llm_api_options(ctx: Ctx, pool: Pool) -> dict:
    """The pool's LLM-API options (the ``--extra_llm_api_options`` / Dynamo
    ``--extra-engine-args`` YAML): parallelism, batch and token limits, the KV cache."""
    i = ctx.plan.inputs
    seqs = max_seqs(ctx, pool)
    pb = pool.batch if pool.batch is not None else i.prefill_batch or i.batch
    # A colocated server's steps are the in-flight batching the plan priced: its step
    # budget (the engine's default unless the plan set one), decode tokens and chunks.
    tokens = {"prefill": pb * i.isl, "decode": seqs}.get(pool.role, None)
    if tokens is None:
        pc = ctx.plan_context
        tokens = (step_budget(pc.topo, pc.work).tokens if pc is not None
                  else i.step_tokens or DEFAULT_STEP_TOKENS)
    if pool.dp > 1:
        # With attention DP every rank schedules its own requests: the limits are per
        # rank (its share of the batch; a whole prompt where the pool prefills; a
        # colocated rank keeps its step budget).
        seqs = -(-seqs // pool.dp)
        if pool.role in ("prefill", "decode"):
            tokens = max(-(-tokens // pool.dp), i.isl if pool.role != "decode" else seqs)
    opts: dict = {
        "tensor_parallel_size": pool.tp * pool.dp,
        "pipeline_parallel_size": pool.pp,
        "max_batch_size": seqs,
        "max_num_tokens": tokens,
        "max_seq_len": block_len(ctx.max_len, TRTLLM_BLOCK, ctx.context_cap),
        "kv_cache_config": {"free_gpu_memory_fraction": float(f"{i.max_memory_fraction:g}"),
                            "dtype": "fp8" if i.kv_dtype == "fp8" else "auto"},
    }
    if pool.ep > 1:
        opts["moe_expert_parallel_size"] = pool.ep
    if pool.dp > 1:
        opts["enable_attention_dp"] = True  # attention TP 1 on every rank (dp = tp_size)
    if pool.role != "server":
        # the KV cache goes from context to generation servers over the transceiver
        opts["cache_transceiver_config"] = {"backend": "DEFAULT"}
    if pool.role == "prefill":
        opts["disable_overlap_scheduler"] = True  # not supported on context-only servers
    return opts


def pool_warnings(ctx: Ctx, pools: list[Pool]) -> None:
    """What TensorRT-LLM does not take from the plan, said once."""
    i = ctx.plan.inputs
    if i.dtype not in ("bf16", "fp16"):
        ctx.warn.append(f"weights format {i.dtype}: TensorRT-LLM reads it from the checkpoint; "
                        f"serve a checkpoint already quantized to {i.dtype}")
    if i.kv_dtype not in ("fp8", "bf16", "fp16"):
        ctx.warn.append(f"a {i.kv_dtype} KV cache has no TensorRT-LLM setting here; the KV "
                        f"cache is left at the engine's default (auto)")
    for pool in pools:
        even = [b - a for a, b in even_cuts(sum(pool.partition), pool.pp)]
        if pool.pp > 1 and sorted(pool.partition) != sorted(even):
            ctx.warn.append(f"TensorRT-LLM splits the layers evenly over the {pool.pp} "
                            f"pipeline stages of the {pool.role} pool ({even}); the plan's "
                            f"cuts {pool.partition} are not expressed")


def build(ctx: Ctx, pools: list[Pool]) -> Export:
    check_parallel("trtllm", pools)
    pool_warnings(ctx, pools)
    rows: list[Row] = []
    files: dict[str, str] = {}
    port = SERVER_PORT
    urls: dict[str, list[str]] = {"server": [], "prefill": [], "decode": []}
    for pool in pools:
        if pool.vendor == "amd":
            ctx.warn.append(f"TensorRT-LLM runs on NVIDIA GPUs only; the {pool.role} pool "
                            f"(AMD GPUs) is not exported")
            continue
        opts = llm_api_options(ctx, pool)
        exported = 0
        for r in range(pool.phase.replicas):
            hosts = pool.replica_hosts[r]
            launch: list[str] = []
            if hosts is not None and len(hosts) > 1:
                # one CUDA_VISIBLE_DEVICES for every rank: each host's GPUs are the first
                # ones of the widest host's (local ranks take them in order)
                widest = max((idx for _, idx in hosts), key=len)
                if any(idx != widest[:len(idx)] for _, idx in hosts):
                    ctx.warn.append(
                        f"replica {r + 1} of the {pool.role} pool spans hosts "
                        f"{', '.join(h for h, _ in hosts)} on different GPU indices: one "
                        f"mpirun cannot give each host its own CUDA_VISIBLE_DEVICES; it is "
                        f"not exported")
                    continue
                world = sum(len(idx) for _, idx in hosts)
                launch = ["mpirun", "-np", str(world),
                          "-H", ",".join(f"{h}:{len(idx)}" for h, idx in hosts),
                          "-x", "CUDA_VISIBLE_DEVICES", "trtllm-llmapi-launch"]
                ctx.warn.append(
                    f"replica {r + 1} of the {pool.role} pool spans hosts "
                    f"{', '.join(h for h, _ in hosts)}: launch.sh starts it as one MPI world "
                    f"(OpenMPI mpirun from {hosts[0][0]}, passwordless ssh to the others, "
                    f"trtllm-llmapi-launch on every rank)")
            argv = [*launch, "trtllm-serve", "serve", ctx.model, "--host", "0.0.0.0",
                    "--port", str(port),
                    "--backend", BACKEND, "--tp_size", str(opts["tensor_parallel_size"]),
                    "--pp_size", str(pool.pp),
                    *(["--ep_size", str(pool.ep)] if pool.ep > 1 else []),
                    "--max_batch_size", str(opts["max_batch_size"]),
                    "--max_num_tokens", str(opts["max_num_tokens"]),
                    "--max_seq_len", str(opts["max_seq_len"]),
                    "--kv_cache_free_gpu_memory_fraction",
                    str(opts["kv_cache_config"]["free_gpu_memory_fraction"]),
                    "--extra_llm_api_options", f"./{options_file(pool)}"]
            row, head = one_host_row(pool, r, argv, {})
            if launch:  # the widest host's GPUs, exported to every rank by -x
                row = (row[0], row[1], replace(row[2], env=pool.visible(widest)))
            rows.append(row)
            urls[pool.role].append(f"{head}:{port}")
            port += 1
            exported += 1
        if exported:
            files[options_file(pool)] = _yaml(ctx, f"LLM-API options of the {pool.role} pool",
                                              opts)
    extra: list[Command] = []
    notes = [("Run launch.sh from its folder: the servers read their extra-llm-api-*.yaml "
             "from it.")]
    if ctx.plan.placement == "disaggregated":
        if urls["prefill"] and urls["decode"]:
            disagg = {"hostname": "0.0.0.0", "port": ROUTER_PORT, "backend": BACKEND,
                      "context_servers": {"num_instances": len(urls["prefill"]),
                                          "urls": urls["prefill"]},
                      "generation_servers": {"num_instances": len(urls["decode"]),
                                             "urls": urls["decode"]}}
            files[DISAGG_FILE] = _yaml(ctx, "trtllm-serve disaggregated server", disagg)
            extra.append(Command("router", ["trtllm-serve", "disaggregated", "-c",
                                            f"./{DISAGG_FILE}"], {}, None, 0))
        else:
            ctx.warn.append("no disaggregated server: one of the two pools is not exported, "
                            "so the exported servers cannot serve requests by themselves")
    elif len(urls["server"]) > 1:
        notes += [(f"{len(urls['server'])} independent TensorRT-LLM servers, one per replica: "
                  "spread requests over them with an HTTP load balancer:"),
                  "  " + " ".join(f"http://{u}" for u in urls["server"])]
    mpi = any(c.argv[:1] == ["mpirun"] for _, _, c in rows)
    exp = launch_script(ctx, rows, extra, notes, TRTLLM_DOCS + (TRTLLM_MPI_DOCS if mpi else ()))
    exp.files.update(files)
    return exp


def _yaml(ctx: Ctx, what: str, data: dict) -> str:
    """A YAML file of plain data (``yaml.safe_dump``); the comment line is fixed text."""
    return (f"# autoplan export --to {ctx.engine}: {what}\n"
            + yaml.safe_dump(data, sort_keys=False, allow_unicode=False, width=1 << 16))


ENGINE = Engine("TensorRT-LLM", build)
