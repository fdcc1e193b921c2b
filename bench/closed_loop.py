"""A closed-loop serving benchmark of one colocated replica, simulated step by step, set
against the steady-state in-flight model on the held-out serving rows at concurrency > 1.

    python bench/closed_loop.py        # the table (about 10 s)

An experiment, not part of the planner: it asks whether the TTFT that serving benchmarks
report at concurrency > 1 (under-predicted by the steady-state model of
``autoplan.cost.inflight``, docs/accuracy.md) is the closed loop's queueing of prompts.
Its findings are in docs/accuracy.md.


What ``vllm bench serve --max-concurrency C``, SGLang's ``bench_serving
--max-concurrency C`` and ``genai-perf --concurrency C`` (AIPerf) measure: ``C`` clients,
each holding one request at a time. All ``C`` send their first request at ``t = 0``; a
client sends its next request the moment its previous one has streamed its last token,
until ``requests`` have been sent. Every request has ``isl`` prompt and ``osl`` output
tokens (fixed lengths; where a benchmark's lengths vary, its mean lengths).

The steady-state model of :mod:`autoplan.cost.inflight` (evenly spaced arrivals, a slot
free on arrival, the wait for the step in progress) is what the planner's tables price.
A closed loop is not steady: the first ``C`` prompts arrive at once and queue for the
step budget, and requests of one length that started together finish together, so their
clients' next prompts arrive together again. Each prompt then waits for the prefills
queued before it, which the steady-state model does not see. Simulating the engine's
step loop gives the benchmark's own figures from the same priced forward passes.

The engine, as the steady-state model has it (``hardware/engines.yaml``):

- A request reaches the engine's queue ``request_overhead_s`` after its client sent it
  (the server's handling: HTTP, chat template, tokenisation, admission). The analytic
  model's :data:`~autoplan.cost.roofline.REQUEST` pass is the same term.
- Mixed steps (vLLM V1, TensorRT-LLM): every step runs one token of each running decode
  and gives the rest of the budget ``N - d`` to prompt chunks, in arrival order (a prompt
  part-way through its chunks comes first).
- Separate steps (SGLang's default, ``--enable-mixed-chunk`` off): while prompts wait, a
  step is a prefill step that packs them, in arrival order, up to the budget (the last
  one chunked); the running decodes wait. Otherwise it is a decode step of every running
  sequence.
- A step's time is its forward pass through the pipeline (:func:`pipeline_cost`: the
  same stage pricing as every figure, host step time included). A step with several
  chunks is priced as chunks of their mean length after their mean cached prefix; the
  decodes at their mean context. Contexts are rounded to a grid of ``(isl + osl) / 256``
  tokens (at least 16) so that repeated step shapes share one price.
- When a step ends, every decode in it emits a token. A prompt whose last chunk ran
  emits its first token: its TTFT is that time minus the time its client sent it. A
  request with ``osl`` tokens completes.

Reported as the benchmarks report them: TTFT over requests (mean, median, p99), TPOT per
request ``(last token - first token) / (osl - 1)`` (mean, median, p99), end-to-end
latency, and output tokens per second over the run (every token over the time from the
first send to the last token).

Attention DP: each rank schedules its own requests and the ranks step together (the MoE
layers' collectives wait for the slowest); the busiest rank (``ceil(C / dp)`` slots,
``ceil(requests / dp)`` requests) is simulated and every step priced as ``dp`` ranks like
it, which holds where the requests are alike and dealt evenly (a benchmark's fixed lengths,
every request queued at once, keep the ranks in step). The planner's steady state has the
ranks' prompt chunks in different steps instead (``autoplan.cost.inflight.dp_mixed_passes``:
arrivals reach the ranks in turn), which is slower by what the busiest rank adds.

Where it stops holding: ranks whose loads differ; no preemption (the
replica's KV must hold ``C`` sequences: the caller checks memory); the engine's limit on
running sequences is taken to be at least ``C``.
"""

from __future__ import annotations

import heapq
import math
import statistics
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autoplan.cost.inflight import step_budget  # noqa: E402
from autoplan.cost.pipeline import StagePlacement, memories_for, pipeline_cost, request_host_s  # noqa: E402
from autoplan.cost.roofline import Shape  # noqa: E402
from autoplan.errors import InputError  # noqa: E402
from autoplan.graphs.model_graph import ModelSpec  # noqa: E402
from autoplan.graphs.topology import Topology  # noqa: E402
from autoplan.inputs.workload import Workload  # noqa: E402

