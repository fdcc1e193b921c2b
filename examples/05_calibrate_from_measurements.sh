#!/usr/bin/env bash
# Fit the roofline calibration to your own measured TTFT/TPOT rows (format:
# hardware/data/SOURCE.md), then price with the fitted profile.
#   bash examples/05_calibrate_from_measurements.sh [OUT_DIR]
set -euo pipefail
out="${1:-out}"
mkdir -p "$out"
cat > "$out/my-rows.csv" <<'CSV'
id,engine,model,device_kind,tp,pp,weight_dtype,batch,isl,context,metric,value,source,notes
m1,my-vllm,meta-llama/Llama-3.1-8B,h100-sxm,1,1,bf16,1,2048,,ttft_ms,140,my lab,example row
m2,my-vllm,meta-llama/Llama-3.1-8B,h100-sxm,1,1,bf16,1,2048,2176,tpot_ms,7.1,my lab,example row
m3,my-vllm,meta-llama/Llama-3.1-8B,h100-sxm,2,1,bf16,1,2048,2176,tpot_ms,4.3,my lab,example row
CSV
autoplan calibrate "$out/my-rows.csv" --no-loo -o "$out/my-profile.yaml"
autoplan estimate --model meta-llama/Llama-3.1-8B --topology h100-sxm-x1 --engine none \
  --profile "$out/my-profile.yaml"
