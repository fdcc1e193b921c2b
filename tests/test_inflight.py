"""In-flight batching of colocated pools (autoplan.cost.inflight): physics of the mixed
step, the engines' step budgets, and the planner, the tables and validate pricing the
colocated step identically."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import cache
from itertools import pairwise

import pytest

from autoplan.catalog import engine_facts, load_model, load_topology
from autoplan.cost import kernels as kc
from autoplan.cost.estimate import place_even_pipeline
from autoplan.cost.evaluate import evaluate
from autoplan.cost.inflight import inflight, kind_step_tokens, step_budget
from autoplan.cost.pipeline import memories_for, pipeline_cost, pool_memory_args
from autoplan.cost.roofline import REQUEST, Shape, phase_shape
from autoplan.errors import InfeasibleError, InputError
from autoplan.inputs.workload import Precision, Workload
from autoplan.rules.validate import validate
from autoplan.search.planner import plan
from autoplan.search.tables import ROLES, TICKS_PER_S, build_tables

M70 = "meta-llama/Llama-3.1-70B"
BF16 = Precision("bf16", "bf16", "bf16")


@cache
def _system(engine: str | None, topo: str = "h200-x8", tp: int = 8):
    m = load_model(M70)
    t = load_topology(topo, None, engine)
    return m, t, place_even_pipeline(m, t, t.kind_names[0], tp, 1)


def _figs(engine, isl, osl, batch, **kw):
    m, t, st = _system(engine)
    w = Workload(isl, osl, batch, BF16, 0.9, **kw)
    colo = evaluate(m, t, w, "colocated", st, st)
    # The same stages as a disaggregated pair: pure prefill and pure decode passes.
    pure = evaluate(m, t, w, "disaggregated", st, st)
    return colo, pure


def _pass_s(engine, shape: Shape, batch=64, isl=4000, osl=500) -> float:
    """One forward pass of ``shape`` through the stages, independently of inflight."""
    m, t, st = _system(engine)
    w = Workload(isl, osl, batch, BF16, 0.9)
    mems = memories_for(m, t, st, *pool_memory_args("decode", w), BF16)
    return pipeline_cost(m, t, st, "decode", shape, BF16, mems).time_s


ENGINES = ["vllm", "sglang", "trtllm", None]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("batch", [2, 16, 64])
def test_mixed_step_tpot_between_pure_decode_and_decode_plus_a_prefill(engine, batch):
    """Chunks only add work to a step, and a decoding sequence waits at most for one whole
    prompt's prefill per step it takes."""
    colo, pure = _figs(engine, 4000, 500, batch)
    one_prompt = _pass_s(engine, phase_shape("prefill", 1, 4000, 500)) * 1e3
    assert pure.tpot_ms < colo.tpot_ms <= pure.tpot_ms + one_prompt


@pytest.mark.parametrize("engine", ENGINES)
def test_tpot_grows_with_isl_over_osl_and_tends_to_pure_decode(engine):
    # Shorter outputs (more prompts per step): more interference, and more of it per
    # token than the longer decode context adds to the pure step.
    extra = []
    for osl in (2000, 1000, 500, 250, 125):
        colo, pure = _figs(engine, 4000, osl, 32)
        extra.append(colo.tpot_ms - pure.tpot_ms)
    assert all(a < b for a, b in pairwise(extra))
    # Longer prompts at a fixed output: more prefill per request, slower steps.
    tp = [_figs(engine, isl, 500, 32)[0].tpot_ms for isl in (500, 2000, 4000, 8000)]
    assert all(a < b for a, b in pairwise(tp))
    # osl -> infinity: the prompts' share of the steps vanishes.
    colo, pure = _figs(engine, 4000, 400_000, 32)
    assert colo.tpot_ms == pytest.approx(pure.tpot_ms, rel=2e-3)


@pytest.mark.parametrize("engine", ENGINES)
def test_ttft_at_least_the_chunked_prefill(engine):
    """A 20,000-token prompt over an 8192-token budget takes ceil(20000 / room) chunks;
    each runs at least as long as that chunk alone, after its prefix."""
    isl, B = 20_000, 16
    colo, _ = _figs(engine, isl, 500, B)
    _, t, _ = _system(engine)
    budget = step_budget(t, Workload(isl, 500, B, BF16))
    room = budget.tokens - (B - 1 if budget.mixed else 0)
    n = math.ceil(isl / room)
    q = math.ceil(isl / n)
    alone = _pass_s(engine, Shape(1, q, (isl - q) / 2), B, isl)
    assert n >= 3 and colo.ttft_ms >= n * alone * 1e3