MAX_STEPS = 5_000_000
"""Steps a simulation may take (a run of 10^4 requests of 500 tokens takes ~10^5 at
concurrency 50); beyond this the caller asked for a run too long to simulate."""


@dataclass
class _Request:
    sent: float
    isl: int
    osl: int
    prefilled: int = 0  # prompt tokens done
    emitted: int = 0  # output tokens streamed
    first: float = 0.0  # time of its first token
    completed: float = 0.0  # time of its last token


@dataclass(frozen=True)
class Run:
    """A benchmark run: ``concurrency`` clients, ``requests`` in all (None:
    :func:`default_requests`), and the spread of the lengths: each request's prompt and
    output lengths are drawn uniformly from the whole numbers in ``[floor(low * L), L]``
    of the workload's ``isl`` and ``osl`` (``low = 1``: every request exactly ``isl`` /
    ``osl``; InferenceX's ``benchmark_serving.py --random-range-ratio r`` is ``low = r``),
    from a generator seeded with ``seed`` (the same run every time)."""

    concurrency: int
    requests: int | None = None
    low: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Percentiles:
    mean_ms: float
    median_ms: float
    p99_ms: float

    @staticmethod
    def of(xs: list[float]) -> Percentiles:
        s = sorted(xs)
        p99 = s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)]
        return Percentiles(statistics.fmean(s) * 1e3, statistics.median(s) * 1e3, p99 * 1e3)


@dataclass(frozen=True)
class BenchmarkResult:
    concurrency: int
    requests: int
    ttft: Percentiles
    tpot: Percentiles | None  # None where osl = 1
    e2e: Percentiles
    output_tokens_per_s: float
    duration_s: float
    steps: int
    step_tokens: int  # the budget the engine ran under
    mixed_steps: bool
    shapes_priced: int = field(default=0, compare=False)


def default_requests(concurrency: int) -> int:
    """Requests of a run when the benchmark's count is not given: ten per client (the
    convention of SemiAnalysis InferenceX's runs, ``--num-prompts $((CONC * 10))``)."""
    return 10 * concurrency


