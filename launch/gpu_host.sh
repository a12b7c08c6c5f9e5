#!/usr/bin/env bash
# Runs a jaxbrain experiment on one host with any number of local GPUs.
#
#   launch/gpu_host.sh [--dry-run] [--per-gpu] [--gpus N] CONFIG WORKDIR [--config.x=y ...]
#
# Default: one process drives every local GPU (batches are sharded over all local devices). --per-gpu starts
# one process per GPU (CUDA_VISIBLE_DEVICES=i) joined into one jax.distributed run through a coordinator on
# localhost; process 0 writes, the others wait at barriers. N defaults to the count `nvidia-smi -L` reports.
set -euo pipefail
. "$(dirname "$0")/common.sh"
per_gpu=0 gpus=''
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY_RUN=1; shift ;;
    --per-gpu) per_gpu=1; shift ;;
    --gpus) gpus=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || die "CONFIG and WORKDIR are required"
config=$1 workdir=$2
shift 2
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
if [ "$per_gpu" = 0 ]; then
  run env XLA_PYTHON_CLIENT_MEM_FRACTION="$XLA_PYTHON_CLIENT_MEM_FRACTION" \
    "${PYTHON:-python}" -m jaxbrain.launch --config "$config" --workdir "$workdir" "$@"
  exit
fi
if [ -z "$gpus" ]; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [ "$gpus" -gt 0 ] || die "no GPU found by nvidia-smi; pass --gpus N"
fi
port=${JAXBRAIN_COORDINATOR_PORT:-12355}
pids=()
for ((i = 0; i < gpus; i++)); do
  cmd=(env CUDA_VISIBLE_DEVICES="$i" XLA_PYTHON_CLIENT_MEM_FRACTION="$XLA_PYTHON_CLIENT_MEM_FRACTION"
       "${PYTHON:-python}" -m jaxbrain.launch --config "$config" --workdir "$workdir"
       --coordinator "localhost:$port" --num-processes "$gpus" --process-id "$i" "$@")
  if [ "$DRY_RUN" = 1 ]; then
    run "${cmd[@]}"
  else
    "${cmd[@]}" &
    pids+=($!)
  fi
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
