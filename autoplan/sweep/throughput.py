"""``autoplan pareto --mode throughput``: tokens/s per GPU against tokens/s per user.

The per-user speed a deployment promises is its TPOT (tokens/s per user = 1000 / TPOT);
what it costs is the devices each token needs (tokens/s per GPU). The sweep plans the
most throughput (``objective="throughput"``) under each TPOT target, the TTFT SLO fixed,
one plan per target on the sweep engine (:mod:`autoplan.sweep.engine`). Targets that
lead to the same plan (same layout and figures) are one point, listing every target that
reached it; the front is the points no other point beats on both tokens/s per GPU and
tokens/s per user. Targets no plan meets are rows of their own, with the reason.

The targets are given, or a geometric grid from the TPOT of the best latency plan (the
fastest a user can be served on these devices) up to ten times it.
"""

from __future__ import annotations

import math
from pathlib import Path

from autoplan.errors import InfeasibleError, InputError
from autoplan.sweep.engine import run
from autoplan.sweep.output import rows_csv, write_rows

COLUMNS = ("tpot_slo_ms", "targets", "ttft_slo_ms", "status", "gap", "stop_reason", "reason",
           "placement", "layout", "prefill_tp", "prefill_pp", "prefill_replicas", "decode_tp",
           "decode_pp", "decode_replicas", "batch", "prefill_batch", "devices", "ttft_ms",
           "tpot_ms", "tokens_per_s_per_device", "tokens_per_s_per_user",
           "throughput_tokens_per_s", "on_front", "note")
X, Y = "tokens_per_s_per_user", "tokens_per_s_per_device"
MAX_POINTS = 10_000
DEFAULT_POINTS = 8
DEFAULT_SPAN = 10.0  # the default grid reaches this multiple of the fastest TPOT
STEM = "pareto-throughput"


def front_max(rows: list[dict], x: str = X, y: str = Y) -> list[dict]:
    """The rows no other row dominates when both ``x`` and ``y`` are maximised (another
    row at least as high on both and higher on one), in the order given. Equal rows do
    not dominate each other: all are kept.

    >>> rows = [{"u": 1, "g": 9}, {"u": 5, "g": 5}, {"u": 4, "g": 4}, {"u": 9, "g": 1}]
    >>> [r["u"] for r in front_max(rows, "u", "g")]
    [1, 5, 9]
    """
    def beats(a: dict, b: dict) -> bool:
        return a[x] >= b[x] and a[y] >= b[y] and (a[x] > b[x] or a[y] > b[y])

    return [r for r in rows if not any(beats(o, r) for o in rows)]


def grid(fastest_tpot_ms: float, max_ms: float | None = None,
         points: int = DEFAULT_POINTS) -> list[float]:
    """``points`` TPOT targets spaced evenly on a log scale from the fastest TPOT to
    ``max_ms`` (default ten times it), at three significant digits: the first rounded up
    (the fastest plan meets it), the last down (within the maximum), repeats dropped.

    >>> grid(2.03, 20.3, 3)
    [2.03, 6.42, 20.3]
    >>> grid(2.0321, None, 4)
    [2.04, 4.38, 9.43, 20.3]
    """
    if not (math.isfinite(fastest_tpot_ms) and fastest_tpot_ms > 0):
        raise InputError(f"pareto: cannot grid from a TPOT of {fastest_tpot_ms!r} ms")
    hi = fastest_tpot_ms * DEFAULT_SPAN if max_ms is None else max_ms
    if hi < fastest_tpot_ms:
        raise InfeasibleError(f"--tpot-max-ms {hi:g} is below the fastest TPOT these "
                              f"devices reach ({fastest_tpot_ms:.3g} ms)", reason="slo")
    out = [_round(fastest_tpot_ms, math.ceil)]
    n = max(1, points)
    for k in range(1, n):
        v = fastest_tpot_ms * (hi / fastest_tpot_ms) ** (k / (n - 1))
        v = _round(v, math.floor if k == n - 1 else round)
        if v > out[-1]:  # a value rounded onto (or under) the previous one adds nothing
            out.append(v)
    return out


