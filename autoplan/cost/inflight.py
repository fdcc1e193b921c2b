"""In-flight batching of a colocated (aggregated) server: its steps, TPOT and TTFT.

A colocated replica serves ``B`` sequences at once (``batch``: the engine's running
requests, a benchmark's concurrency). Each request holds its slot for ``n`` prefill steps
and then ``osl - 1`` decode steps. The engine runs one forward pass (a *step*) at a time
under a token budget ``N`` per step (the engine's default, ``hardware/engines.yaml``:
vLLM ``max_num_batched_tokens``, SGLang ``--chunked-prefill-size``, TensorRT-LLM
``max_num_tokens``; ``Workload.step_tokens`` overrides it).

Mixed steps (vLLM, TensorRT-LLM: decodes first, prompt chunks in the rest of the budget)::

    K = N - (B - 1)               chunk tokens a step can give the entering prompt
    n = ceil(isl / K)             steps that prefill one prompt
    q = ceil(isl / n)             tokens of each of its chunks (equal chunks)
    c0 = (isl - q) / 2            mean cached prefix of a chunk (the n chunks then do
                                  exactly the causal (query, key) pairs of the prompt)
    f = B n / (n + osl - 1)       chunks per step: every slot spends n of its n + osl - 1
                                  steps prefilling (flow balance at steady state)

Steps carry ``j = floor(f)`` or ``j + 1`` chunks (fractions ``1 - r`` and ``r``, ``r = f -
floor(f)``, so the mean is ``f``; for ``f < 1`` most steps are pure decode). A step with
``j`` chunks runs ``B - j`` decode tokens at the mean context ``isl + osl / 2`` and ``j``
chunks of ``q`` tokens after ``c0`` cached ones, through the same per-stage pricing as
every other pass (GEMMs over all ``B - j + j q`` rows, decode attention over the
sequences' KV, chunk attention over its prefix, all-reduces and hand-offs of the mixed
activations). The budget must carry the flow: ``(B - j') + j' q <= N`` for the largest
``j'`` used, else the pool cannot sustain ``B`` (:class:`~autoplan.errors.InputError`).

- TPOT is the mean time between two tokens of a decoding sequence: the steps' times
  weighted by the decode tokens they emit, ``sum p_j (B - j) T_j / sum p_j (B - j)``.
- TTFT = ``n`` steps that carry the prompt's chunk (a step with ``j >= 1`` chunks, weighted
  by ``p_j j``) plus the wait for the step in progress to end, plus the server's handling
  of the request (:data:`~autoplan.cost.roofline.REQUEST`: the engine's
  ``request_overhead_s``, host time the GPU does not wait for).

Separate prefill steps (SGLang by default, ``--enable-mixed-chunk`` off): a prompt's
``n = ceil(isl / N)`` chunks run as steps of their own, the running decodes wait; every
decode step of ``B`` sequences is followed on average by ``(B - 1) n / (osl - 1)`` prefill
steps of other prompts. TPOT = ``T_dec + (B - 1) n / (osl - 1) T_chunk``; TTFT = ``n
T_chunk`` plus the wait. Each prefill step carries one prompt's chunk (SGLang packs
waiting prompts into one prefill batch up to the budget; with several prompts per decode
step, that is cheaper than priced here by the weight reads of the steps saved).

Queueing model of TTFT at the planned load: requests arrive deterministically (evenly
spaced) at the planned rate, at most the replica's rate ``B / (TTFT + (osl - 1) TPOT)``,
with a random phase to the engine's step clock. A slot is then free on arrival (D/D/B:
a departure precedes each arrival), and the prompt waits only for the step in progress to
end: half the mean step, ``E[T] / 2`` (the length-biased residual ``E[T^2] / 2E[T]`` is
larger by ``Var(T) / 2E[T]``, small where chunk steps are a small share). With ``B = 1``
there is no step in progress (the one slot just freed) and no other sequence to mix with:
TTFT is the bare chunked prefill and TPOT the pure decode step. Where it stops holding:
random (Poisson) arrivals queue for slots, and their wait grows without bound as the load
approaches the replica's rate (the throughput objective's operating point), so a plan for
such traffic needs a request rate below the replica rates it reports; bursts of prompts
(several arriving within one prefill) share the budget and take more steps than ``n``.

Attention DP (``ranks`` > 1): every rank runs this step mix on its own share of the
sequences. With mixed steps the ranks' prompt chunks fall in different steps (the arrivals
above reach the ranks in turn; the engines' default schedulers do not align them), and a
step lasts as long as its busiest rank: :func:`dp_mixed_passes` prices the combinations.
With separate prefill steps (SGLang) a rank's prefill step runs beside the other ranks'
decode steps, and the step lasts as long as the busiest: :func:`dp_separate_passes`.

Every figure is a weighted sum of forward passes: :func:`colocated_passes` lists, per
metric, the ``(weight, Shape)`` pairs; the planner's tables and ``evaluate`` price those
passes with the same stage cost, so they agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from autoplan.cost.roofline import REQUEST, Shape, phase_shape
from autoplan.errors import InputError
from autoplan.graphs.topology import Topology
from autoplan.inputs.topology import EngineFacts
from autoplan.inputs.workload import Workload

DEFAULT_STEP_TOKENS = 8192
"""Step budget of kinds priced without an engine (the roofline calibration): the default
the three engines share on 80-141 GB GPUs (``hardware/engines.yaml``)."""

GIB = float(1 << 30)

MIN_MIX_WEIGHT = 1e-12
"""Attention-DP step combinations rarer than this share of the steps are not priced."""


@dataclass(frozen=True)
class StepBudget:
    tokens: int  # tokens of one step: decode tokens and prefill chunks together
    mixed: bool  # a step with a chunk also carries the running decodes
    source: str  # where the number comes from


def kind_step_tokens(facts: EngineFacts, name: str, capacity_bytes: float) -> int:
    """The engine's default step budget on one device kind (its memory-size rules)."""
    for key, tokens in facts.step_tokens_by_name.items():
        if key in name.lower():
            return tokens
    tokens = facts.step_tokens
    for gib, t in facts.step_tokens_by_memory:
        if capacity_bytes >= gib * GIB:
            tokens = t
    return tokens


