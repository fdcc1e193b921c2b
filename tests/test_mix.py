"""Several replica designs per pool (issue 12 scope 6, autoplan.search.mix).

- the choice of counts over a menu of designs equals an exhaustive enumeration of every
  count vector (one device class: the dynamic program; several: the integer program),
  with KV link budgets, device budgets and both objectives;
- a real plan of several designs beats the best one-design-per-pool deployment,
  validates, explains and exports to every engine;
- ``validate`` refuses tampered more designs;
- plans that need one design per pool read as before (no ``more_designs`` key).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from itertools import product

import pytest

import autoplan.search.deploy as deploy
from autoplan.errors import InputError
from autoplan.explain import explain
from autoplan.export import export
from autoplan.rules.validate import validate
from autoplan.search.mix import best_mix, mix_rate
from autoplan.search.planner import plan


@dataclass(frozen=True)
class _Design:  # what the mix reads of a replica design
    usage: tuple[int, ...]
    kinds: frozenset
    rate: Fraction
    decode_kinds: frozenset = frozenset()


@dataclass
class _Class:
    devices: int


@dataclass
class _Tables:
    classes: list


def _menu(rng: random.Random, caps: list[int], mode: str):
    kinds = [frozenset({f"k{i}"}) for i in range(len(caps))]
    both = frozenset().union(*kinds)

    def design(**kw):
        usage = tuple(rng.randint(0, min(3, c)) if rng.random() < 0.7 else 0 for c in caps)
        if not any(usage):
            usage = tuple(1 if i == 0 else 0 for i in range(len(caps)))
        ks = frozenset().union(*(kinds[i] for i, u in enumerate(usage) if u))
        return _Design(usage, ks, Fraction(rng.randint(1, 400), rng.randint(1, 40)), **kw)

    if mode == "colocated":
        return {"colocated": [design() for _ in range(rng.randint(1, 4))]}
    dec = [design() for _ in range(rng.randint(1, 3))]
    groups = sorted({d.kinds for d in dec}, key=sorted) + [both]
    pre = [design(decode_kinds=rng.choice(groups)) for _ in range(rng.randint(1, 4))]
    return {"prefill": pre, "decode": dec}


def _enumerate(fronts, mode, objective, lam, caps, budget, links):
    """Every count vector of the menu: the best (rate, devices)."""
    items = [(p, d) for p, ds in fronts.items() for d in ds]
    ranges = [range(0, min(c // u for c, u in zip(caps, d.usage) if u) + 1) for _, d in items]
    best = None
    for y in product(*ranges):
        use = [sum(n * d.usage[k] for n, (_, d) in zip(y, items)) for k in range(len(caps))]
        devices = sum(use)
        if any(u > c for u, c in zip(use, caps)) or devices > budget or devices == 0:
            continue
        rate, _ = mix_rate([(p, d, n) for n, (p, d) in zip(y, items) if n], links)
        if rate <= 0 or (lam is not None and rate < lam):
            continue
        key = (devices, -rate) if objective == "devices" else (-rate, devices)
        if best is None or key < best:
            best = key
    if best is None:
        return None
    return (-best[1], best[0]) if objective == "devices" else (-best[0], best[1])


@pytest.mark.parametrize("seed", range(400))
def test_best_mix_equals_enumeration_of_every_count_vector(seed):
    rng = random.Random(seed)
    caps = [rng.randint(1, 6)] if seed % 2 == 0 else [rng.randint(1, 4), rng.randint(1, 4)]
    mode = "colocated" if seed % 5 == 0 else "disaggregated"
    fronts = _menu(rng, caps, mode)
    budget = sum(caps) if rng.random() < 0.7 else rng.randint(1, sum(caps))
    links = {}
    if mode != "colocated":
        for a in fronts["prefill"]:
            links[a.kinds, a.decode_kinds] = (None if rng.random() < 0.5 else
                                              Fraction(rng.randint(1, 60), rng.randint(1, 4)))
    objective = "devices" if seed % 3 == 0 else "throughput"
    lam = None
    if objective == "devices" or seed % 4 == 1:  # a requested rate, for both objectives
        top = _enumerate(fronts, mode, "throughput", None, caps, budget, links)
        if top is None:
            return
        lam = top[0] * Fraction(rng.choice([3, 7, 10]), 10)
    want = _enumerate(fronts, mode, objective, lam, caps, budget, links)
    got, proven = best_mix(_Tables([_Class(c) for c in caps]), mode, fronts, objective, lam,
                           budget, links, None)
    assert proven, seed
    assert (None if got is None else (got.rate, got.devices)) == want, (seed, fronts)
    if got is not None:
        assert got.proven


M70 = "meta-llama/Llama-3.1-70B"
CASE = dict(isl=4000, osl=500, ttft_slo_ms=2000.0, tpot_slo_ms=30.0, objective="throughput",
            engine="trtllm")  # its prefill designs are pipelines (PP 2): vLLM refuses them


@cache
def _mixed():
    return plan(M70, "h200-2node", **CASE)


def test_several_designs_beat_the_best_one_design_per_pool(monkeypatch):
    p = _mixed()
    assert p.status == "optimal" and p.more_designs
    assert p.devices == 16  # two nodes of 8 H200, every device serving
    rep = validate(p)
    assert rep.ok, rep.errors
    # the best deployment of one design per pool serves less
    monkeypatch.setattr(deploy, "best_mix", lambda *a, **k: (None, True))
    one = plan(M70, "h200-2node", **CASE)
    assert not one.more_designs
    assert p.throughput_tokens_per_s > one.throughput_tokens_per_s * 1.01
    # each more design meets the SLOs on its own figures
    for d in p.more_designs:
        assert d.tpot_ms is None or d.tpot_ms <= 30.0 * (1 + 1e-9)
        assert d.ttft_ms is None or d.ttft_ms <= 2000.0 * (1 + 1e-9)
    # the deployment's rate is the smaller pool's sum (one group: one kind)
    pre = p.prefill.requests_per_s + sum(d.prefill.requests_per_s for d in p.more_designs
                                         if d.pool == "prefill")
    dec = p.decode.requests_per_s + sum(d.decode.requests_per_s for d in p.more_designs
                                        if d.pool == "decode")
    assert p.requests_per_s == pytest.approx(min(pre, dec), rel=1e-9)


def test_plans_of_one_design_per_pool_have_no_more_designs_key():
    p = plan("meta-llama/Llama-3.1-8B", "h100-sxm-x8", isl=2048, osl=256, batch=8,
             objective="throughput", ttft_slo_ms=1000.0, tpot_slo_ms=20.0)
    assert "more_designs" not in json.loads(p.model_dump_json())


def _tampered(edit) -> list[str]:
    d = json.loads(_mixed().model_dump_json())
    edit(d)
    return validate(d).errors


def test_validate_refuses_tampered_more_designs():
    def overlap(d):  # a more design on the first decode design's devices
        devs = d["decode"]["stages"][0]["devices"][:2]
        m = d["more_designs"][0]["decode"]
        m["stages"][0]["devices"] = devs
        m["replica_devices"] = [[devs]]

    assert any("disjointness" in e for e in _tampered(overlap))

    def tpot(d):
        d["more_designs"][0]["tpot_ms"] *= 0.5

    assert any("more_designs[0] tpot_ms" in e for e in _tampered(tpot))

    def orphan(d):  # a decode design no prefill design sends to
        for s in d["more_designs"][0]["decode"]["stages"]:
            s["device_kind"] = "h100-sxm"

    assert _tampered(orphan)

    def phases(d):  # a decode design with a prefill view
        d["more_designs"][0]["prefill"] = d["more_designs"][0]["decode"]

    assert any("wrong phases" in e for e in _tampered(phases))

    def figure(d):  # a decode design that hides its TPOT from the SLO check
        d["more_designs"][0]["tpot_ms"] = None

    assert any("lacks the TTFT / TPOT" in e for e in _tampered(figure))

    def rate(d):
        d["requests_per_s"] *= 1.1

    assert any("requests_per_s" in e for e in _tampered(rate))


@pytest.mark.parametrize("engine", ["sglang", "trtllm", "dynamo"])
def test_more_designs_export_as_servers_of_their_own(engine):
    out = export(_mixed(), engine)
    text = "\n".join(out.files.values())
    assert "design 2" in text
    if engine == "trtllm":  # its own options file, at its own batch
        assert "extra-llm-api-decode2.yaml" in out.files
        d = _mixed().more_designs[0]
        assert f"--max_batch_size {d.batch} " in out.files["launch.sh"]
    if engine == "dynamo":  # a component of its own
        assert "DecodeWorker2" in text


def test_vllm_refuses_the_pipelined_prefill_pool_by_name():
    """vLLM's NixlConnector runs no PP > 1 prefill: the error names the pool."""
    with pytest.raises(InputError, match="prefill pool"):
        export(_mixed(), "vllm")


def test_explain_says_the_plan_has_more_designs():
    e = explain(_mixed(), solve=False)
    assert any("more replica design" in n for n in e.notes)
    assert e.objective_value == pytest.approx(_mixed().throughput_tokens_per_s)
    # its first designs alone, deployed as the planner would, serve less
    (one,) = [a for a in e.alternatives if a.name == "one design per pool"]
    assert one.verdict == "worse"
    assert one.throughput_tokens_per_s < _mixed().throughput_tokens_per_s