def _round(v: float, how, digits: int = 3) -> float:
    """``v`` at ``digits`` significant digits, rounded by ``how`` (ceil, floor, round)."""
    e = math.floor(math.log10(v)) - digits + 1
    # the slack keeps a value that is already round (2.03 as 2.0300000001) where it is
    slack = {math.ceil: -1e-9, math.floor: 1e-9}.get(how, 0.0)
    return round(how(v / 10**e + slack) * 10**e, max(0, -e))


def fastest_tpot_ms(base: dict) -> float:
    """TPOT of the best latency plan for ``base`` (the TTFT SLO and budget applied): the
    start of the default grid. Raises InfeasibleError when no plan meets the TTFT SLO."""
    from autoplan.search.planner import plan

    lat = {**base, "objective": "latency", "tpot_slo_ms": None}
    return plan(**lat).tpot_ms


def layout(p) -> str:
    """The plan's parallel layout in one short line, e.g.
    ``disagg P:TP4 ×2 / D:TP8 ×1 B=64`` or ``coloc TP2·PP2 ×2 B=16``: the shape of a
    replica's stages (TP; attention data parallelism ``DP`` and expert parallelism ``EP``
    of MoE stages where used; one shape per stage, ``/``-separated, when they differ) and
    its PP, ``×`` replicas, the decode batch ``B`` and the prefill batch ``PB`` where it
    differs. Device kinds are named when the plan uses more than one."""
    kinds = {s.device_kind for ph in (p.prefill, p.decode, *(x for m in p.more_designs
                                                          for x in (m.prefill, m.decode) if x))
             for s in ph.stages}

    def phase(ph) -> str:
        shapes = [_shape(s) for s in ph.stages]
        if len(set(shapes)) == 1:
            text = shapes[0] + (f"·PP{len(shapes)}" if len(shapes) > 1 else "")
        elif all(sh.startswith("TP") and "·" not in sh for sh in shapes):  # TP alone varies
            text = "TP" + "/".join(sh[2:] for sh in shapes) + f"·PP{len(shapes)}"
        else:
            text = "/".join(shapes) + f"·PP{len(shapes)}"
        if len(kinds) > 1:
            text = "+".join(dict.fromkeys(s.device_kind for s in ph.stages)) + " " + text
        return f"{text} ×{ph.replicas}"

    b, pb = p.inputs.batch, p.inputs.prefill_batch
    batch = f"B={b}" + (f" PB={pb}" if pb is not None and pb != b else "")
    pre, dec = phase(p.prefill), phase(p.decode)
    # more designs of a pool, each at its own batch
    tag = {"colocated": "coloc ", "prefill": "P:", "decode": "D:"}
    more = "".join(f" + {tag[m.pool]}{phase(m.prefill if m.pool != 'decode' else m.decode)}"
                   f" B={m.batch}" for m in p.more_designs)
    if p.placement == "colocated" and pre == dec:
        return f"coloc {dec} {batch}{more}"
    head = "coloc" if p.placement == "colocated" else "disagg"
    return f"{head} P:{pre} / D:{dec} {batch}{more}"


def _parallel(s) -> tuple[int, int, int]:
    """A stage's (attention DP, TP, EP); DP and EP are 1 in plans without them."""
    return getattr(s, "attention_dp", 1), s.tp, getattr(s, "ep", 1)


def _shape(s) -> str:
    dp, tp, ep = _parallel(s)
    return "·".join([*([f"DP{dp}"] if dp > 1 else []), f"TP{tp}",
                     *([f"EP{ep}"] if ep > 1 else [])])


def _tp(ph) -> int | str:
    tps = [s.tp for s in ph.stages]
    return tps[0] if len(set(tps)) == 1 else "/".join(map(str, tps))


def _signature(p) -> tuple:
    """What makes two plans the same point: layout (cuts, kinds, DP, TP, EP, replicas,
    batches) and figures."""
    phases = tuple((ph.replicas, tuple((s.layers, s.device_kind, _parallel(s))
                                       for s in ph.stages))
                   for ph in (p.prefill, p.decode))
    figures = tuple(round(v, 9) for v in (p.ttft_ms, p.tpot_ms, p.throughput_tokens_per_s))
    more = tuple((m.pool, m.batch, (m.prefill or m.decode).replicas,
                  tuple((s.layers, s.device_kind, _parallel(s))
                        for s in (m.prefill or m.decode).stages)) for m in p.more_designs)
    return (p.placement, phases, p.inputs.batch, p.inputs.prefill_batch, p.devices, figures,
            more)


