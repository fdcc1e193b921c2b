"""Terminal rendering of estimates and plans (rich tables). Reads results only.

Names (model, topology, device kinds, device ids, CSV row ids) and sentences made from
them are escaped (:func:`_t`) before they reach rich's markup: ``[/x]`` in a name would
otherwise raise a MarkupError, and ``[link=...]`` would be markup."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from autoplan.cost.estimate import Estimate
from autoplan.plan_schema import Plan


def _t(value) -> str:
    """A value shown as plain text in rich markup."""
    return escape(str(value))


def pct(x: float, digits: int = 0) -> str:
    """A fraction as a percentage; a value that rounds to zero is 0%, never -0%."""
    v = round(x * 100, digits)
    return f"{0.0 if v == 0 else v:.{digits}f}%"


def short_devices(ids: list[str]) -> str:
    """Device ids with consecutive runs folded: node0.d0..node0.d7 -> ``node0.d0-7``."""
    import re

    runs: list[list] = []  # [prefix, first, last]
    for d in ids:
        m = re.fullmatch(r"(.*?)(\d+)", d)
        if m and runs and runs[-1][0] == m[1] and runs[-1][2] + 1 == int(m[2]):
            runs[-1][2] = int(m[2])
        elif m:
            runs.append([m[1], int(m[2]), int(m[2])])
        else:
            runs.append([d, None, None])
    return ", ".join(p if a is None else f"{p}{a}" if a == b else f"{p}{a}-{b}"
                     for p, a, b in runs)


def objective_text(objective: str, value: float, unit: str) -> str:
    """The objective's value with what it means."""
    meaning = {"latency": "end-to-end latency of one request; lower is better",
               "throughput": "output tokens/s the devices sustain; higher is better",
               "devices": "devices serving the request rate; fewer is better"}.get(objective)
    return f"{objective} {value:.6g} {unit}" + (f" ({meaning})" if meaning else "")


def print_estimate(est: Estimate, console: Console | None = None) -> None:
    c = console or Console()
    c.print(
        f"[bold]{_t(est.model)}[/] on [bold]{_t(est.topology)}[/] ({_t(est.device_kind)}): "
        f"TP {est.tp} x PP {est.pp}"
        + (f" x attention DP {est.attention_dp}" if est.attention_dp > 1 else "")
        + (f", EP {est.ep}" if est.ep > 1 else "")
        + f" = {est.devices} devices, {est.dtype} weights, "
        f"{est.kv_dtype} KV; batch {est.batch}"
        + (f" (prefill {est.prefill_batch})" if est.prefill_batch != est.batch else "")
        + f", ISL {est.isl}, OSL {est.osl}"
    )
    t = Table(show_header=True, header_style="bold")
    for col in ("", "time (ms)", "bottleneck", "compute", "memory", "communication", "host"):
        t.add_column(col, justify="right" if col else "left")
    pre = "prefill (TTFT)" if not est.request_ms else "prefill"
    for name, ph in ((pre, est.prefill), ("decode (TPOT)", est.decode)):
        t.add_row(name, f"{ph.time_ms:.2f}", ph.bottleneck, f"{ph.compute_ms:.2f}",
                  f"{ph.memory_ms:.2f}", f"{ph.communication_ms:.2f}", f"{ph.host_ms:.2f}")
    c.print(t)
    where = "--host-terms" if est.host_terms else "hardware/engines.yaml"
    if est.request_ms:
        c.print(f"TTFT: [bold]{est.ttft_ms:.2f} ms[/] = prefill + the server's handling of the "
                f"request ({est.request_ms:.2f} ms, {where} request_overhead_s; "
                "--offline: without)")
    if est.host_terms:
        h = est.host_terms
        c.print(f"host terms (--host-terms): {h.host_step_s * 1e3:.3g} ms per step, "
                f"{h.request_overhead_s * 1e3:.3g} ms per request; {_t(h.fitted_to or 'given')}")
    c.print(f"end-to-end: [bold]{est.e2e_ms:.1f} ms[/] "
            f"(TTFT + {est.osl - 1} x TPOT, decode priced at context {est.decode_context:.0f})")
    m = Table(show_header=True, header_style="bold", title="memory per device")
    for col in ("stage", "layers", "weights GB", "KV GB", "act GB", "reserved GB", "capacity GB",
                "fraction"):
        m.add_column(col, justify="right")
    for r in est.memory:
        m.add_row(str(r.stage), f"{r.layers[0]}-{r.layers[1]}", f"{r.weights_gb:.2f}",
                  f"{r.kv_cache_gb:.3f}", f"{r.activations_gb:.3f}", f"{r.reserved_gb:.1f}",
                  f"{r.capacity_gb:.2f}", f"{r.memory_fraction:.1%}")
    c.print(m)
    verdict = "fits" if est.fits else "[red]does NOT fit[/]"
    c.print(f"{verdict}: peak {est.peak_memory_fraction:.1%} of device memory "
            f"(limit {pct(est.max_memory_fraction)})")
    for name, ph in (("prefill", est.prefill), ("decode", est.decode)):
        if ph.operators:
            o = Table(title=f"{name} operators (all stages)", header_style="bold")
            for col in ("operator", "count", "time ms", "GFLOP", "GB"):
                o.add_column(col, justify="right")
            for r in ph.operators:
                o.add_row(r.name, str(r.count), f"{r.time_ms:.3f}", f"{r.flops / 1e9:.1f}",
                          f"{r.bytes / 1e9:.3f}")
            c.print(o)


