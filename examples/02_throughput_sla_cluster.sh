#!/usr/bin/env bash
# Throughput under an SLA on a 2-node H200 cluster described by a flag, not a YAML file.
#   bash examples/02_throughput_sla_cluster.sh [OUT_DIR]
set -euo pipefail
out="${1:-out}"
mkdir -p "$out"
autoplan plan --model meta-llama/Llama-3.1-70B --topology h200-x8 --nodes 2 \
  --isl 4000 --osl 500 --ttft-slo-ms 2000 --tpot-slo-ms 30 --batch 32 --prefill-batch 1 \
  --objective throughput --engine trtllm -o "$out/plan.json"
autoplan validate "$out/plan.json"
