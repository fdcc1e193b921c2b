"""Engine kernel profiles as YAML files: the header (data, refit command, split,
exclusions, attribution, held-out errors) and the command that refits them."""

from __future__ import annotations

from autoplan.calibrate.kernel_data import ATTRIBUTION, HOLDOUT_EVERY
from autoplan.calibrate.kernel_fit import KindReport
from autoplan.calibrate.profile_io import comment_text
from autoplan.inputs import kernels as km

DATA_FILES = ("gemm", "attention_decode", "attention_prefill", "mla", "moe", "comm", "elementwise")


SHIPPED_DATA = "hardware/data/aic-kernels"


REFIT_COMMAND = "autoplan calibrate --kernels hardware/data/aic-kernels --engine {engine} -o hardware/profiles/{engine}.yaml"


GENERAL_EXCLUSIONS = (
    "A100 TRT-LLM 1.0.0 decode attention (implies 1.0-1.65x HBM peak): whole table",
    "L40S GEMM rows with weights of 0.86-19.2 MB, decode-attention rows reading 0.86-96 MB of KV and element-wise"
    " rows moving 0.86-96 MB (L2-served)",
    "vLLM 0.24.0 block-FP8 GEMMs on every system (flat 57-350 us floor, non-kernel work timed)",
    "MoE rows whose expert weights would stream faster than HBM peak; MoE configurations whose latency falls below"
    " half of what fewer tokens took; MoE power-law routing rows (balanced routing only)",
    "rows of other dtypes (nvfp4, int4/int8 weight-only, SmoothQuant) and head_dim != 128",
    "all-reduce sizes that took more than 3x both neighbouring sizes at the same GPU count (a larger message does"
    " all of a smaller one's work; SGLang 0.5.14 on 8 H100 at 1 KB: 38.1 us between 3.3 and 3.5 us)",
)


def _yaml_block(p: km.KernelProfile) -> dict:
    d = p.model_dump(mode="python")
    d.pop("device_kind")
    return d


def profile_yaml(profiles: dict[str, km.KernelProfile], reports: dict[str, KindReport], engine: str,
                 data: str = SHIPPED_DATA) -> str:
    """Deterministic YAML of one engine's profiles, with a header naming the data, the
    refit command, the held-out split, the exclusions, the attribution notice and the
    held-out errors per class."""
    import yaml

    lines = [
        f"# Kernel cost profiles (autoplan/inputs/kernels.py:KernelProfile) for engine {engine}, one per device kind.",
        "# Fitted by autoplan/calibrate/kernel_fit.py from the measured per-kernel latencies (GPU time of CUDA-graph",
        "# replays; NCCL: nccl-tests) in",
        f"#   {data}/{{{','.join(DATA_FILES)}}}.csv.gz",
        "# by least squares on log(predicted/measured) (soft_l1, bounded, fixed starts).",
        "# Refit with:",
        f"#   {REFIT_COMMAND.format(engine=engine)}",
        "# Held-out split (by shape, not at random): within each class the distinct shape keys are sorted and",
        f"# every {HOLDOUT_EVERY}rd (index 1, 4, 7, ...) is held out and never fitted: GEMM (n, k); attention",
        "# (heads, kv_heads); MLA heads; MoE (model, tp, ep); element-wise k; all-reduce message size.",
        "# These profiles are the fits on the remaining rows. Values are rounded to 4 significant digits.",
        "# Excluded (details per kind under notes):",
    ]
    lines += [f"#   - {x}" for x in GENERAL_EXCLUSIONS]
    lines += ["#", "# Held-out |predicted/measured - 1|, median / p90 (rows):"]
    for kind in profiles:
        r = reports[kind]
        cells = [f"{c} {cr.median_held * 100:.1f}/{cr.p90_held * 100:.1f}% ({cr.n_held})"
                 for c, cr in sorted(r.classes.items())]
        lines.append(f"#   {kind} ({r.system} {comment_text(r.version)}):")
        for i in range(0, len(cells), 3):
            lines.append("#     " + "; ".join(cells[i:i + 3]))
    lines += ["#", "# Attribution (hardware/data/aic-kernels/SOURCE.md):"]
    lines += ["#   " + ln for ln in ATTRIBUTION.splitlines()]
    body = {"engine": engine, "device_kinds": {kind: _yaml_block(p) for kind, p in profiles.items()}}
    text = yaml.safe_dump(body, sort_keys=False, default_flow_style=False, width=120, allow_unicode=False)
    return "\n".join(lines) + "\n" + text