def print_fit(fits, console: Console | None = None) -> None:
    """Per-row error before and after a calibration fit, with leave-one-out error."""
    import statistics

    c = console or Console()
    t = Table(header_style="bold", title="calibration fit (error = predicted / measured - 1)")
    for col in ("row", "kind", "measured", "before", "after", "leave-one-out"):
        t.add_column(col, justify="right")
    errs_b, errs_a, errs_l = [], [], []
    for f in fits:
        for r in f.rows:
            eb, ea = r.before / r.measured - 1, r.after / r.measured - 1
            el = r.leave_one_out / r.measured - 1 if r.leave_one_out is not None else None
            errs_b.append(abs(eb))
            errs_a.append(abs(ea))
            if el is not None:
                errs_l.append(abs(el))
            t.add_row(_t(r.id), _t(f.kind), f"{r.measured:.2f}", f"{eb:+.1%}", f"{ea:+.1%}",
                      f"{el:+.1%}" if el is not None else "-")
    c.print(t)
    for name, e in (("before", errs_b), ("after", errs_a), ("leave-one-out", errs_l)):
        if e:
            c.print(f"{name:>14}: median |error| {statistics.median(e):.1%}, max {max(e):.1%}")
    for f in fits:
        p = f.calibration
        c.print(f"{_t(f.kind)}: compute_efficiency {p.compute_efficiency:.3f}, half tokens "
                f"{p.compute_half_tokens:.0f}, low precision x{p.low_precision_efficiency:.2f}, "
                f"memory_efficiency {p.memory_efficiency:.3f}, kernel overhead "
                f"{p.kernel_overhead_s * 1e6:.1f} us, collective launch "
                f"{p.collective_launch_s * 1e6:.1f} us")


