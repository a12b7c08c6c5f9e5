#!/usr/bin/env bash
# Starts a jaxbrain experiment on every worker of a Cloud TPU VM pod slice, one process per host.
#
#   launch/tpu_pod.sh [--dry-run] [--units] --tpu NAME --zone ZONE [--project P] [--repo DIR] \
#       CONFIG WORKDIR [--config.x=y ...]
#
# Default (SPMD): every host runs the same command with --multihost; jax.distributed.initialize() finds the
# pod's coordinator from the TPU metadata, batches are split over the hosts' chips, and process 0 alone writes
# results and checkpoints while the others wait at barriers. --units instead starts one independent run per host
# (no jax.distributed): the hosts claim (model, benchmark) units of a model zoo from the shared workdir, so a
# pod slice scores many models without a scheduler. WORKDIR must be on storage every host sees (a Filestore or
# gcsfuse mount); REPO (default: this checkout's path) must hold the same checkout on every host.
set -euo pipefail
. "$(dirname "$0")/common.sh"
tpu='' zone='' project='' mode=spmd
repo=$(cd "$(dirname "$0")/.." && pwd)
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY_RUN=1; shift ;;
    --units) mode=units; shift ;;
    --tpu) tpu=$2; shift 2 ;;
    --zone) zone=$2; shift 2 ;;
    --project) project=$2; shift 2 ;;
    --repo) repo=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ -n "$tpu" ] || die "--tpu NAME is required"
[ -n "$zone" ] || die "--zone ZONE is required"
[ $# -ge 2 ] || die "CONFIG and WORKDIR are required"
config=$1 workdir=$2
shift 2
flags=()
[ "$mode" = spmd ] && flags+=(--multihost)
remote="cd $(quote "$repo") && $(jaxbrain_command "$config" "$workdir" "${flags[@]}" "$@")"
gcloud_args=(compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$remote")
[ -n "$project" ] && gcloud_args+=(--project "$project")
run gcloud "${gcloud_args[@]}"
