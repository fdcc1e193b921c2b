"""autoplan vs NVIDIA aiconfigurator 0.12 ``cli default``, the same cases side by side.

    python bench/vs_aiconfigurator.py                       # all cases, both tools
    python bench/vs_aiconfigurator.py --cases 70b,8b        # a subset (case ids or substrings)
    python bench/vs_aiconfigurator.py --aic-venv PATH       # aiconfigurator's own venv
    python bench/vs_aiconfigurator.py --out DIR             # raw results (default bench/out/vs-aic)
    python bench/vs_aiconfigurator.py --aic-batch           # + autoplan at aiconfigurator's batch
    python bench/vs_aiconfigurator.py --autoplan-only       # autoplan's side alone
    python bench/vs_aiconfigurator.py --table-from DIR/results.json   # reprint a run's table

Cases (issue 12 scope 5): ISL 4000, OSL 500, TTFT <= 2000 ms, TPOT <= 30 ms, throughput
objective, TensorRT-LLM figures on both sides. For each case both tools run as
subprocesses, one after the other, each measured for wall time and peak RSS (``wait4``
rusage of the child and its descendants, the semantics of ``/usr/bin/time``):

- aiconfigurator: ``aiconfigurator cli default --model-path DIR --system h200_sxm|h100_sxm
  --backend trtllm --total-gpus N --isl --osl --ttft --tpot --save-dir DIR`` on a folder
  holding the shipped ``models/<org>/<name>.json`` as ``config.json`` (aiconfigurator needs
  nothing else offline);
- autoplan: ``python -m autoplan plan ... --objective throughput --engine trtllm -o
  plan.json`` (no ``--batch``: batch search, issue 12 scope 1, chooses it once it lands;
  until then the plan runs at the CLI's default batch 1).

Then each tool's pick is priced by autoplan's cost model (``--engine trtllm``): autoplan's
plan as it comes, aiconfigurator's best agg and best disagg rows translated into concrete
autoplan plans (``bench/aic_plans.py``) and priced by ``autoplan.validate`` /
``autoplan.evaluate``. Picks that use expert parallelism or attention data parallelism are
"not priced (EP/DP not yet in autoplan)" until the plan schema has them.

aiconfigurator is installed, if absent, into its own virtual environment (default
``bench/.venv-aic``, gitignored; ``python -m venv`` + ``pip install aiconfigurator==0.12.0``):
never a project dependency. After that the bench runs offline. Timings are measured,
never asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aic_plans

AIC_VERSION = "0.12.0"
SLO = {"isl": 4000, "osl": 500, "ttft_ms": 2000.0, "tpot_ms": 30.0}


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    model: str        # shipped model (models/<org>/<name>.json)
    topology: str     # shipped topology
    aic_system: str   # aiconfigurator --system
    gpus: int
    dtype: str        # autoplan --dtype (aiconfigurator reads the quantization from config.json)


CASES = [
    Case("llama-70b", "Llama-3.1-70B / 16xH200", "meta-llama/Llama-3.1-70B", "h200-2node",
         "h200_sxm", 16, "bf16"),
    Case("llama-8b", "Llama-3.1-8B / 8xH100", "meta-llama/Llama-3.1-8B", "h100-sxm-x8",
         "h100_sxm", 8, "bf16"),
    Case("deepseek-v3", "DeepSeek-V3 fp8 / 32xH200", "deepseek-ai/DeepSeek-V3", "h200-4node",
         "h200_sxm", 32, "fp8"),
    Case("qwen3-235b", "Qwen3-235B-A22B / 32xH200", "Qwen/Qwen3-235B-A22B", "h200-4node",
         "h200_sxm", 32, "bf16"),
]


# ---------------------------------------------------------------------------
# measured subprocesses


def measured(cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None
             ) -> dict:
    """Run ``cmd`` to completion; wall seconds, peak RSS (MiB) of it and its descendants
    (``wait4``), exit status. stdout and stderr go to ``log``."""
    with log.open("w") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": wall, "peak_rss_mib": ru.ru_maxrss / 1024, "rc": p.returncode,
            "cmd": cmd, "log": str(log)}


# ---------------------------------------------------------------------------
# aiconfigurator


def ensure_aic(venv: Path) -> Path:
    """aiconfigurator's executable in ``venv``, installing it there if absent."""
    exe = venv / "bin" / "aiconfigurator"
    if exe.exists():
        return exe
    print(f"installing aiconfigurator=={AIC_VERSION} into {venv} (needs the network once)",
          file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    f"aiconfigurator=={AIC_VERSION}"], check=True)
    if not exe.exists():
        raise SystemExit(f"{exe}: not installed by pip install aiconfigurator=={AIC_VERSION}")
    return exe