def print_plan(p: Plan, console: Console | None = None) -> None:
    """Headline figures and a table of stages per phase."""
    c = console or Console()
    i = p.inputs
    c.print(f"[bold]{_t(i.model)}[/] on [bold]{_t(i.topology)}[/]: {p.placement} placement, "
            f"{p.devices} devices; batch {i.batch}, ISL {i.isl}, OSL {i.osl}, {i.dtype} weights"
            + (f"; in-flight batching, {i.step_tokens}-token steps"
               if p.placement == "colocated" and i.step_tokens else ""))
    c.print(f"TTFT [bold]{p.ttft_ms:.2f} ms[/] (KV transfer {p.kv_transfer_ms:.3f} ms)  "
            f"TPOT [bold]{p.tpot_ms:.3f} ms[/]  e2e [bold]{p.e2e_ms:.1f} ms[/]  "
            f"throughput [bold]{p.throughput_tokens_per_s:.1f} tok/s[/] "
            f"({p.requests_per_s:.3g} requests/s)")
    c.print(f"solver: {p.status}, objective "
            f"{_t(objective_text(i.objective, p.objective, p.objective_unit))}, "
            + (f"bound {p.best_bound:.6g}, gap {p.gap:.2%}, " if p.gap is not None
               else "no bound proven, gap unknown, ")
            + f"{p.solve_seconds:.2f} s"
            + ("" if p.stop_reason == "completed" else f", stopped: {p.stop_reason}"))
    views = [("prefill", p.prefill), ("decode", p.decode)]
    if p.more_designs:
        first = ("colocated" if p.placement == "colocated" else
                 f"prefill batch {i.prefill_batch or i.batch}, decode batch {i.batch}")
        c.print(f"{len(p.more_designs)} more replica design(s) beside the first ({first}); "
                f"TTFT and TPOT above are the first designs', throughput and devices the "
                f"whole deployment's")
    for k, d in enumerate(p.more_designs):
        ph = d.prefill if d.pool != "decode" else d.decode
        figs = ", ".join(x for x in (
            f"TTFT {d.ttft_ms:.2f} ms" if d.ttft_ms is not None else "",
            f"TPOT {d.tpot_ms:.3f} ms" if d.tpot_ms is not None else "") if x)
        views.append((f"{d.pool} design {k + 2} (batch {d.batch}; {figs})", ph))
    for name, ph in views:
        t = Table(title=f"{name}: {ph.time_ms:.3f} ms, {ph.bottleneck}-bound, "
                        f"{ph.replicas} replica(s) of {ph.devices} devices, "
                        f"{ph.requests_per_s:.3g} requests/s, bubbles {pct(ph.bubble_fraction)}",
                  header_style="bold")
        for col in ("stage", "layers", "kind", "TP", "devices", "time ms", "memory", "bottleneck"):
            t.add_column(col, justify="left" if col == "devices" else "right",
                         overflow="fold",
                         min_width={"devices": 8, "bottleneck": 13}.get(col, len(col)))
        for s in ph.stages:
            devs = short_devices(list(s.devices))
            tp = str(s.tp) + (f" xDP{s.attention_dp}" if s.attention_dp > 1 else "") + (
                f" EP{s.ep}" if s.ep > 1 else "")
            t.add_row(str(s.index), f"{s.layers[0]}-{s.layers[1]}", _t(s.device_kind), tp,
                      _t(devs),
                      f"{s.time_ms:.3f}", f"{s.memory_fraction:.1%}", s.bottleneck)
        c.print(t)


def print_explain(e, console: Console | None = None) -> None:
    """``autoplan explain``: the headline, then one row per nearest alternative.

    The reason is a column on wide terminals (>= 140 columns); on narrower ones it is
    listed under the table, numbered like the rows. Replica counts (``y``, or
    ``prefill+decode`` when disaggregated) and requests/s are columns when the plan or an
    alternative has several replicas, or the objective is throughput or devices.
    """
    c = console or Console()
    c.print(f"[bold]{_t(e.model)}[/] on [bold]{_t(e.topology)}[/]: objective "
            f"{_t(objective_text(e.objective, e.objective_value, e.objective_unit))}")
    c.print(_t(e.headline), highlight=False)
    wide = c.width >= 140
    # Narrow (80 columns, or piped): a lighter box and short headers, so that every row
    # keeps its number and the alternative's name (folded over lines, never blanked).
    from rich import box

    t = Table(header_style="bold", show_lines=wide,
              box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD, pad_edge=wide)
    plan_reps = tuple(getattr(e, "replicas", (1, 1)))
    reps = plan_reps != (1, 1) or e.objective != "latency" or any(
        a.replicas not in (None, (1, 1)) for a in e.alternatives)
    ms = " ms" if wide else ""  # narrow: the unit is said once, under the table
    cols = [("#", "right"), ("alternative", "left"), ("TTFT" + ms, "right"),
            ("TPOT" + ms, "right"), ("e2e" + ms, "right")]
    if reps:
        cols += [("replicas" if wide else "reps", "right"), ("req/s", "right")]
    cols += [("devices" if wide else "dev", "right"),
             (f"Δ {e.objective_unit}" if wide else "Δ", "right"),
             ("verdict", "left")] + ([("reason", "left")] if wide else [])
    for col, just in cols:
        t.add_column(col, justify=just, overflow="fold",
                     no_wrap=col not in ("alternative", "reason"),
                     min_width=12 if col == "alternative" else None,
                     ratio=1 if col in ("reason", "alternative") else None)
    if not wide:
        t.caption = f"times in ms; Δ in {e.objective_unit}"
    style = {"worse": "", "ruled out": "yellow", "equal": "cyan", "better": "bold red"}

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    def replicas(r, placement):
        if r is None:
            return "-"
        return str(r[0]) if placement == "colocated" else f"{r[0]}+{r[1]}"

    for k, a in enumerate(e.alternatives, 1):
        row = [str(k), _t(a.name), num(a.ttft_ms, ".2f"), num(a.tpot_ms, ".3f"), num(a.e2e_ms, ".1f")]
        if reps:
            row += [replicas(a.replicas, a.placement), num(a.requests_per_s, ".4g")]
        row += [num(a.devices, "d"), num(a.delta, "+.4g"),
                f"[{style[a.verdict]}]{a.verdict}[/]" if style[a.verdict] else a.verdict]
        t.add_row(*row, *([_t(a.reason)] if wide else []))
    if c.width >= 80:
        c.print(t)
    else:  # too narrow for a table: one record per alternative
        for k, a in enumerate(e.alternatives, 1):
            figs = (f"TTFT {num(a.ttft_ms, '.2f')} ms, TPOT {num(a.tpot_ms, '.3f')} ms, "
                    f"e2e {num(a.e2e_ms, '.1f')} ms, {num(a.devices, 'd')} devices, "
                    f"Δ {num(a.delta, '+.4g')} {e.objective_unit}: {a.verdict}")
            c.print(f"#{k} {_t(a.name)}: {_t(figs)}", highlight=False)
    if not wide:
        for k, a in enumerate(e.alternatives, 1):
            c.print(f"{k}. {_t(a.name)}: {_t(a.reason)}", highlight=False)
    for n in e.notes:
        c.print(f"note: {_t(n)}", highlight=False)