def step_budget(topo: Topology, work: Workload) -> StepBudget:
    """The step budget of a colocated server on ``topo``: ``work.step_tokens``, else the
    smallest default of the engine on the topology's kinds (one engine serves a plan)."""
    facts = [(k, topo.kinds[k], topo.kinds[k].calibration.engine) for k in topo.kind_names
             if topo.kinds[k].calibration is not None]
    engines = [(k, kd, f) for k, kd, f in facts if f is not None]
    mixed = all(f.mixed_steps for _, _, f in engines)
    if work.step_tokens is not None:
        return StepBudget(work.step_tokens, mixed, "given")
    if not engines:
        return StepBudget(DEFAULT_STEP_TOKENS, True, "default (no engine)")
    k, kd, f = min(engines, key=lambda e: kind_step_tokens(e[2], e[0], e[1].capacity_bytes))
    return StepBudget(kind_step_tokens(f, k, kd.capacity_bytes), mixed,
                      f"{f.name} {f.version} default on {k}")


@dataclass(frozen=True)
class Steps:
    """The step mix of a colocated replica at batch ``B`` (see the module docstring)."""

    budget: StepBudget
    prompt_steps: int  # n
    chunk: int  # q
    chunk_context: float  # c0
    chunks_per_step: float  # f (mixed) or prefill steps per decode step (separate)
    wait: float  # steps' share of TTFT spent waiting (1/2 of the mean step, 0 at B = 1)


def steps_of(work: Workload, budget: StepBudget) -> Steps:
    B, isl, osl, N = work.batch, work.isl, work.osl, budget.tokens
    room = N - (B - 1) if budget.mixed else N
    if room < 1:
        raise InputError(f"a colocated replica of batch {B} does not fit the step budget of "
                         f"{N} tokens ({budget.source}): its decode tokens alone fill it")
    n = math.ceil(isl / room)
    q = math.ceil(isl / n)
    if budget.mixed:
        f = B * n / (n + osl - 1)
        most = math.ceil(f)
        if (B - most) + most * q > N:
            raise InputError(
                f"a colocated replica of batch {B} cannot sustain its prompt flow: "
                f"{f:.3g} prompt chunks of {q} tokens per step and {B} sequences exceed the "
                f"step budget of {N} tokens ({budget.source})")
    else:
        f = (B - 1) * n / (osl - 1) if osl > 1 else 0.0
    return Steps(budget, n, q, (isl - q) / 2, f, 0.5 if B > 1 else 0.0)


def _mixed_step(work: Workload, s: Steps, j: int) -> Shape:
    dec = phase_shape("decode", work.batch - j, work.isl, work.osl)
    if j == 0:
        return dec
    if work.batch == j:  # chunks only: a prefill pass of j chunks after their prefixes
        return Shape(batch=j, new=s.chunk, context_before=s.chunk_context)
    return Shape(dec.batch, 1, dec.context_before, s.chunk, j, s.chunk_context)