def test_chunks_do_the_prompts_causal_attention_exactly():
    # n equal chunks of q tokens, priced at the mean prefix (isl - q) / 2, cover the
    # (query, key) pairs of the whole prompt: sum_j (q j q + q (q+1) / 2).
    for isl, n in ((4096, 4), (20_000, 5), (7, 7)):
        q = isl // n
        exact = sum(q * (j * q) + q * (q + 1) / 2 for j in range(n))
        assert n * float(kc.causal_pairs(q, (isl - q) / 2)) == pytest.approx(exact)
        assert exact == pytest.approx(float(kc.causal_pairs(isl)))


@pytest.mark.parametrize("engine", ENGINES)
def test_batch_one_is_the_bare_prefill_and_the_pure_decode(engine):
    """One slot: no other sequence to mix with, no step in progress on arrival."""
    colo, pure = _figs(engine, 4000, 500, 1)
    # the bare prefill, and the server's handling of the request (the engine's
    # request_overhead_s)
    assert colo.ttft_ms == pytest.approx((_pass_s(engine, phase_shape("prefill", 1, 4000, 500))
                                          + _pass_s(engine, REQUEST)) * 1e3, rel=1e-12)
    assert colo.tpot_ms == pytest.approx(pure.tpot_ms, rel=1e-12)
    assert colo.requests_per_s == pytest.approx(1e3 / colo.e2e_ms, rel=1e-12)


def test_an_unsustainable_batch_is_refused_with_the_reason():
    m, t, st = _system("vllm")
    # Short outputs, long prompts, a small budget: the prompts need more than the budget.
    w = Workload(4000, 50, 64, BF16, 0.9, step_tokens=600)
    with pytest.raises(InputError, match="cannot sustain"):
        evaluate(m, t, w, "colocated", st, st)
    with pytest.raises(InputError, match="decode tokens alone"):
        inflight(t, replace(w, batch=601))
    # The disaggregated pools do not batch in flight: the same workload prices there.
    assert evaluate(m, t, w, "disaggregated", st, st).tpot_ms > 0


def test_engine_step_budgets_follow_the_engines_memory_rules():
    f = engine_facts()
    gib = float(1 << 30)
    assert kind_step_tokens(f["vllm"], "h200", 141e9) == 8192
    assert kind_step_tokens(f["vllm"], "a100-sxm-80gb", 80 * gib) == 2048  # A100 exception
    assert kind_step_tokens(f["vllm"], "l40s", 48e9) == 2048  # under 70 GiB
    assert kind_step_tokens(f["sglang"], "b200", 180e9) == 16384  # 160 GiB and more
    assert kind_step_tokens(f["sglang"], "l40s", 48e9) == 8192
    assert kind_step_tokens(f["trtllm"], "l40s", 48e9) == 8192
    assert not f["sglang"].mixed_steps and f["vllm"].mixed_steps and f["trtllm"].mixed_steps


@cache
def _colocated_plan(batch: int, tpot_slo_ms: float | None = None):
    return plan(M70, "h200-x8", isl=4000, osl=500, batch=batch, placement="colocated",
                objective="throughput", engine="vllm", tpot_slo_ms=tpot_slo_ms)


def test_planner_tables_and_validate_price_the_colocated_step_alike():
    p = _colocated_plan(64)
    rep = validate(p)
    assert rep.ok, rep.errors
    # The plan's figures are evaluate's (validate recomputed them) ...
    assert rep.figures.tpot_ms == pytest.approx(p.tpot_ms, rel=1e-12)
    assert rep.figures.ttft_ms == pytest.approx(p.ttft_ms, rel=1e-12)
    # ... and the solver's objective is the tables' (rounded-up) figure of the same stages.
    assert p.objective <= p.throughput_tokens_per_s * (1 + 1e-9)
    assert p.objective == pytest.approx(p.throughput_tokens_per_s, rel=1e-4)
    # A single-stage table entry is the stage's weighted step time, in ticks rounded up.
    m, t, st = _system("vllm")
    w = Workload(4000, 500, 64, BF16, 0.9)
    tab = build_tables(m, t, w, ("colocated",))
    cfg = next(c for c in tab.configs if c.tp == 8)
    fig = evaluate(m, t, w, "colocated", st, st)
    only = ROLES.index("only")
    for ph, ms in (("decode", fig.tpot_ms), ("prefill", fig.ttft_ms)):
        got = int(tab.pools["colocated"].time_t[ph][only, cfg.index, tab.units])
        assert got == math.ceil(ms * 1e-3 * TICKS_PER_S)