def print_pareto(rows: list[dict], console: Console | None = None) -> None:
    """``autoplan pareto``: one row per grid point, the front marked."""
    c = console or Console()
    t = Table(header_style="bold", title="TTFT-TPOT-devices sweep (* on the front)")
    for col in ("", "TTFT SLO", "TPOT SLO", "budget", "placement", "TTFT ms", "TPOT ms",
                "devices", "tok/s"):
        t.add_column(col, justify="right")
    def fmt(v, f="{:g}"):
        return "-" if v is None else f.format(v)
    for r in rows:
        if r["status"] == "infeasible":
            t.add_row("", fmt(r["ttft_slo_ms"]), fmt(r["tpot_slo_ms"]), fmt(r["max_devices"]),
                      "infeasible", "-", "-", "-", "-")
            continue
        t.add_row("*" if r["on_front"] else "", fmt(r["ttft_slo_ms"]), fmt(r["tpot_slo_ms"]),
                  fmt(r["max_devices"]), r["placement"], f"{r['ttft_ms']:.1f}",
                  f"{r['tpot_ms']:.2f}", str(r["devices"]),
                  f"{r['throughput_tokens_per_s']:.0f}")
    c.print(t)


def print_throughput_front(rows: list[dict], console: Console | None = None) -> None:
    """``autoplan pareto --mode throughput``: one row per distinct plan (the tightest TPOT
    target that reached it, ``+N`` looser ones reaching the same plan) and per run of unmet
    targets (same batch, same reason), the front marked; a plan not proven optimal says so
    after its layout; below the table, why each run is unmet (its loosest target's reason)."""
    from rich import box

    c = console or Console()
    solved = [r for r in rows if r["status"] not in ("infeasible", "error")]
    proven = bool(solved) and all(r["status"] == "optimal" for r in solved)
    t = Table(header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
              title="tokens/s per GPU vs per user (* on the front; +N: N looser TPOT "
                    "targets reach the same plan" + ("; every plan optimal)" if proven else ")"))
    heads = ["", "TPOT\nSLO", "layout", "dev", "TTFT\nms", "TPOT\nms", "tok/s\n/GPU",
             "tok/s\n/user"]
    for col in heads:
        t.add_column(col, justify="left" if col == "layout" else "right",
                     no_wrap=col != "layout", min_width=22 if col == "layout" else None)
    notes = []
    for group in _runs(rows):
        r = group[0]
        ts = [x for g in group for x in g["targets"].split(";")]
        if r not in solved:
            span = ts[0] if len(ts) == 1 else f"{ts[0]}-{ts[-1]}"
            t.add_row("", span, f"{r['status']} ({_t(r['reason'])})" + _batch(r),
                      *["-"] * (len(heads) - 3))
            if group[-1].get("note"):
                head = "" if r.get("batch") is None else f"B={r['batch']}, "
                what = f"TPOT <= {span} ms" if len(ts) == 1 else f"TPOT {span} ms"
                notes.append(f"{head}{what}: {r['status']} ({_t(r['reason'])}): "
                             f"{_t(group[-1]['note'])}")
            continue
        how = ""
        if r["status"] != "optimal":
            gap = "" if r.get("gap") is None else f", gap {pct(r['gap'], 1)}"
            how = f" ({r['status']}{gap}, {r.get('stop_reason') or 'unproven'})"
        t.add_row("*" if r["on_front"] else "",
                  ts[0] if len(ts) == 1 else f"{ts[0]} +{len(ts) - 1}",
                  _t(r["layout"]) + how, str(r["devices"]), f"{r['ttft_ms']:.0f}",
                  f"{r['tpot_ms']:.2f}", f"{r['tokens_per_s_per_device']:.1f}",
                  f"{r['tokens_per_s_per_user']:.1f}")
    c.print(t)
    for line in notes:
        c.print(line, highlight=False)