def aic_version(venv: Path) -> str:
    try:
        out = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('aiconfigurator'))"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def model_dir(case: Case, into: Path) -> Path:
    """A folder with the shipped model config as ``config.json`` (autoplan's own
    ``_autoplan`` provenance key dropped)."""
    cfg = json.loads((ROOT / "models" / f"{case.model}.json").read_text())
    cfg.pop("_autoplan", None)
    d = into / case.model.split("/")[-1]
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg, indent=1))
    return d


def run_aic(case: Case, exe: Path, work: Path) -> dict:
    mdir = model_dir(case, work / "models")
    save = work / "aic-save"
    shutil.rmtree(save, ignore_errors=True)
    save.mkdir(parents=True)
    cmd = [str(exe), "cli", "default", "--model-path", str(mdir), "--system", case.aic_system,
           "--backend", "trtllm", "--total-gpus", str(case.gpus), "--isl", str(SLO["isl"]),
           "--osl", str(SLO["osl"]), "--ttft", str(SLO["ttft_ms"]), "--tpot",
           str(SLO["tpot_ms"]), "--save-dir", str(save)]
    env = {**os.environ, "AICONFIGURATOR_LOG_LEVEL": "INFO", "PYTHONWARNINGS": "ignore"}
    res = measured(cmd, work / "aic.log", env=env)
    res["picks"] = {}
    res["chosen"] = None
    if res["rc"] == 0:
        try:
            picks = aic_plans.read_picks(save, case.gpus)
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            res["error"] = f"cannot read its results: {e}"
            return res
        if picks:
            res["chosen"] = max(picks, key=lambda m: picks[m].tokens_per_s_per_gpu_cluster)
        # Its best TP-only layouts, which autoplan can price before it has EP / DP.
        alt = aic_plans.read_tp_only(save, case.gpus, SLO["ttft_ms"], SLO["tpot_ms"])
        picks.update({f"{m} TP-only": p for m, p in alt.items()
                      if m in picks and not aic_plans.plain(picks[m])})
        res["picks"] = picks
    else:
        res["error"] = _tail(work / "aic.log")
    return res


# ---------------------------------------------------------------------------
# autoplan