def test_colocated_plans_that_meet_tpot_include_the_interference():
    """70B on 8 x H200, ISL 4000, OSL 500, batch 64: every 500 steps the replica prefills
    64 prompts of 4000 tokens (64 x ~150 ms) beside 500 decode steps (~12 ms each), so
    its TPOT is more than twice the pure decode step; a 30 ms TPOT SLO no longer holds at
    TP 8."""
    colo, pure = _figs("vllm", 4000, 500, 64)
    assert colo.tpot_ms > 2 * pure.tpot_ms
    assert colo.tpot_ms > 30.0
    with pytest.raises(InfeasibleError):
        _colocated_plan(64, 30.0)
    # A smaller batch meets it, with its interference priced.
    p = _colocated_plan(32, 30.0)
    assert p.tpot_ms <= 30.0 and validate(p).ok
    assert p.tpot_ms > _figs("vllm", 4000, 500, 32)[1].tpot_ms


def test_the_plan_records_its_step_budget_and_exports_it():
    """A colocated plan says the in-flight step budget it was priced with; TensorRT-LLM's
    server runs that budget (``max_num_tokens``), not the old prompt-batch size."""
    import yaml

    from autoplan.export import export

    p = _colocated_plan(32, 30.0)
    assert p.inputs.step_tokens == 8192  # vLLM's default on H200 (hardware/engines.yaml)
    files = export(p, "trtllm").files
    opts = yaml.safe_load(next(v for k, v in files.items() if k.startswith("extra-llm-api")))
    assert opts["max_num_tokens"] == p.inputs.step_tokens
    # A budget set in the plan is the one validate reprices with: a smaller one slows
    # the prompts' chunks (more steps per prompt) and the figures no longer match.
    small = p.model_copy(update={"inputs": p.inputs.model_copy(update={"step_tokens": 1024})})
    rep = validate(small)
    assert not rep.ok and rep.figures.ttft_ms > p.ttft_ms


def test_the_planner_names_the_step_budget_when_it_binds():
    with pytest.raises(InfeasibleError, match="step budget: .*cannot sustain its prompt flow"):
        plan("meta-llama/Llama-3.1-8B", "h200-x8", isl=4000, osl=20, batch=200,
             placement="colocated", objective="throughput", engine="vllm")


def test_attention_dp_ranks_run_their_own_step_mix():
    """Each attention-DP rank is its own scheduler with its own step budget: a DP 8 pool
    of 256 sequences mixes its steps like one rank of 32; one scheduler of 256 under one
    budget mixes differently (more prompt chunks per step), so it is not what a DP pool
    runs."""
    topo = load_topology("h200-x8", None, "trtllm")
    work = Workload(4000, 500, 256, Precision("fp8", "bf16", "fp8"), 0.9)
    rank, _ = inflight(topo, replace(work, batch=32))
    dp8, _ = inflight(topo, work, ranks=8)
    assert dp8 == rank
    try:
        one, _ = inflight(topo, work)
    except InputError:  # one budget cannot even carry 256 sequences' prompt flow
        return
    assert one.chunks_per_step > rank.chunks_per_step


@pytest.mark.parametrize("isl, osl, batch, ranks", [(4000, 500, 256, 8), (1000, 1000, 1624, 4),
                                                    (1000, 1000, 3072, 8), (2000, 300, 40, 2)])