def colocated_passes(work: Workload, s: Steps) -> dict[str, list[tuple[float, Shape]]]:
    """Per metric (``prefill``: TTFT, ``decode``: TPOT), the forward passes whose
    weighted sum it is (weights with zero dropped)."""
    B = work.batch
    if s.budget.mixed:
        j = math.floor(s.chunks_per_step)
        r = s.chunks_per_step - j
        mix = [(1 - r, j), (r, j + 1)]
        return _mixed_passes(work, s, [(p, k) for p, k in mix if p > 0 and k <= B])
    dec = phase_shape("decode", B, work.isl, work.osl)
    chunk = Shape(batch=1, new=s.chunk, context_before=s.chunk_context)
    g = s.chunks_per_step
    tpot = [(1.0, dec), (g, chunk)]
    ttft = [(float(s.prompt_steps), chunk), (s.wait / (1 + g), dec), (s.wait * g / (1 + g), chunk)]
    # TTFT as the client sees it: the server's handling of the request besides.
    return {"decode": _merge(tpot), "prefill": _merge(ttft + [(1.0, REQUEST)])}


def _mixed_passes(work: Workload, s: Steps,
                  mix: list[tuple[float, int]]) -> dict[str, list[tuple[float, Shape]]]:
    """The passes of mixed steps of ``work.batch`` sequences that carry ``k`` prompt
    chunks in a share ``p`` of the steps, for each ``(p, k)`` of ``mix``."""
    B = work.batch
    emitted = sum(p * (B - k) for p, k in mix)
    # Mean step time over the decode tokens emitted (the mean step, when none are).
    tpot = [(p * (B - k) / emitted if emitted else p, _mixed_step(work, s, k)) for p, k in mix]
    carrying = sum(p * k for p, k in mix if k)
    own = [(p * k / carrying, _mixed_step(work, s, k)) for p, k in mix if k]
    if not own:  # no chunk at all at this load: the prompt's step carries one
        own = [(1.0, _mixed_step(work, s, 1))]
    mean = [(p, _mixed_step(work, s, k)) for p, k in mix]
    ttft = [(s.prompt_steps * w, sh) for w, sh in own] + [(s.wait * w, sh) for w, sh in mean]
    # TTFT as the client sees it: the server's handling of the request besides.
    return {"decode": _merge(tpot), "prefill": _merge(ttft + [(1.0, REQUEST)])}


def _merge(parts: list[tuple[float, Shape]]) -> list[tuple[float, Shape]]:
    out: dict[Shape, float] = {}
    for w, sh in parts:
        if w > 0:
            out[sh] = out.get(sh, 0.0) + w
    return [(w, sh) for sh, w in out.items()]


def largest_pass_tokens(passes: dict[str, list[tuple[float, Shape]]]) -> int:
    """Tokens of the largest forward pass (activation workspace)."""
    return max(sh.tokens for ps in passes.values() for _, sh in ps)