def autoplan_rev() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "autoplan"], capture_output=True, text=True, check=False).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_autoplan(case: Case, work: Path, batch: tuple[int, int] | None = None) -> dict:
    """``autoplan plan`` on the case; ``batch``: (decode, prefill) batches to fix."""
    tag = "" if batch is None else f"-batch{batch[0]}-{batch[1]}"
    out = work / f"autoplan-plan{tag}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "autoplan", "plan", "--model", case.model, "--topology",
           case.topology, "--dtype", case.dtype, "--isl", str(SLO["isl"]), "--osl",
           str(SLO["osl"]), "--ttft-slo-ms", str(SLO["ttft_ms"]), "--tpot-slo-ms",
           str(SLO["tpot_ms"]), "--objective", "throughput", "--engine", "trtllm", "-o", str(out)]
    if batch is not None:
        cmd += ["--batch", str(batch[0]), "--prefill-batch", str(batch[1])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    res = measured(cmd, work / f"autoplan{tag}.log", env=env, cwd=ROOT)
    res["plan"] = json.loads(out.read_text()) if res["rc"] == 0 and out.exists() else None
    if res["plan"] is None:
        res["error"] = _tail(work / f"autoplan{tag}.log")
    return res


def plan_inputs(case: Case) -> dict:
    """The autoplan plan inputs of a case (what ``autoplan plan`` records)."""
    kv = case.dtype if case.dtype in ("bf16", "fp16", "fp8") else "bf16"
    return {"model": case.model, "topology": case.topology, "isl": SLO["isl"],
            "osl": SLO["osl"], "batch": 1, "prefill_batch": None, "dtype": case.dtype,
            "kv_dtype": kv, "objective": "throughput", "placement": "auto",
            "ttft_slo_ms": SLO["ttft_ms"], "tpot_slo_ms": SLO["tpot_ms"],
            "max_memory_fraction": 0.9, "engine": "trtllm"}


def autoplan_summary(plan: dict) -> str:
    def phase(ph: dict) -> str:
        def one(s: dict) -> str:  # attention TP, and attention DP x EP where used
            dp, ep = s.get("attention_dp", 1), s.get("ep", 1)
            return str(s["tp"]) + (f"dp{dp}" if dp > 1 else "") + (f"ep{ep}" if ep > 1 else "")
        tps = "+".join(one(s) for s in ph["stages"])
        shape = f"tp{tps}" if len(ph["stages"]) == 1 else f"pp{len(ph['stages'])} tp{tps}"
        return f"{ph['replicas']}x {shape}"
    i = plan["inputs"]
    b = f"bs{i['batch']}"
    more = plan.get("more_designs", [])  # further designs of a pool, each at its batch

    def extra(pool: str) -> str:
        return "".join(f" + {phase(m['prefill'] if pool != 'decode' else m['decode'])} "
                       f"bs{m['batch']}" for m in more if m["pool"] == pool)
    if plan["placement"] == "colocated":
        return f"colocated {phase(plan['decode'])} {b}{extra('colocated')}"
    pb = i["prefill_batch"] or i["batch"]
    return (f"disagg ({phase(plan['prefill'])} bs{pb}{extra('prefill')} + "
            f"{phase(plan['decode'])} {b}{extra('decode')})")


def price_autoplan(plan: dict, gpus: int) -> dict:
    from autoplan import validate

    rep = validate(plan)
    f = rep.figures
    return {"ok": rep.ok, "errors": rep.errors,
            "tokens_per_s_per_gpu": f.throughput_tokens_per_s / gpus if f else None,
            "tokens_per_s_per_device_used": f.tokens_per_s_per_device if f else None,
            "ttft_ms": f.ttft_ms if f else None, "tpot_ms": f.tpot_ms if f else None}


def price_aic(pick: aic_plans.Pick, case: Case) -> dict:
    plan = aic_plans.to_plan(pick, plan_inputs(case), case.topology)
    if isinstance(plan, str):
        return {"ok": False, "not_priced": plan, "errors": [plan]}
    r = aic_plans.price(plan)
    f = r["figures"]
    return {"ok": r["ok"], "errors": r["errors"], "plan": r["plan"],
            "tokens_per_s_per_gpu": f["throughput_tokens_per_s"] / case.gpus if f else None,
            "tokens_per_s_per_device_used": f["tokens_per_s_per_device"] if f else None,
            "ttft_ms": f["ttft_ms"] if f else None, "tpot_ms": f["tpot_ms"] if f else None,
            "memory_fraction": f["memory_fraction"] if f else None}


# ---------------------------------------------------------------------------
# the run


def _tail(log: Path, n: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""


def pick_fits(pick: aic_plans.Pick, gpus: int) -> str:
    return "yes" if 0 < pick.used_gpus <= gpus else f"no ({pick.used_gpus} > {gpus})"


def autoplan_record(ap: dict, case: Case) -> dict:
    rec = {k: v for k, v in ap.items() if k != "plan"}
    plan = ap["plan"]
    if plan is None:
        rec["status"] = "error"
        return rec
    rec.update(
        status=plan["status"] + ("" if plan["stop_reason"] == "completed"
                                 else f" ({plan['stop_reason']})"),
        summary=autoplan_summary(plan), placement=plan["placement"],
        devices_used=plan["devices"], batch=plan["inputs"]["batch"],
        prefill_batch=plan["inputs"]["prefill_batch"],
        tokens_per_s_per_gpu=plan["throughput_tokens_per_s"] / case.gpus,
        tokens_per_s_per_user=plan.get("tokens_per_s_per_user"),
        ttft_ms=plan["ttft_ms"], tpot_ms=plan["tpot_ms"],
        solve_seconds=plan["solve_seconds"], priced_by_autoplan=price_autoplan(plan, case.gpus))
    return rec


def one_case(case: Case, exe: Path, out: Path, aic_batch: bool = False) -> dict:
    work = out / case.id
    work.mkdir(parents=True, exist_ok=True)
    if exe is None:  # --autoplan-only
        aic = {"wall_s": None, "peak_rss_mib": None, "rc": None, "picks": {}, "chosen": None,
               "skipped": True}
    else:
        print(f"[{case.id}] aiconfigurator ...", file=sys.stderr, flush=True)
        aic = run_aic(case, exe, work)
    print(f"[{case.id}] autoplan ...", file=sys.stderr, flush=True)
    ap = run_autoplan(case, work)
    rec = {"case": asdict(case), "aiconfigurator": {k: v for k, v in aic.items() if k != "picks"}}
    rec["aiconfigurator"]["picks"] = {}
    for mode, pick in aic["picks"].items():
        priced = price_aic(pick, case)
        (work / f"aic-{mode}-as-autoplan-plan.json").write_text(
            json.dumps(priced.pop("plan", None), indent=1))
        rec["aiconfigurator"]["picks"][mode] = {
            "summary": pick.summary(), "fits_gpus": pick_fits(pick, case.gpus),
            "used_gpus": pick.used_gpus, "copies": pick.copies, "unit_gpus": pick.unit_gpus,
            "prefill": asdict(pick.prefill), "decode": asdict(pick.decode),
            "prefill_workers": pick.prefill_workers, "decode_workers": pick.decode_workers,
            "tokens_per_s_per_gpu": pick.tokens_per_s_per_gpu,
            "tokens_per_s_per_gpu_cluster": pick.tokens_per_s_per_gpu_cluster,
            "tokens_per_s_per_user": pick.tokens_per_s_per_user, "ttft_ms": pick.ttft_ms,
            "tpot_ms": pick.tpot_ms, "meets_slo": pick.tpot_ms <= SLO["tpot_ms"]
            and pick.ttft_ms <= SLO["ttft_ms"], "memory_gb": pick.memory_gb,
            "precision": {k: pick.row.get(k) or pick.row.get("(d)" + k)
                          for k in ("gemm", "kvcache", "moe")},
            "priced_by_autoplan": priced}
    rec["autoplan"] = autoplan_record(ap, case)
    # The batches of aiconfigurator's pick that autoplan prices best (else its chosen one).
    priced = {m: p["priced_by_autoplan"].get("tokens_per_s_per_gpu") or 0.0
              for m, p in rec["aiconfigurator"]["picks"].items()}
    ref = max(priced, key=priced.get) if any(priced.values()) else aic["chosen"]
    ref_pick = aic["picks"].get(ref) if ref else None
    if aic_batch and ref_pick is not None:
        b = (ref_pick.decode.global_bs,
             1 if ref_pick.mode == "agg" else ref_pick.prefill.global_bs)
        print(f"[{case.id}] autoplan --batch {b[0]} --prefill-batch {b[1]} ...",
              file=sys.stderr, flush=True)
        rec["autoplan_at_aic_batch"] = autoplan_record(run_autoplan(case, work, b), case)
        rec["autoplan_at_aic_batch"].update(fixed_batch=list(b), batch_of=ref)
    return rec


def _f(x, fmt="{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def priced_cell(p: dict) -> str:
    if p.get("not_priced"):
        return p["not_priced"]
    v = _f(p.get("tokens_per_s_per_gpu"))
    if p.get("ok"):
        return v
    return f"{v} (breaks {'; '.join(p.get('errors', []))})"


def _autoplan_rows(r: dict) -> list[tuple[str, dict]]:
    rows = [("autoplan", r["autoplan"])]
    if "autoplan_at_aic_batch" in r:
        b = r["autoplan_at_aic_batch"]["fixed_batch"]
        of = r["autoplan_at_aic_batch"]["batch_of"]
        rows.append((f"autoplan --batch {b[0]} --prefill-batch {b[1]} (batches of aic {of})",
                     r["autoplan_at_aic_batch"]))
    return rows


def _aic_modes(a: dict) -> list[str]:
    return sorted(a["picks"], key=lambda m: (m != a["chosen"], "TP-only" in m))


def table(records: list[dict]) -> str:
    head = ("| case | tool | wall s | peak RSS MiB | status | pick | tok/s/GPU (own model) | "
            "tok/s/GPU priced by autoplan (trtllm) |")
    lines = [head, "|" + "---|" * 8]
    for r in records:
        c = r["case"]["title"]
        a = r["aiconfigurator"]
        st = "ok" if a["rc"] == 0 and a["picks"] else f"error rc={a['rc']}"
        first = True
        for mode in _aic_modes(a):
            p = a["picks"][mode]
            tag = " **(chosen)**" if mode == a["chosen"] else ""
            fits = "" if p["fits_gpus"] == "yes" else f", fits: {p['fits_gpus']}"
            sla = "" if p["meets_slo"] else ", misses its SLO"
            wall = f"{a['wall_s']:.1f}" if first else ""
            rss = f"{a['peak_rss_mib']:.0f}" if first else ""
            lines.append(f"| {c} | aiconfigurator {mode}{tag} | {wall} | {rss} | "
                         f"{st if first else ''} | {p['summary']}{fits}{sla} | "
                         f"{p['tokens_per_s_per_gpu_cluster']:.1f} | "
                         f"{priced_cell(p['priced_by_autoplan'])} |")
            first = False
        if not a["picks"] and not a.get("skipped"):
            lines.append(f"| {c} | aiconfigurator | {a['wall_s']:.1f} | "
                         f"{a['peak_rss_mib']:.0f} | {st} | - | - | - |")
        for tool, ap in _autoplan_rows(r):
            if ap.get("summary"):
                lines.append(f"| {c} | {tool} | {ap['wall_s']:.1f} | {ap['peak_rss_mib']:.0f} | "
                             f"{ap['status']} (solver {ap['solve_seconds']:.1f} s) | "
                             f"{ap['summary']} | "
                             f"{ap['tokens_per_s_per_gpu']:.1f} | "
                             f"{priced_cell(ap['priced_by_autoplan'])} |")
            else:
                why = next((x.split("error:", 1)[1].split(";")[0].strip()
                            for x in (ap.get("error") or "").split(" | ") if "error:" in x), "")
                lines.append(f"| {c} | {tool} | {ap['wall_s']:.1f} | {ap['peak_rss_mib']:.0f} | "
                             f"error rc={ap['rc']}: {why} | - | - | - |")
    return "\n".join(lines)


CSV_COLS = ["case", "tool", "mode", "chosen", "wall_s", "peak_rss_mib", "rc", "status", "pick",
            "fits_gpus", "tokens_per_s_per_gpu_own", "tokens_per_s_per_user_own", "ttft_ms_own",
            "tpot_ms_own", "priced_tokens_per_s_per_gpu", "priced_ttft_ms", "priced_tpot_ms",
            "priced_ok", "priced_note"]


def _priced(pr: dict) -> dict:
    return {"priced_tokens_per_s_per_gpu": pr.get("tokens_per_s_per_gpu"),
            "priced_ttft_ms": pr.get("ttft_ms"), "priced_tpot_ms": pr.get("tpot_ms"),
            "priced_ok": pr.get("ok"), "priced_note": "; ".join(pr.get("errors", []))}


def write_csv(records: list[dict], path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLS)
        w.writeheader()
        for r in records:
            a = r["aiconfigurator"]
            for mode in _aic_modes(a):
                p = a["picks"][mode]
                w.writerow({"case": r["case"]["id"], "tool": "aiconfigurator", "mode": mode,
                            "chosen": mode == a["chosen"], "wall_s": a["wall_s"],
                            "peak_rss_mib": a["peak_rss_mib"], "rc": a["rc"], "status": "ok",
                            "pick": p["summary"], "fits_gpus": p["fits_gpus"],
                            "tokens_per_s_per_gpu_own": p["tokens_per_s_per_gpu_cluster"],
                            "tokens_per_s_per_user_own": p["tokens_per_s_per_user"],
                            "ttft_ms_own": p["ttft_ms"], "tpot_ms_own": p["tpot_ms"],
                            **_priced(p["priced_by_autoplan"])})
            for tool, ap in _autoplan_rows(r):
                w.writerow({"case": r["case"]["id"], "tool": tool, "mode": ap.get("placement"),
                            "chosen": tool == "autoplan", "wall_s": ap["wall_s"],
                            "peak_rss_mib": ap["peak_rss_mib"], "rc": ap["rc"],
                            "status": ap.get("status"), "pick": ap.get("summary"),
                            "fits_gpus": "yes" if ap.get("summary") else "",
                            "tokens_per_s_per_gpu_own": ap.get("tokens_per_s_per_gpu"),
                            "tokens_per_s_per_user_own": ap.get("tokens_per_s_per_user"),
                            "ttft_ms_own": ap.get("ttft_ms"), "tpot_ms_own": ap.get("tpot_ms"),
                            **_priced(ap.get("priced_by_autoplan", {}))})


def select(spec: str | None) -> list[Case]:
    if not spec:
        return CASES
    want = [s.strip().lower() for s in spec.split(",") if s.strip()]
    got = [c for c in CASES if any(w in c.id or w in c.title.lower() for w in want)]
    if not got:
        raise SystemExit(f"--cases {spec!r} matches none of: {', '.join(c.id for c in CASES)}")
    return got


def header(meta: dict) -> str:
    slo = meta["slo"]
    load = ""
    if "load_average_at_end" in meta:
        load = (f" (load average {meta['load_average_at_start'][0]:.1f} at start, "
                f"{meta['load_average_at_end'][0]:.1f} at end)")
    return (f"aiconfigurator {meta['aiconfigurator']}, autoplan {meta['autoplan_rev'][:12]}, "
            f"{meta['cpus']} CPUs{load}; ISL {slo['isl']}, OSL {slo['osl']}, "
            f"TTFT <= {slo['ttft_ms']:.0f} ms, TPOT <= {slo['tpot_ms']:.0f} ms")


def precompile() -> None:
    """Byte-compile autoplan's sources (``__pycache__``), as ``pip install`` does for an
    installed package, so both tools import bytecode: aiconfigurator's virtual
    environment was compiled when it was installed, and a checkout run with
    ``PYTHONDONTWRITEBYTECODE`` would otherwise compile autoplan on every start."""
    import compileall

    compileall.compile_dir(str(ROOT / "autoplan"), quiet=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", help="comma-separated case ids or substrings: "
                    + ", ".join(c.id for c in CASES))
    ap.add_argument("--aic-venv", type=Path, default=ROOT / "bench" / ".venv-aic",
                    help="aiconfigurator's virtual environment (created if absent)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "vs-aic",
                    help="folder for raw results (results.json, results.csv, per-case logs)")
    ap.add_argument("--aic-batch", action="store_true",
                    help="also run autoplan with --batch / --prefill-batch fixed at those of "
                    "the aiconfigurator pick autoplan prices best (its chosen one when none "
                    "is priced), until autoplan searches batch sizes itself")
    ap.add_argument("--autoplan-only", action="store_true",
                    help="run autoplan only (its wall time, RSS and pick; no aiconfigurator)")
    ap.add_argument("--table-from", type=Path, metavar="RESULTS_JSON",
                    help="print the table of an earlier run's results.json; run nothing")
    args = ap.parse_args(argv)
    if args.table_from:
        data = json.loads(args.table_from.read_text())
        print(header(data["meta"]))
        print(table(data["records"]))
        return 0
    cases = select(args.cases)
    exe = None if args.autoplan_only else ensure_aic(args.aic_venv)
    precompile()
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"aiconfigurator": "not run" if exe is None else aic_version(args.aic_venv),
            "autoplan_rev": autoplan_rev(),
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "slo": SLO, "note": "autoplan runs without --batch (it searches the batch sizes); "
            "its sources byte-compiled first, as pip install does (aiconfigurator's are)"}
    records = []
    for case in cases:  # one at a time: both tools are CPU-bound
        records.append(one_case(case, exe, args.out, args.aic_batch))
        (args.out / "results.json").write_text(
            json.dumps({"meta": meta, "records": records}, indent=1, default=str))
    meta["load_average_at_end"] = os.getloadavg()
    (args.out / "results.json").write_text(
        json.dumps({"meta": meta, "records": records}, indent=1, default=str))
    write_csv(records, args.out / "results.csv")
    print(header(meta))
    print(table(records))
    print(f"\nraw results: {args.out}/results.json, results.csv", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
