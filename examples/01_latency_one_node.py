"""Latency plan on one node: the fastest way to serve Llama-3.1-70B on 8 H100s.

    python examples/01_latency_one_node.py
"""

import autoplan

plan = autoplan.plan("meta-llama/Llama-3.1-70B", "h100-sxm-x8", isl=2048, osl=256,
                     objective="latency", engine="vllm")
print(f"{plan.status}: {plan.placement}, TP {plan.decode.stages[0].tp}, "
      f"TTFT {plan.ttft_ms:.1f} ms, TPOT {plan.tpot_ms:.2f} ms, e2e {plan.e2e_ms:.0f} ms")
assert autoplan.validate(plan).ok  # every figure recomputed without the solver
