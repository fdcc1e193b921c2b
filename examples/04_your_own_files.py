"""Your own model config.json and topology YAML; the plan embeds both, so it validates,
charts and exports from any folder.

    python examples/04_your_own_files.py [OUT_DIR]
"""

import json
import sys
from pathlib import Path

import autoplan

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out")
out.mkdir(parents=True, exist_ok=True)
# A Hugging Face config.json as you have it (here: a small Llama-shaped model).
(out / "my-model").mkdir(exist_ok=True)
(out / "my-model" / "config.json").write_text(json.dumps({
    "_name_or_path": "acme/tiny-llama", "model_type": "llama", "hidden_size": 2048,
    "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
    "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 4096,
    "tie_word_embeddings": False}))
# Two PCIe L40S servers joined by 100 GbE.
(out / "my-topo.yaml").write_text("""\
name: my-l40s-pair
nodes:
  - name: box
    count: 2
    devices: {kind: l40s, count: 4}
    fabric: {kind: pcie4, bandwidth_bytes_per_s: 32.0e9, latency_s: 5.0e-6, tensor_parallel: true}
networks:
  - {name: eth, kind: ethernet-100g, bandwidth_bytes_per_s: 12.5e9, latency_s: 10.0e-6}
""")
plan = autoplan.plan(str(out / "my-model"), str(out / "my-topo.yaml"), isl=1024, osl=128)
(out / "plan.json").write_text(plan.model_dump_json(indent=2))
print(f"{plan.inputs.model} on {plan.inputs.topology}: TTFT {plan.ttft_ms:.1f} ms, "
      f"TPOT {plan.tpot_ms:.2f} ms on {plan.devices} devices")
assert autoplan.validate(out / "plan.json").ok