def inflight(topo: Topology, work: Workload,
             ranks: int = 1) -> tuple[Steps, dict[str, list[tuple[float, Shape]]]]:
    """The step mix and the priced passes of a colocated replica of ``work`` on ``topo``.

    ``ranks``: data-parallel attention ranks, each its own scheduler with its own step
    budget and ``ceil(batch / ranks)`` of the sequences (SGLang, vLLM and TensorRT-LLM
    schedule every DP rank alone): the mix is one rank's, and the passes carry every
    rank's decode tokens and chunks (the stage prices the busiest rank's share; with
    mixed steps, in the combinations :func:`dp_mixed_passes` gives)."""
    if ranks <= 1:
        s = steps_of(work, step_budget(topo, work))
        return s, colocated_passes(work, s)
    rank = replace(work, batch=-(-work.batch // ranks))
    s = steps_of(rank, step_budget(topo, rank))
    return s, (dp_mixed_passes if s.budget.mixed else dp_separate_passes)(rank, s, ranks)


def _binomial(n: int, p: float) -> list[tuple[float, int]]:
    """(chance, k) of k successes in n trials of chance p, those of at least
    :data:`MIN_MIX_WEIGHT`."""
    out = [(math.comb(n, k) * p ** k * (1 - p) ** (n - k), k) for k in range(n + 1)]
    return [(w, k) for w, k in out if w >= MIN_MIX_WEIGHT]


def dp_separate_passes(rank: Workload, s: Steps,
                       ranks: int) -> dict[str, list[tuple[float, Shape]]]:
    """The passes of ``ranks`` attention-DP ranks of separate prefill steps (SGLang), each
    rank ``rank``'s step sequence on its own: a rank's step is one of its prompt's
    chunks in ``pi = g / (1 + g)`` of its steps (``g``: prefill steps per decode step),
    else a decode step of its sequences, independently of the others. SGLang runs each
    DP rank's own batch in the same iteration, one rank's prefill beside another's
    decodes, the MoE over the sum of their tokens (``prepare_mlp_sync_batch``,
    ``DpPaddingMode.SUM_LEN`` in ``python/sglang/srt/layers/dp_attention.py``); its
    ``--enable-prefill-delayer``, which holds prefills back to align ranks, is off by
    default. A step with ``K`` ranks prefilling carries their ``K`` chunks and the other
    ranks' decodes, and lasts as long as its busiest rank (priced as a mixed step of
    :func:`autoplan.cost.expert_parallel.rank_shape`: its chunk beside what decodes the
    rank's share leaves, an upper bound on the longer of the two).

    A rank emits a token every ``1 + g`` of its steps, so TPOT is ``(1 + g)`` mean steps;
    a prompt's ``n`` chunk steps are steps where its rank prefills (``K - 1`` of the
    others with it)."""
    B = rank.batch
    g = s.chunks_per_step
    pi = g / (1 + g)
    dec = phase_shape("decode", B, rank.isl, rank.osl)

    def step(k: int) -> Shape:
        if k == 0:
            return replace(dec, batch=B * ranks)
        if k == ranks:
            return Shape(batch=ranks, new=s.chunk, context_before=s.chunk_context)
        return Shape(B * (ranks - k), 1, dec.context_before, s.chunk, k, s.chunk_context)

    steps = _binomial(ranks, pi)
    tpot = [((1 + g) * w, step(k)) for w, k in steps]
    own = [(w, step(k + 1)) for w, k in _binomial(ranks - 1, pi)]
    ttft = ([(s.prompt_steps * w, sh) for w, sh in own]
            + [(s.wait * w, step(k)) for w, k in steps])
    return {"decode": _merge(tpot), "prefill": _merge(ttft + [(1.0, REQUEST)])}


def dp_mixed_passes(rank: Workload, s: Steps,
                    ranks: int) -> dict[str, list[tuple[float, Shape]]]:
    """The passes of ``ranks`` attention-DP ranks of mixed steps, each rank ``rank``'s
    step mix on its own: a rank's step carries ``j`` or ``j + 1`` prompt chunks (chances
    ``1 - r`` and ``r``, as :func:`colocated_passes`), independently of the others. The
    arrivals the steady state assumes (evenly spaced, dealt to the ranks in turn) reach
    the ranks at different steps, and the engines' default schedulers do not align them
    (TensorRT-LLM's ``attention_dp_config.enable_balance`` is off by default). A step is
    then as long as its busiest rank: the attention side of a rank whose step carries an
    extra chunk holds back every rank at the next MoE layer, whose experts run every
    rank's tokens. TensorRT-LLM's "ADP Balance Strategy" (tech blog 10,
    docs/source/blogs/tech_blog/blog10_ADP_Balance_Strategy.md) measures this on
    DeepSeek-V3 at attention DP 8: a per-iteration balance ratio (mean over maximum
    tokens of a rank) of 54% without it, and 1.31-1.33x the throughput with it.

    So ``K`` of the ``ranks`` carry ``j + 1`` chunks with the binomial chance
    ``C(ranks, K) r^K (1 - r)^(ranks - K)``; the pass carries every rank's decode tokens
    and ``ranks j + K`` chunks, and the stage prices its busiest rank (``j + 1`` chunks
    once ``K > 0``: :func:`autoplan.cost.expert_parallel.rank_shape`). The chunks per
    step are the lockstep mix's on average (the same flow); the busiest rank carries the
    extra chunk in ``1 - (1 - r)^ranks`` of the steps instead of ``r``."""
    B = rank.batch
    j = math.floor(s.chunks_per_step)
    r = s.chunks_per_step - j if j + 1 <= B else 0.0
    # combinations of under 1e-12 of the steps are dropped (at DP 64 most of the 65 are);
    # the busiest rank's activation workspace is the same at every K > 0
    return _mixed_passes(replace(rank, batch=B * ranks), s,
                         [(p, ranks * j + k) for p, k in _binomial(ranks, r)])


def pool_passes(topo: Topology, work: Workload, pool: str,
                ranks: int = 1) -> dict[str, list[tuple[float, Shape]]] | None:
    """Per phase a pool serves, the weighted forward passes of its figure: one pass of a
    prefill or decode pool; a colocated pool's step mix at ``ranks`` DP ranks (None: it
    cannot sustain ``work.batch``, :func:`inflight` says why)."""
    if pool != "colocated":
        b = work.phase_batch(pool)
        one = [(1.0, phase_shape(pool, b, work.isl, work.osl))]
        # a prefill pool's TTFT: its pass and the server's handling of the requests it
        # batches, one after another (the server hands requests to the engine one at a
        # time): batching prompts does not amortise request handling
        return {pool: one + [(float(b), REQUEST)] if pool == "prefill" else one}
    try:
        return inflight(topo, work, ranks)[1]
    except InputError:
        return None
