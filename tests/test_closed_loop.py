"""bench/closed_loop.py: the step-level simulation of a closed-loop serving benchmark.

Checked against what must hold whatever the cost model says: a lone client sees the bare
prefill and pure decode passes, every request streams exactly its tokens, prompts that
arrive together are prefilled one budget after another, and over a long run the step mix
is the steady state that ``autoplan.cost.inflight`` prices.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import closed_loop as cl

from autoplan.catalog import load_model, load_topology
from autoplan.cost.estimate import estimate, place_even_pipeline
from autoplan.cost.evaluate import evaluate
from autoplan.errors import InputError
from autoplan.inputs.workload import Precision, Workload

MODEL = "meta-llama/Llama-3.1-8B"


def _setup(engine: str, tp: int = 1):
    model = load_model(MODEL)
    topo = load_topology("h100-sxm-x8", None, engine)
    return model, topo, place_even_pipeline(model, topo, "h100-sxm", tp, 1)


def _work(isl: int, osl: int, batch: int, step_tokens: int | None = None) -> Workload:
    return Workload(isl, osl, batch, Precision("bf16", "bf16", "bf16"), 1.0, None, step_tokens)


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm"])
def test_one_client_sees_the_bare_prefill_and_the_pure_decode(engine):
    model, topo, stages = _setup(engine)
    res = cl.simulate(model, topo, stages, _work(512, 64, 1), cl.Run(1, 3))
    est = estimate(MODEL, topo, 1, 1, isl=512, osl=64, batch=1, max_memory_fraction=1.0)
    # TTFT: the server's handling and one prefill pass of the whole prompt (it fits the budget)
    assert res.ttft.mean_ms == pytest.approx(est.ttft_ms, rel=1e-9)
    # TPOT: pure decode steps at contexts 512..574 around the estimate's mean context 544
    # (decode time grows with context, so the mean of the steps is close to the middle one)
    assert res.tpot.mean_ms == pytest.approx(est.tpot_ms, rel=0.01)
    assert res.steps == 3 * 64  # one prefill step and 63 decode steps per request


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_every_request_streams_its_tokens_and_the_run_is_deterministic(engine):
    model, topo, stages = _setup(engine)
    run = cl.Run(6, 40, low=0.5, seed=7)
    a = cl.simulate(model, topo, stages, _work(900, 120, 6, 2048), run)
    b = cl.simulate(model, topo, stages, _work(900, 120, 6, 2048), run)
    assert a == b
    rng_lengths = cl.np.random.default_rng(7)
    isls = rng_lengths.integers(450, 901, size=40)
    osls = rng_lengths.integers(60, 121, size=40)
    assert a.output_tokens_per_s * a.duration_s == pytest.approx(float(osls.sum()))
    # every step runs at most the budget of tokens, so the prompt tokens alone need
    # at least this many steps; each decode step emits at most 6 tokens
    assert a.steps >= isls.sum() / 2048 + (osls.sum() - 40) / 6


def test_prompts_arriving_together_are_prefilled_one_budget_after_another():
    # vLLM: 4 prompts of 6,000 tokens at t = 0 under an 8,192-token budget: the first
    # token of the k-th prompt comes after at least k * 6000 / 8192 budgets of prefill
    model, topo, stages = _setup("vllm")
    res = cl.simulate(model, topo, stages, _work(6000, 2, 4, 8192), cl.Run(4, 4))
    one = cl.simulate(model, topo, stages, _work(6000, 2, 1, 8192), cl.Run(1, 1))
    overhead = estimate(MODEL, topo, 1, 1, isl=6000, osl=2).request_ms
    bare = one.ttft.mean_ms - overhead
    # mean over k = 1..4 of the prefill work before the k-th first token, in prompts
    assert res.ttft.mean_ms - overhead >= 0.9 * bare * (1 + 2 + 3 + 4) / 4
    assert res.ttft.mean_ms > one.ttft.mean_ms * 2


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_long_runs_of_varied_lengths_settle_on_the_steady_state(engine):
    # lengths drawn from [0.8 L, L]: the clients drift apart and the step mix becomes the
    # steady state autoplan.cost.inflight prices at the mean lengths (900 in, 180 out)
    model, topo, stages = _setup(engine, tp=2)
    res = cl.simulate(model, topo, stages, _work(1000, 200, 16), cl.Run(16, 2000, low=0.8))
    steady = evaluate(model, topo, _work(900, 180, 16), "colocated", stages, stages)
    assert res.tpot.mean_ms == pytest.approx(steady.tpot_ms, rel=0.03)
    assert res.ttft.mean_ms == pytest.approx(steady.ttft_ms, rel=0.10)


def test_attention_dp_ranks_settle_on_the_steady_state_and_one_rank_is_the_dense_run():
    # Qwen3-30B-like MoE stand-in: Mixtral on 4 H100 as attention DP 4 x EP 4. Every rank
    # schedules a quarter of the requests; the simulation steps the ranks together, alike.
    # Over a long run of varied lengths its step mix is the steady state of ranks in step;
    # the planner's steady state, whose ranks carry their prompt chunks in different
    # steps (autoplan.cost.inflight.dp_mixed_passes), is slower by what the busiest rank
    # adds.
    from adp_balance import ranks_in_step

    model = load_model("mistralai/Mixtral-8x7B-v0.1")
    topo = load_topology("h100-sxm-x8", None, "trtllm")
    stages = place_even_pipeline(model, topo, "h100-sxm", 1, 1, 4, 4)
    res = cl.simulate(model, topo, stages, _work(1000, 200, 64), cl.Run(64, 4000, low=0.8))
    unaligned = evaluate(model, topo, _work(900, 180, 64), "colocated", stages, stages)
    with ranks_in_step():  # every rank's step alike: one rank's mix, scaled
        steady = evaluate(model, topo, _work(900, 180, 64), "colocated", stages, stages)
    assert res.tpot.mean_ms == pytest.approx(steady.tpot_ms, rel=0.03)
    assert res.output_tokens_per_s == pytest.approx(steady.throughput_tokens_per_s, rel=0.05)
    assert unaligned.tpot_ms > 1.03 * steady.tpot_ms
    # requests that do not divide among the ranks: the busiest rank sets the pace, so the
    # run is no faster than with the next multiple of the ranks
    a = cl.simulate(model, topo, stages, _work(500, 50, 8), cl.Run(8, 33))
    b = cl.simulate(model, topo, stages, _work(500, 50, 8), cl.Run(8, 36))
    assert a.duration_s == pytest.approx(b.duration_s)
    assert a.requests == 33 and a.output_tokens_per_s < b.output_tokens_per_s
    # fewer clients than ranks (or not a multiple) would leave ranks idle that the
    # simulation prices as busy: refused
    with pytest.raises(InputError, match="not a multiple of the 4 attention DP ranks"):
        cl.simulate(model, topo, stages, _work(500, 50, 2), cl.Run(2, 40))


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_fixed_lengths_keep_the_clients_in_waves(engine):
    # every request of one length: those that start together finish together, so their
    # clients' next prompts arrive together and queue (TTFT several times the steady
    # state's, the server's fixed handling of each request aside), and the waves need
    # fewer prompt-carrying steps (TPOT below it)
    model, topo, stages = _setup(engine, tp=2)
    work = _work(1000, 200, 16)
    res = cl.simulate(model, topo, stages, work, cl.Run(16, 2000))
    steady = evaluate(model, topo, work, "colocated", stages, stages)
    server_ms = topo.kinds["h100-sxm"].calibration.engine.request_overhead_s * 1e3
    assert res.ttft.mean_ms - server_ms > 3 * (steady.ttft_ms - server_ms)
    assert res.tpot.mean_ms < steady.tpot_ms


def test_bad_runs_are_refused_with_the_reason():
    model, topo, stages = _setup("vllm")
    with pytest.raises(InputError, match="concurrency"):
        cl.simulate(model, topo, stages, _work(100, 10, 1), cl.Run(0))
    with pytest.raises(InputError, match="fraction"):
        cl.simulate(model, topo, stages, _work(100, 10, 1), cl.Run(1, low=0.0))
    with pytest.raises(InputError, match="step budget"):
        cl.simulate(model, topo, stages, _work(100, 10, 64, 32), cl.Run(64))
    with pytest.raises(InputError, match="steps"):
        cl.simulate(model, topo, stages, _work(100, 100_000, 1), cl.Run(1, 10_000))