def _runs(rows: list[dict]) -> list[list[dict]]:
    """Rows in order, consecutive unmet targets of one batch and reason grouped."""
    out: list[list[dict]] = []
    for r in rows:
        unmet = r["status"] in ("infeasible", "error")
        prev = out[-1][-1] if out else None
        if unmet and prev is not None and (prev["status"], prev.get("reason"),
                                           prev.get("batch")) == (
                r["status"], r.get("reason"), r.get("batch")):
            out[-1].append(r)
        else:
            out.append([r])
    return out


def _batch(row: dict) -> str:
    return "" if row.get("batch") is None else f", B={row['batch']}"


def print_kernel_fit(engine: str, reports, console: Console | None = None) -> None:
    """Median / p90 error per device kind and operator class of a kernel fit."""
    console = console or Console()
    t = Table(title=f"{engine} kernel fit: |predicted/measured - 1|")
    for col in ("device kind", "class", "fit rows", "fit median / p90", "held-out rows",
                "held-out median / p90"):
        t.add_column(col, justify="left" if col in ("device kind", "class") else "right")
    for kind, r in reports.items():
        for c, cr in sorted(r.classes.items()):
            t.add_row(kind, c, str(cr.n_fit), f"{cr.median_fit:.1%} / {cr.p90_fit:.1%}",
                      str(cr.n_held), f"{cr.median_held:.1%} / {cr.p90_held:.1%}")
    console.print(t)


def print_sweep(rows: list[dict], console: Console | None = None) -> None:
    """``autoplan sweep``: one row per case."""
    c = console or Console()
    t = Table(header_style="bold", title="sweep cases")
    for col in ("model", "topology", "engine", "SLO ms", "placement", "TTFT ms", "TPOT ms",
                "devices", "tok/s"):
        t.add_column(col, justify="left" if col in ("model", "topology", "engine", "placement")
                     else "right", overflow="fold", min_width=min(len(col), 9))
    for r in rows:
        topo = r["topology"] + (f" x{r['nodes']}" if r.get("nodes") else "")
        slo = "/".join("-" if r.get(k) is None else f"{r[k]:g}"
                       for k in ("ttft_slo_ms", "tpot_slo_ms"))
        head = [_t(r["model"].rsplit("/", 1)[-1]), _t(topo), r["engine"], slo]
        if r["status"] in ("infeasible", "error"):
            t.add_row(*head, r["status"], "-", "-", "-", "-")
            continue
        t.add_row(*head, r["placement"], f"{r['ttft_ms']:.1f}", f"{r['tpot_ms']:.2f}",
                  str(r["devices"]), f"{r['throughput_tokens_per_s']:.0f}")
    c.print(t)
    for r in rows:
        if r["status"] in ("infeasible", "error") and r.get("note"):
            c.print(f"{_t(r['model'])} on {_t(r['topology'])}: {r['status']}: {_t(r['note'])}",
                    highlight=False)
