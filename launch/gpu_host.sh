#!/usr/bin/env bash
# Runs a jaxbrain experiment on one host with any number of local GPUs (one process drives them all; batches
# are sharded over every local device).
#   launch/gpu_host.sh configs/score.py:model=vit_s16,benchmark=data/nsd.h5 runs/nsd_vit_s16 [--config.x=y ...]
set -euo pipefail
config=$1; workdir=$2; shift 2
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec python -m jaxbrain.launch --config "$config" --workdir "$workdir" "$@"
