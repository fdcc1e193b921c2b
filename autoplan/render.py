"""Terminal rendering of estimates and plans (rich tables). Reads results only."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from autoplan.estimate import Estimate


def print_estimate(est: Estimate, console: Console | None = None) -> None:
    c = console or Console()
    c.print(
        f"[bold]{est.model}[/] on [bold]{est.topology}[/] ({est.device_kind}): "
        f"TP {est.tp} x PP {est.pp} = {est.devices} devices, {est.dtype} weights, "
        f"{est.kv_dtype} KV; batch {est.batch}, ISL {est.isl}, OSL {est.osl}"
    )
    t = Table(show_header=True, header_style="bold")
    for col in ("", "time (ms)", "bottleneck", "compute", "memory", "communication"):
        t.add_column(col, justify="right" if col else "left")
    for name, ph in (("prefill (TTFT)", est.prefill), ("decode (TPOT)", est.decode)):
        t.add_row(name, f"{ph.time_ms:.2f}", ph.bottleneck, f"{ph.compute_ms:.2f}",
                  f"{ph.memory_ms:.2f}", f"{ph.communication_ms:.2f}")
    c.print(t)
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
            f"(limit {est.max_memory_fraction:.0%})")
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
            t.add_row(r.id, f.kind, f"{r.measured:.2f}", f"{eb:+.1%}", f"{ea:+.1%}",
                      f"{el:+.1%}" if el is not None else "-")
    c.print(t)
    for name, e in (("before", errs_b), ("after", errs_a), ("leave-one-out", errs_l)):
        if e:
            c.print(f"{name:>14}: median |error| {statistics.median(e):.1%}, max {max(e):.1%}")
    for f in fits:
        p = f.calibration
        c.print(f"{f.kind}: compute_efficiency {p.compute_efficiency:.3f}, half tokens "
                f"{p.compute_half_tokens:.0f}, low precision x{p.low_precision_efficiency:.2f}, "
                f"memory_efficiency {p.memory_efficiency:.3f}, kernel overhead "
                f"{p.kernel_overhead_s * 1e6:.1f} us, collective launch "
                f"{p.collective_launch_s * 1e6:.1f} us")
