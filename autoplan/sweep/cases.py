"""``autoplan sweep CASES.yaml``: the cases of a fleet, every combination of its models,
topologies, SLOs and engines, each one plan, in one CSV and a chart.

The file (validated; unknown keys are refused)::

    # what every case shares (each optional; the CLI's defaults)
    isl: 2048
    osl: 256
    batch: 1
    dtype: bf16               # default: the format the checkpoint ships in
    objective: latency        # latency | throughput | devices
    placement: auto           # auto | colocated | disaggregated
    request_rate: null        # requests/s (objective devices or throughput)
    time_limit_s: 30
    # the axes: every combination is a case
    models: [meta-llama/Llama-3.1-8B, meta-llama/Llama-3.1-70B]
    topologies:
      - h100-sxm-x8                            # a shipped name or a YAML path
      - {topology: h200-x8, nodes: 2}          # --nodes / --network
    slos:                                      # optional; default: one case, no SLO
      - {}
      - {ttft_ms: 500, tpot_ms: 20}
    engines: [vllm, sglang]                    # optional; default [vllm]; none: roofline
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from autoplan.errors import InfeasibleError, InputError, first_error
from autoplan.inputs.names import Name, PathName
from autoplan.inputs.workload import MAX_BATCH, MAX_TOKENS
from autoplan.sweep.engine import run
from autoplan.sweep.output import rows_csv, write_rows

MAX_CASES = 10_000

COLUMNS = ("model", "topology", "nodes", "network", "engine", "ttft_slo_ms", "tpot_slo_ms",
           "status", "dtype", "kv_dtype", "placement", "ttft_ms", "tpot_ms", "e2e_ms", "devices",
           "throughput_tokens_per_s", "requests_per_s", "note")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopologyCase(_Strict):
    topology: PathName
    nodes: int | None = Field(None, ge=1, le=4096)
    network: Name | None = None


class SLO(_Strict):
    ttft_ms: float | None = Field(None, gt=0, le=1e9)
    tpot_ms: float | None = Field(None, gt=0, le=1e9)


class Cases(_Strict):
    """A sweep file: shared settings and the axes whose combinations are the cases."""

    models: list[PathName] = Field(min_length=1)
    topologies: list[TopologyCase] = Field(min_length=1)
    slos: list[SLO] = Field(default_factory=lambda: [SLO()], min_length=1)
    engines: list[Literal["vllm", "sglang", "trtllm", "none"]] = Field(
        default_factory=lambda: ["vllm"], min_length=1)
    isl: int = Field(2048, ge=1, le=MAX_TOKENS)  # bounded here: else every case fails
    osl: int = Field(256, ge=1, le=MAX_TOKENS)
    batch: int = Field(1, ge=1, le=MAX_BATCH)
    prefill_batch: int | None = Field(None, ge=1, le=MAX_BATCH)
    dtype: Literal["bf16", "fp16", "fp8", "int8", "int4"] | None = None  # None: the checkpoint's
    kv_dtype: Literal["bf16", "fp16", "fp8", "int8", "int4"] | None = None
    objective: Literal["latency", "throughput", "devices"] = "latency"
    placement: Literal["auto", "colocated", "disaggregated"] = "auto"
    request_rate: float | None = Field(None, gt=0, le=1e9)
    max_memory_fraction: float = Field(0.9, gt=0, le=1)
    time_limit_s: float = Field(30.0, gt=0, le=86400)

    @field_validator("topologies", mode="before")
    @classmethod
    def _names(cls, v):
        return [{"topology": t} if isinstance(t, str) else t for t in v] if isinstance(
            v, list) else v

    def cases(self) -> list[dict]:
        """Every combination, as keyword arguments of :func:`autoplan.plan` plus a
        ``case`` record of the axes."""
        n = len(self.models) * len(self.topologies) * len(self.slos) * len(self.engines)
        if n > MAX_CASES:
            raise InputError(f"sweep: {n} cases, more than {MAX_CASES}")
        shared = self.model_dump(exclude={"models", "topologies", "slos", "engines"})
        out = []
        for m, t, s, e in itertools.product(self.models, self.topologies, self.slos,
                                            self.engines):
            out.append({**shared, "model": m, "topology": t.topology, "nodes": t.nodes,
                        "network": t.network, "engine": None if e == "none" else e,
                        "ttft_slo_ms": s.ttft_ms, "tpot_slo_ms": s.tpot_ms})
        return out


def load_cases(path: str | Path) -> Cases:
    from autoplan.inputs.reading import read_text
    from autoplan.inputs.safe_yaml import MAX_YAML_BYTES, YAML_ERRORS, safe_load_yaml, yaml_problem

    text = read_text(path, "sweep cases", MAX_YAML_BYTES)
    try:
        data = safe_load_yaml(text)
    except YAML_ERRORS as e:
        raise InputError(f"sweep cases {str(path)!r}: not valid YAML{yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise InputError(f"sweep cases {str(path)!r}: expected a mapping (models, topologies, "
                         "...)")
    try:
        return Cases.model_validate(data)
    except ValidationError as e:
        raise InputError(f"sweep cases {str(path)!r}: {first_error(e)}") from None


def check_axes(cases: Cases) -> None:
    """Every model and topology of the file loads (a typo is one line before the first
    case runs, not a row of errors after the last)."""
    from autoplan.catalog import load_model, load_topology

    for m in dict.fromkeys(cases.models):
        try:
            load_model(m)
        except InputError as e:
            raise InputError(f"sweep cases: {e}") from None
    for t in cases.topologies:
        try:
            load_topology(t.topology, None, None, t.nodes, t.network)
        except InputError as e:
            raise InputError(f"sweep cases: {e}") from None


def solve_case(case: dict) -> dict:
    """One case (runs in a worker): its row of the CSV."""
    from autoplan.search.planner import plan

    row = {k: case[k] for k in ("model", "topology", "nodes", "network", "ttft_slo_ms",
                                "tpot_slo_ms")}
    row["engine"] = case["engine"] or "none"
    try:
        p = plan(**case)
    except InfeasibleError as e:
        return {**row, "status": "infeasible", "note": " ".join(str(e).split())}
    except InputError as e:
        return {**row, "status": "error", "note": " ".join(str(e).split())}
    # the formats priced: given, else each model's checkpoint's (rows of one sweep differ)
    return {**row, "status": p.status, "dtype": p.inputs.dtype, "kv_dtype": p.inputs.kv_dtype,
            "placement": p.placement, "ttft_ms": p.ttft_ms,
            "tpot_ms": p.tpot_ms, "e2e_ms": p.e2e_ms, "devices": p.devices,
            "throughput_tokens_per_s": p.throughput_tokens_per_s,
            "requests_per_s": p.requests_per_s, "note": ""}


def sweep_cases(cases: Cases, *, workers: int | None = None, ray_address: str | None = None,
                progress: bool = False) -> list[dict]:
    """Every case's row, in the file's order (models, then topologies, SLOs, engines)."""
    return run(solve_case, cases.cases(), workers=workers, ray_address=ray_address,
               progress=progress, label="sweep cases")


def to_csv(rows: list[dict]) -> str:
    return rows_csv(rows, COLUMNS)


def write(rows: list[dict], out_dir: str | Path, title: str = "") -> list[Path]:
    """``sweep.csv`` and the chart (``sweep.png``, ``sweep.svg``) of the solved cases."""
    return write_rows(rows, out_dir, "sweep", COLUMNS,
                      lambda r: r["status"] not in ("infeasible", "error"), label, title,
                      chart_name="sweep")


def label(r: dict) -> str:
    topo = r["topology"] + (f" x{r['nodes']}" if r.get("nodes") else "")
    parts = [r["model"].rsplit("/", 1)[-1], topo, r["engine"]]
    if r.get("tpot_slo_ms") is not None:
        parts.append(f"TPOT<={r['tpot_slo_ms']:g}")
    if r.get("ttft_slo_ms") is not None:
        parts.append(f"TTFT<={r['ttft_slo_ms']:g}")
    return ", ".join(parts)
