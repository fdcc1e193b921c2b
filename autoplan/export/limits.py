"""The sizes an exported server is started with, and the engine limits a plan must meet.

* **Concurrent sequences** (``--max-num-seqs``, ``--max-running-requests``,
  ``max_batch_size``): a throughput (or devices) plan's servers run the batch the plan
  priced. A latency plan priced one batch at its SLO, but a server limited to that batch
  (1 for a batch-1 plan) queues every other request; its servers take as many sequences
  as the memory the plan leaves allows: the largest batch whose KV cache (at the pool's
  context) fits every stage's device under the plan's memory fraction, by the cost
  model's memory per device, and never fewer than the plan's batch.
* **Context length** (``--max-model-len``, ``--context-length``, ``max_seq_len``): the
  next whole KV block above isl + osl (a request's prompt plus its output, and room for
  the tokens a chat template adds), in the engine's block size, but never above the
  model's own context (``max_position_embeddings`` and its ``rope_scaling``), which the
  engines refuse to exceed at start-up.
* **Engine limits**: rules an engine enforces at start-up (e.g. vLLM's NixlConnector and
  pipeline parallelism), refused here with the pool and the rule rather than exported
  into a server that exits.
"""

from __future__ import annotations

from autoplan.cost.evaluate import placements
from autoplan.cost.inflight import step_budget
from autoplan.cost.pipeline import memories_for
from autoplan.errors import InputError
from autoplan.export.flags import ENGINE_LIMITS
from autoplan.inputs.workload import MAX_BATCH


def block_len(tokens: int, block: int, limit: int | None = None) -> int:
    """The next whole ``block`` strictly above ``tokens`` (isl + osl), at most ``limit``
    (the model's context, which a server refuses to exceed; a plan's isl + osl fits it)."""
    n = (tokens // block + 1) * block
    return n if limit is None else max(tokens, min(n, limit))


def max_seqs(ctx, pool) -> int:
    """Sequences a server of ``pool`` runs at once (see the module's docstring)."""
    i = ctx.plan.inputs
    planned = i.prefill_batch if pool.role == "prefill" and i.prefill_batch else i.batch
    if pool.batch is not None:  # a more design runs its own batch
        planned = pool.batch
    if i.objective != "latency":
        return planned
    pc = ctx.plan_context
    if pc is None:  # the plan's model or topology cannot be rebuilt (check=False)
        ctx.warn.append(f"the {pool.role} pool's concurrent sequences are the plan's batch "
                        f"({planned}): the plan's model or topology could not be rebuilt to "
                        f"size them from memory")
        return planned
    stages = placements(pool.phase)
    if sum(st.end - st.first for st in stages) != pc.model.num_layers:
        # an unchecked plan whose stages do not cover the model once: pricing it would be
        # meaningless (and slow: one stage memory a stage, of any number of stages)
        ctx.warn.append(f"the {pool.role} pool's concurrent sequences are the plan's batch "
                        f"({planned}): its stages do not cover the model's layers once")
        return planned
    frac = i.max_memory_fraction

    def totals(b: int) -> list[tuple[float, float]]:
        w = pc.work
        if pool.role == "prefill":
            kv, c, tok = b, w.isl, w.pb * w.isl
        elif pool.role == "decode":
            kv, c, tok = b, w.isl + w.osl, b
        else:  # a colocated server's largest step is its step budget (in-flight batching)
            kv, c, tok = b, w.isl + w.osl, max(step_budget(pc.topo, w).tokens, b)
        mems = memories_for(pc.model, pc.topo, stages, kv, c, tok, pc.work.precision)
        return [(m.total_bytes, frac * pc.topo.kinds[st.kind].capacity_bytes)
                for m, st in zip(mems, stages, strict=True)]

    try:
        at, nxt = totals(planned), totals(planned + 1)
        best = MAX_BATCH
        for (t0, cap), (t1, _) in zip(at, nxt, strict=True):
            slope = t1 - t0
            if slope > 0:
                best = min(best, planned + int((cap - t0) // slope))
        best = max(planned, min(best, MAX_BATCH))
        while best > planned and any(t > cap for t, cap in totals(best)):
            best -= 1  # memory is affine in the batch; this corrects rounding only
    except (ArithmeticError, KeyError, ValueError):  # an unchecked plan the model cannot price
        ctx.warn.append(f"the {pool.role} pool's concurrent sequences are the plan's batch "
                        f"({planned}): the cost model cannot price this (unchecked) plan's "
                        f"memory")
        return planned
    return best


def check_parallel(engine: str, pools) -> None:
    """Refuse a pool whose expert-parallel or attention-DP shape the engine cannot run
    (``hardware/engine_rules.yaml``), naming the pool and the rule."""
    from autoplan.catalog import engine_rules

    base = engine.removeprefix("dynamo-")
    er = engine_rules().get(base)
    label = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM"}.get(base, base)
    for pool in pools:
        size = pool.tp * pool.dp
        name = "colocated" if pool.role == "server" else pool.role
        if er is not None and er.ep_all_devices and pool.ep not in (1, size):
            raise InputError(
                f"{label} cannot run the {name} pool of this plan (EP {pool.ep} on TP "
                f"{pool.tp} x DP {pool.dp}): expert parallelism: --enable-expert-parallel "
                f"shards experts over all DP x TP ranks (EP = TP x DP); re-plan it with EP "
                f"{size} or export it to another engine")
        if er is not None and er.attention_dp_all_devices and pool.dp not in (1, size):
            raise InputError(
                f"{label} cannot run the {name} pool of this plan (attention DP {pool.dp} of "
                f"TP {pool.tp}): expert parallelism: enable_attention_dp runs attention with "
                f"TP 1 per rank; re-plan it with attention DP {size} or export it to another "
                f"engine")
        hosts = pool.replica_hosts[0]
        if base == "vllm" and pool.dp > 1 and hosts is not None and len(hosts) > 1 and (
                pool.pp > 1 or any(len(idx) % pool.tp for _, idx in hosts)):
            raise InputError(
                f"vLLM cannot run the {name} pool of this plan (DP {pool.dp} over "
                f"{len(hosts)} hosts with PP {pool.pp}): multi-host data parallelism "
                f"starts one `vllm serve` per host with whole DP ranks of one stage; "
                f"export it to SGLang or re-plan it on one host")


def check_limits(engine: str, pools) -> None:
    """Refuse a pool an engine would not start, naming the pool and the rule."""
    for rule in ENGINE_LIMITS.get(engine, ()):
        for pool in pools:
            if pool.role in rule["roles"] and pool.pp > rule["max_pp"]:
                raise InputError(
                    f"{rule['engine']} cannot run the {pool.role} pool of this plan (PP "
                    f"{pool.pp}): {rule['rule']} ({rule['source']}); re-plan it with PP "
                    f"{rule['max_pp']} or export it to another engine")
