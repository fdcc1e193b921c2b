"""What a MoE kernel fit of one expert shape says about another.

    python bench/moe_transfer.py        # the table (about 3 minutes)

The shipped kernel data measure the engines' fused-MoE kernels on two expert shapes only:
Mixtral-8x7B (8 experts of 14336) and DeepSeek-V3 (256 of 2048). BF16 and per-tensor FP8
on Hopper and Blackwell have Mixtral alone, so their fits price Qwen3-MoE (128 experts of
1536), DeepSeek-V3 in BF16 and every other MoE model by extrapolation. This fits each
class that has both shapes on one model's TP-path rows and judges it on the other's,
with the cost per expert hit and per assignment free and held at 0 (what
``autoplan calibrate --kernels`` does for a class of one expert count,
``autoplan.calibrate.kernel_specs.MOE_SHAPE_TERMS``). The expert-count terms are held at
0 in both (one model has one count). Nothing here is fitted to the judged rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autoplan.calibrate.kernel_data import ENGINES, SYSTEMS  # noqa: E402
from autoplan.calibrate.kernel_fit import moe_shape_transfer  # noqa: E402
from autoplan.calibrate.kernel_specs import MOE_MODEL_TERMS, MOE_ONE_SHAPE_TERMS  # noqa: E402

DATA = REPO / "hardware" / "data" / "aic-kernels"
MODELS = ("Mixtral-8x7B", "DeepSeek-V3")
VARIANTS = {"free": MOE_MODEL_TERMS, "held at 0": MOE_ONE_SHAPE_TERMS}


def main() -> None:
    print("| fitted on | judged on | system | engine | class | rows | free: median | p90 | held at 0: median | p90 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    summary: dict[str, dict[str, list[float]]] = {m: {v: [] for v in VARIANTS} for m in MODELS}
    for src in MODELS:
        other = next(m for m in MODELS if m != src)
        for system in SYSTEMS:
            for engine in ENGINES:
                for cls in ("moe_bf16", "moe_fp8", "moe_fp8_block"):
                    errs = {v: moe_shape_transfer(DATA, system, engine, cls, src, hold) for v, hold in VARIANTS.items()}
                    if any(e is None for e in errs.values()):
                        continue
                    cells = []
                    for v, e in errs.items():
                        summary[src][v].append(float(np.median(e)))
                        cells += [f"{np.median(e):.1%}", f"{np.percentile(e, 90):.1%}"]
                    n = len(next(iter(errs.values())))
                    print(f"| {src} | {other} | {system} | {engine} | {cls} | {n} | " + " | ".join(cells) + " |")
    print()
    print("| fitted on | classes | free: median of medians | max | held at 0: median of medians | max |")
    print("|---|---|---|---|---|---|")
    for src in MODELS:
        cells = []
        for v in VARIANTS:
            med = summary[src][v]
            cells += [f"{np.median(med):.1%}", f"{max(med):.1%}"]
        print(f"| {src} | {len(summary[src]['free'])} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