def simulate(model: ModelSpec, topo: Topology, stages: list[StagePlacement], work: Workload,
             run: Run) -> BenchmarkResult:
    """The closed-loop benchmark ``run`` of ``work`` (``isl`` and ``osl``, the longest
    lengths; ``step_tokens``; precision) on one replica of ``stages`` (see the module
    docstring)."""
    C = run.concurrency
    n_req = default_requests(C) if run.requests is None else run.requests
    if C < 1:
        raise InputError(f"concurrency must be >= 1, got {C}")
    if n_req < 1:
        raise InputError(f"requests must be >= 1, got {n_req}")
    if not 0.0 < run.low <= 1.0:
        raise InputError(f"the shortest length must be a fraction in (0, 1] of the longest, "
                         f"got {run.low}")
    dp = max(st.dp for st in stages)
    if any(st.dp != dp for st in stages):
        raise InputError("the benchmark simulation needs the same attention DP on every stage")
    if C % dp:
        raise InputError(f"concurrency {C} is not a multiple of the {dp} attention DP ranks: "
                         "the simulation runs the ranks alike")
    total_req, total_c = n_req, C
    # attention DP: every rank schedules its own requests and the ranks step together
    # (the MoE layers' collectives). The busiest rank is simulated, ceil(C / dp) slots and
    # ceil(requests / dp) requests, and each of its steps priced as dp ranks like it.
    C, n_req = -(-C // dp), -(-n_req // dp)
    budget = step_budget(topo, work)
    N = budget.tokens
    if budget.mixed and C - 1 >= N:
        raise InputError(f"{C} running sequences{' per rank' if dp > 1 else ''} fill the step budget of {N} tokens "
                         f"({budget.source}): no room for a prompt chunk")
    # the clients' requests run C at a time: each of their turns takes at most one
    # request's steps (its prefill chunks and its decodes)
    steps_needed = -(-n_req // C) * (work.osl + math.ceil(work.isl / max(1, N - C + 1))) + n_req
    if steps_needed > MAX_STEPS:
        raise InputError(f"a run of {n_req} requests of {work.isl}+{work.osl} tokens takes "
                         f"about {steps_needed:,} steps; at most {MAX_STEPS:,} are simulated")
    rng = np.random.default_rng(run.seed)

    def lengths(longest: int) -> list[int]:
        lo = max(1, math.floor(run.low * longest))
        return rng.integers(lo, longest + 1, size=n_req).tolist()

    isls, osls = lengths(work.isl), lengths(work.osl)
    overhead = request_host_s(topo, stages[0])
    mems = memories_for(model, topo, stages, C * dp, work.isl + work.osl, N * dp, work.precision)
    grid = max(16, (work.isl + work.osl) // 256)
    prices: dict[Shape, float] = {}

    def step_time(shape: Shape) -> float:
        t = prices.get(shape)
        if t is None:
            t = pipeline_cost(model, topo, stages, "decode", shape, work.precision,
                              mems).time_s
            prices[shape] = t
        return t

    def rounded(ctx: float) -> float:
        return float(max(0, round(ctx / grid) * grid))

    arrivals: list[tuple[float, int, _Request]] = []  # (at the engine, order, request)
    sent = 0

    def send(at: float) -> None:
        nonlocal sent
        if sent < n_req:
            r = _Request(sent=at, isl=isls[sent], osl=osls[sent])
            heapq.heappush(arrivals, (at + overhead, sent, r))
            sent += 1

    for _ in range(min(C, n_req)):
        send(0.0)
    waiting: deque[_Request] = deque()
    running: list[_Request] = []
    done: list[_Request] = []
    now, steps = 0.0, 0
    while len(done) < n_req:
        while arrivals and arrivals[0][0] <= now:
            waiting.append(heapq.heappop(arrivals)[2])
        if not waiting and not running:
            now = arrivals[0][0]
            continue
        chunks: list[tuple[_Request, int]] = []
        decodes = running if (budget.mixed or not waiting) else []
        left = N - len(decodes)
        for r in waiting:
            if left <= 0:
                break
            take = min(r.isl - r.prefilled, left)
            chunks.append((r, take))
            left -= take
        now += step_time(_shape(decodes, chunks, rounded, dp))
        steps += 1
        finished = []
        for r in decodes:
            r.emitted += 1
            if r.emitted == r.osl:
                finished.append(r)
        for r, take in chunks:
            r.prefilled += take
            if r.prefilled == r.isl:
                waiting.popleft()  # chunks are taken from the front, in order
                r.first, r.emitted = now, 1
                (finished if r.osl == 1 else running).append(r)
        if finished:
            running = [r for r in running if r.emitted < r.osl]
            for r in finished:
                r.completed = now
                done.append(r)
                send(now)
    duration = max(r.completed for r in done)
    decoded = [r for r in done if r.osl > 1]
    return BenchmarkResult(
        concurrency=total_c, requests=total_req,
        ttft=Percentiles.of([r.first - r.sent for r in done]),
        tpot=(Percentiles.of([(r.completed - r.first) / (r.osl - 1) for r in decoded])
              if decoded else None),
        e2e=Percentiles.of([r.completed - r.sent for r in done]),
        output_tokens_per_s=sum(osls) / duration * total_req / n_req, duration_s=duration,
        steps=steps,
        step_tokens=N, mixed_steps=budget.mixed, shapes_priced=len(prices))


def _shape(decodes: list[_Request], chunks: list[tuple[_Request, int]], rounded,
           dp: int = 1) -> Shape:
    """One step's forward pass: its decodes at their mean context, its chunks at their
    mean length after their mean cached prefix; ``dp`` ranks each like this one."""
    d = len(decodes) * dp
    ctx = rounded(sum(r.isl + r.emitted - 1 for r in decodes) / len(decodes)) if d else 0.0
    if not chunks:
        return Shape(batch=d, new=1, context_before=ctx)
    k = len(chunks) * dp
    q = max(1, round(sum(t for _, t in chunks) / len(chunks)))
    prefix = rounded(sum(r.prefilled for r, _ in chunks) / len(chunks))
    if not d:
        return Shape(batch=k, new=q, context_before=prefix)
    return Shape(d, 1, ctx, q, k, prefix)


# What each held-out source says of its benchmark runs (hardware/data/heldout-engines-notes.md):
# (row ids, requests of a run, shortest length as a fraction of the longest, step budget).
# - S1, GPUStack (e01-e12, e37-e43): `vllm bench serve` on 100 ShareGPT prompts; the lengths vary, only their
#   means are known (232.6 in, 220.6 out), so every request gets the mean lengths here.
# - S4, NIM 1.8 (genai-perf / AIPerf): the request count is not stated (ten per client
#   here); synthetic prompts of fixed lengths, assumed.
# - S5, SemiAnalysis InferenceX: `--num-prompts $(( $CONC * 10 ))` and SGLang started with
#   `--chunked-prefill-size 32768` (benchmarks/dsr1_fp8_h200.sh at 1fc5d73c), lengths
#   drawn from [0.8 L, L] (RANDOM_RANGE_RATIO: 0.8 in .github/workflows/benchmark-tmpl.yml;
#   utils/bench_serving/benchmark_serving.py, sample_uniform), L = 1024 in and out.
SOURCES = [
    ({f"e{i:02d}" for i in (*range(1, 13), *range(37, 44))}, 100, 1.0, None),
    ({f"e{i:02d}" for i in range(19, 29)}, None, 1.0, None),
    ({f"e{i:02d}" for i in range(29, 37)}, None, 0.8, 32768),
]


def _row_run(row_id: str, concurrency: int) -> tuple[Run, int | None]:
    for ids, requests, low, budget in SOURCES:
        if row_id in ids:
            return Run(concurrency, requests, low), budget
    return Run(concurrency), None


def main() -> None:
    import statistics as st

    from autoplan.calibrate.host_fit import engine_of, price, read_methods, serving_osl
    from autoplan.calibrate.measurements import read_measurements, system_for
    from autoplan.catalog import load_model, load_topology
    from autoplan.cost.estimate import place_even_pipeline
    from autoplan.inputs.workload import Precision

    path = REPO / "hardware" / "data" / "heldout-engines.csv"
    rows = read_measurements(path)
    methods = read_methods(path)
    osls = serving_osl(rows, methods)
    print("| id | engine | C | metric | measured ms | steady-state ms | error | simulated ms | "
          "error | simulated, 10x requests | error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    errs: dict[str, list[float]] = {"steady": [], "sim": [], "long": []}
    for m in rows:
        if m.id not in osls:
            continue
        eng = engine_of(m.engine)
        topo0, tp, pp = system_for(m)
        topo = load_topology(topo0.name, None, eng)
        model = load_model(m.model)
        stages = place_even_pipeline(model, topo, m.device_kind, tp, pp)
        kv = m.weight_dtype if m.weight_dtype in ("bf16", "fp16") else "bf16"
        run, budget = _row_run(m.id, m.batch)
        # the longest lengths: the row's own, or the range's top where lengths are drawn
        osl = osls[m.id] if run.low == 1.0 else m.isl
        work = Workload(m.isl, osl, m.batch, Precision(m.weight_dtype, "bf16", kv), 1.0,
                        None, budget)
        steady = price(m, eng, methods[m.id], osls[m.id])
        figs = []
        for r in (run, Run(run.concurrency, 10 * (run.requests or default_requests(m.batch)),
                           run.low, run.seed)):
            res = simulate(model, topo, stages, work, r)
            figs.append(res.ttft.mean_ms if m.metric == "ttft_ms" else res.tpot.mean_ms)
        line = [m.id, eng, str(m.batch), m.metric.removesuffix("_ms"), f"{m.value:g}"]
        for key, v in zip(errs, [steady, *figs]):
            errs[key].append(v / m.value - 1)
            line += [f"{v:.4g}", f"{(v / m.value - 1) * 100:+.1f}%"]
        print("| " + " | ".join(line) + " |")
    print()
    print("| model | median \\|error\\| TTFT | max TTFT | median \\|error\\| TPOT | max TPOT |")
    print("|---|---|---|---|---|")
    metrics = [m.metric for m in rows if m.id in osls]
    for key, name in (("steady", "steady state (autoplan.cost.inflight)"),
                      ("sim", "simulated run"), ("long", "simulated, 10x requests")):
        out = [name]
        for metric in ("ttft_ms", "tpot_ms"):
            a = [abs(e) for e, mm in zip(errs[key], metrics) if mm == metric]
            out += [f"{st.median(a) * 100:.1f}%", f"{max(a) * 100:.1f}%"]
        print("| " + " | ".join(out) + " |")


if __name__ == "__main__":
    main()
