#!/usr/bin/env bash
# GPU measurements in priority order, within 10 minutes in all (a `timeout` per step); each step's output goes to
# ${OUT:-/tmp}/gpu_<step>.txt and a step that fails or runs out of time does not stop the later ones.
#
#   bash benchmarks/gpu.sh            # from anywhere; runs in the repository root
set -u
cd "$(dirname "$0")/.."
out="${OUT:-/tmp}"
mkdir -p "$out"
nvidia-smi > "$out/gpu_device.txt" 2>&1 || true

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s): $*"
  local began=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$out/gpu_$name.txt" 2>&1
  local rc=$?
  echo "   rc $rc after $((SECONDS - began)) s -> $out/gpu_$name.txt"
}

# 1. ridge, per-target LOO: 1/8 of NSD size, then NSD size (n 8,000, d 30,000, 100,000 targets), vs PyTorch
step ridge_eighth 90 python -m benchmarks.ridge --gpu --size eighth --peak-tflops 67
step ridge_nsd 180 python -m benchmarks.ridge --gpu --size nsd --chunk 8192 --peak-tflops 67
# 2. hybrid fine-tuning step, bfloat16, ViT-B/16, against PyTorch (torch.compile, SDPA)
step train 150 python -m benchmarks.train --device --models vit_b16 --iters 20
# 3. feature extraction forward, bfloat16, images/s and MFU, the projection's share, end to end with and without
#    the stimulus cache
step extract 110 python -m benchmarks.extract --device-report --models vit_s16 --batch 256 --iters 20 --end-to-end 4096
# 4. attention-probe epoch at NSD size (8 subjects x 9,000 stimuli x 197 tokens x 384), compute- or input-bound
step probe 60 python -m benchmarks.probe --gpu
