#!/usr/bin/env bash
# Submits a jaxbrain experiment to a SLURM cluster: one task per node, every task one process of a
# jax.distributed run whose coordinator jax.distributed.initialize() reads from the SLURM environment.
#
#   launch/slurm.sh [--dry-run] [--units] --nodes N [--gpus-per-node G] [--time HH:MM:SS] \
#       [--partition P] [--account A] CONFIG WORKDIR [--config.x=y ...]
#
# WORKDIR must be on storage every node sees; the job log goes to WORKDIR/slurm-%j.out. --units starts
# independent runs (no jax.distributed) that claim (model, benchmark) units from the shared workdir.
# --dry-run prints the sbatch command and the batch script instead of submitting.
set -euo pipefail
. "$(dirname "$0")/common.sh"
nodes='' gpus=0 time_limit=24:00:00 partition='' account='' mode=spmd
repo=$(cd "$(dirname "$0")/.." && pwd)
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY_RUN=1; shift ;;
    --units) mode=units; shift ;;
    --nodes) nodes=$2; shift 2 ;;
    --gpus-per-node) gpus=$2; shift 2 ;;
    --time) time_limit=$2; shift 2 ;;
    --partition) partition=$2; shift 2 ;;
    --account) account=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ -n "$nodes" ] || die "--nodes N is required"
[ $# -ge 2 ] || die "CONFIG and WORKDIR are required"
config=$1 workdir=$2
shift 2
flags=()
[ "$mode" = spmd ] && flags+=(--multihost)
sbatch_args=(--job-name=jaxbrain --nodes="$nodes" --ntasks-per-node=1 --time="$time_limit"
             --output="$workdir/slurm-%j.out")
[ "$gpus" -gt 0 ] && sbatch_args+=(--gpus-per-node="$gpus")
[ -n "$partition" ] && sbatch_args+=(--partition="$partition")
[ -n "$account" ] && sbatch_args+=(--account="$account")
script="#!/usr/bin/env bash
set -euo pipefail
cd $(quote "$repo")
srun $(jaxbrain_command "$config" "$workdir" "${flags[@]}" "$@")"
if [ "$DRY_RUN" = 1 ]; then
  run sbatch "${sbatch_args[@]}"
  printf '%s\n' "$script"
else
  mkdir -p "$workdir"
  printf '%s\n' "$script" | sbatch "${sbatch_args[@]}"
fi
