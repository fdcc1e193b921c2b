"""GPU prefill + LPU decode: 8 H100s prefill, 576 SRAM-only LPU chips decode.

    python examples/03_gpu_prefill_lpu_decode.py
"""

import autoplan

plan = autoplan.plan("meta-llama/Llama-3.1-70B", "h100x8-lpu576", isl=2048, osl=256,
                     dtype="fp8", placement="disaggregated")
kinds = {ph: sorted({s.device_kind for s in plan.phase(ph).stages}) for ph in ("prefill", "decode")}
print(f"{plan.status}: prefill on {kinds['prefill']}, decode on {kinds['decode']} in "
      f"{len(plan.decode.stages)} stages; TTFT {plan.ttft_ms:.1f} ms, TPOT {plan.tpot_ms:.2f} ms")
for kind, source in plan.pricing.items():
    print(f"  {kind}: priced by {source}")