def test_attention_dp_ranks_carry_their_chunks_independently(isl, osl, batch, ranks):
    """The DP pool's mixed steps against a brute force over every pattern of which ranks
    carry an extra chunk (each rank on its own, with its step mix's chance): the same
    distribution of chunks per step, the lockstep mean, and the busiest rank carrying the
    extra chunk in 1 - (1 - r)^ranks of the steps."""
    from itertools import product

    from autoplan.cost.expert_parallel import rank_shape

    topo = load_topology("h200-x8", None, "trtllm")
    work = Workload(isl, osl, batch, Precision("fp8", "bf16", "fp8"), 0.9)
    s, passes = inflight(topo, work, ranks=ranks)
    j = math.floor(s.chunks_per_step)
    r = s.chunks_per_step - j
    brute: dict[int, float] = {}
    for extra in product((0, 1), repeat=ranks):
        p = math.prod(r if e else 1 - r for e in extra)
        brute[ranks * j + sum(extra)] = brute.get(ranks * j + sum(extra), 0.0) + p
    # TPOT weights are by decode tokens emitted: undo that to get each step's chance
    B = batch // ranks
    got: dict[int, float] = {}
    for w, sh in passes["decode"]:
        got[sh.chunk_seqs] = got.get(sh.chunk_seqs, 0.0) + w / (B * ranks - sh.chunk_seqs)
    total = sum(got.values())
    got = {c: w / total for c, w in got.items()}
    assert got.keys() == {c for c, p in brute.items() if p > 0}
    for c, p in got.items():
        assert p == pytest.approx(brute[c], rel=1e-9, abs=1e-12)
    assert sum(p * c for c, p in got.items()) == pytest.approx(ranks * s.chunks_per_step)
    busiest = sum(p for c, p in got.items() if c > ranks * j)
    assert busiest == pytest.approx(1 - (1 - r) ** ranks)
    for _, sh in passes["decode"]:  # the busiest rank: j + 1 chunks once any rank has one
        busiest = rank_shape(sh, ranks)
        assert busiest.chunk_seqs == (j + 1 if sh.chunk_seqs > ranks * j else j)
        # and its B sequences, a chunk's sequence not decoding (not B decodes besides)
        assert busiest.batch + busiest.chunk_seqs == B


def test_attention_dp_ranks_in_step_are_the_lockstep_mix():
    """With a whole number of chunks per step (r = 0) every rank's step is alike: the
    passes are one rank's, scaled to all ranks."""
    topo = load_topology("h200-x8", None, "vllm")
    # isl 1000 at batch 1 per rank, osl 1 ... : f = B n / (n + osl - 1) = 1 when osl = 1
    work = Workload(1000, 1, 8, Precision("bf16", "bf16", "bf16"), 0.9)
    s, passes = inflight(topo, work, ranks=8)
    one, one_passes = inflight(topo, replace(work, batch=1))
    assert s.chunks_per_step == 1.0 and one == s
    for m, ps in one_passes.items():
        assert passes[m] == [(w, replace(sh, batch=8 * sh.batch, chunk_seqs=8 * sh.chunk_seqs))
                             for w, sh in ps]


def test_separate_prefill_steps_of_one_rank_are_the_single_scheduler_mix():
    from autoplan.cost.inflight import colocated_passes, dp_separate_passes, steps_of

    topo = load_topology("h200-x8", None, "sglang")
    work = Workload(2000, 300, 24, Precision("bf16", "bf16", "bf16"), 0.9)
    s = steps_of(work, step_budget(topo, work))
    assert not s.budget.mixed
    one, alone = dp_separate_passes(work, s, 1), colocated_passes(work, s)
    for m in alone:
        a, b = {sh: w for w, sh in one[m]}, {sh: w for w, sh in alone[m]}
        assert a.keys() == b.keys()
        assert [a[k] for k in b] == pytest.approx([b[k] for k in b])


@pytest.mark.parametrize("ranks", [2, 4, 8])
def test_separate_prefill_steps_of_dp_ranks_against_a_brute_force(ranks):
    """SGLang's DP ranks each run their own prefill or decode step in one iteration: the
    steps' chances against every pattern of which ranks prefill (each with its chance
    g / (1 + g)), and TPOT as 1 + g mean steps."""
    from itertools import product

    topo = load_topology("h200-x8", None, "sglang")
    work = Workload(2000, 300, 24 * ranks, Precision("bf16", "bf16", "bf16"), 0.9)
    s, passes = inflight(topo, work, ranks=ranks)
    g = s.chunks_per_step
    pi = g / (1 + g)
    brute: dict[int, float] = {}
    for pre in product((0, 1), repeat=ranks):
        brute[sum(pre)] = brute.get(sum(pre), 0.0) + math.prod(pi if x else 1 - pi for x in pre)
    got: dict[int, float] = {}
    for w, sh in passes["decode"]:
        k = ranks if sh.new > 1 else sh.chunk_seqs  # all ranks prefilling: a prefill pass
        got[k] = got.get(k, 0.0) + w / (1 + g)
    assert set(got) == {k for k, p in brute.items() if p >= 1e-12}
    for k, p in got.items():
        assert p == pytest.approx(brute[k], rel=1e-9, abs=1e-12)
    assert sum(w for w, _ in passes["decode"]) == pytest.approx(1 + g)