def solve_point(args: tuple) -> dict:
    """One TPOT target (runs in a worker): its row, with the plan under ``plan``."""
    from autoplan.search.planner import plan

    base, tpot, batch = args
    kw = {**base, "objective": "throughput", "tpot_slo_ms": tpot}
    if batch is not None:  # given by the user; else the planner's own choice
        kw["batch"] = batch
    row = {"tpot_slo_ms": tpot, "targets": f"{tpot:g}", "ttft_slo_ms": base.get("ttft_slo_ms"),
           "batch": batch, "prefill_batch": base.get("prefill_batch")}
    try:
        p = plan(**kw)
    except InfeasibleError as e:
        return {**row, "status": "infeasible", "reason": e.reason or "infeasible",
                "note": " ".join(str(e).split())}
    except InputError as e:
        return {**row, "status": "error", "reason": "input", "note": " ".join(str(e).split())}
    return {**row, "status": p.status, "gap": p.gap, "stop_reason": p.stop_reason,
            "reason": "", "placement": p.placement,
            "layout": layout(p), "prefill_tp": _tp(p.prefill),
            "prefill_pp": len(p.prefill.stages), "prefill_replicas": p.prefill.replicas,
            "decode_tp": _tp(p.decode), "decode_pp": len(p.decode.stages),
            "decode_replicas": p.decode.replicas, "batch": p.inputs.batch,
            "prefill_batch": p.inputs.prefill_batch or p.inputs.batch, "devices": p.devices,
            "ttft_ms": p.ttft_ms, "tpot_ms": p.tpot_ms,
            "tokens_per_s_per_device": p.tokens_per_s_per_device,
            "tokens_per_s_per_user": p.tokens_per_s_per_user,
            "throughput_tokens_per_s": p.throughput_tokens_per_s, "note": "", "plan": p}


def solved(r: dict) -> bool:
    return r["status"] not in ("infeasible", "error")


def dedupe(rows: list[dict]) -> list[dict]:
    """One row per distinct plan (the first target that reached it), its ``targets``
    listing every target that did; unsolved rows all kept."""
    first: dict[tuple, dict] = {}
    out = []
    for r in rows:
        if not solved(r):
            out.append(r)
            continue
        key = _signature(r["plan"])
        if key in first:
            first[key]["targets"] += f";{r['tpot_slo_ms']:g}"
            continue
        first[key] = r
        out.append(r)
    return out


def mark_front(rows: list[dict]) -> None:
    """Mark each solved row ``on_front`` when no solved row beats it on tokens/s per GPU
    and tokens/s per user; unsolved rows are not on it."""
    ok = [r for r in rows if solved(r)]
    front = {id(r) for r in front_max(ok)}
    for r in rows:
        r["on_front"] = id(r) in front


def sweep(base: dict, tpots: list[float], batches: list[int | None], *,
          workers: int | None = None, progress: bool = False,
          ray_address: str | None = None) -> list[dict]:
    """Plan every (batch, TPOT target) for throughput; one row per distinct plan and per
    unmet target, in grid order (batches, then targets ascending), the front marked.
    Each solved row keeps its Plan under ``plan`` (not written to the CSV)."""
    tpots = sorted(tpots)
    points = [(base, t, b) for b in batches for t in tpots]
    if len(points) > MAX_POINTS:
        raise InputError(f"pareto: {len(points)} points, more than {MAX_POINTS}")
    rows = dedupe(run(solve_point, points, workers=workers, ray_address=ray_address,
                      progress=progress, label="throughput points"))
    mark_front(rows)
    return rows


def public(rows: list[dict]) -> list[dict]:
    """The rows without their Plan objects (for ``--json``)."""
    return [{k: r.get(k) for k in COLUMNS} for r in rows]


def to_csv(rows: list[dict]) -> str:
    return rows_csv(rows, COLUMNS)


def write(rows: list[dict], out_dir: str | Path, title: str = "") -> list[Path]:
    """``pareto-throughput.csv`` and its chart (PNG, SVG) of the solved rows."""
    from autoplan.render.pareto import throughput_chart

    return write_rows(rows, out_dir, STEM, COLUMNS, solved, lambda r: r["layout"], title,
                      draw=lambda named, out, t: throughput_chart(named, out, t, name=STEM))
