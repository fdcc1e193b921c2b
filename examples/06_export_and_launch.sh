#!/usr/bin/env bash
# Plan, then write launch configs for the engine you run; review them, then run them.
#   bash examples/06_export_and_launch.sh [OUT_DIR]
set -euo pipefail
out="${1:-out}"
mkdir -p "$out"
autoplan plan --model meta-llama/Llama-3.1-8B --topology h100-sxm-x8 --engine vllm \
  -o "$out/plan.json" --json > /dev/null
autoplan export "$out/plan.json" --to vllm --out "$out/vllm"
autoplan export "$out/plan.json" --to sglang --out "$out/sglang"
echo "review $out/vllm/launch.sh, then on the node: bash $out/vllm/launch.sh"
