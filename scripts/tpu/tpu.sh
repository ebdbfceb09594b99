#!/usr/bin/env bash
# Run a funcnet config on a Cloud TPU VM or a multi-host TPU slice.
#
#   scripts/tpu/tpu.sh [options] STEP... [-- funcnet train flags]
#
# Steps, in the order `all` runs them:
#   create   gcloud compute tpus tpu-vm create (one VM per host of the slice)
#   copy     this working tree (no .venv, runs/, .git) to every host
#   install  a venv on every host with funcnet[tpu] (jax[tpu] and libtpu)
#   run      `funcnet train --distributed` on every host at once; JAX finds
#            the other hosts itself, process 0 (worker 0) writes the files
#   fetch    the run folder from worker 0 to ./runs/
#   delete   the TPU VM (not part of `all`: billing runs until you do it)
#
# Options (environment variables of the same name in capitals also work):
#   --name NAME        TPU VM name                  (default funcnet)
#   --zone ZONE        zone with TPU quota          (default us-central2-b)
#   --type TYPE        accelerator type: v4-8 is one host with 4 chips,
#                      v4-32 four hosts; v5litepod-8, v5p-8, ...   (default v4-8)
#   --version RUNTIME  TPU VM software version      (default tpu-ubuntu2204-base)
#   --project PROJECT  gcloud project               (default: gcloud's)
#   --run RUN          run folder name under runs/  (default NAME)
#   --bucket gs://B    write checkpoints to gs://B/RUN (all hosts must see the
#                      checkpoint folder; needed on a multi-host slice)
#   --spot             create a Spot (preemptible) VM
#   --dry-run          print the exact commands, run nothing
#
# Example (prints every command; drop --dry-run to do it):
#   scripts/tpu/tpu.sh --dry-run --type v4-32 --bucket gs://my-bucket all -- \
#       --config configs/digits_mlp.toml --set train.compute_dtype=bfloat16
#
# The config is the one you ran on the laptop: on the slice the batch is
# split over every chip of every host (parallel.devices = 0), so the global
# batch and the per-step math are the same. See docs/parallel.md.

set -euo pipefail

NAME=${NAME:-funcnet}
ZONE=${ZONE:-us-central2-b}
TYPE=${TYPE:-v4-8}
VERSION=${VERSION:-tpu-ubuntu2204-base}
PROJECT=${PROJECT:-}
RUN=${RUN:-}
BUCKET=${BUCKET:-}
SPOT=${SPOT:-}
DRY_RUN=${DRY_RUN:-}
STEPS=()
TRAIN_ARGS=()

usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while (($#)); do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    --zone) ZONE=$2; shift 2 ;;
    --type) TYPE=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --project) PROJECT=$2; shift 2 ;;
    --run) RUN=$2; shift 2 ;;
    --bucket) BUCKET=${2%/}; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    create|copy|install|run|fetch|delete) STEPS+=("$1"); shift ;;
    all) STEPS+=(create copy install run fetch); shift ;;
    *) echo "tpu.sh: unknown argument '$1'; see --help" >&2; exit 2 ;;
  esac
done
((${#STEPS[@]})) || { echo "tpu.sh: no step given; expected one of create copy install run fetch delete all" >&2; exit 2; }
RUN=${RUN:-$NAME}
if [[ -n $BUCKET && $BUCKET != gs://* ]]; then
  echo "tpu.sh: --bucket '$BUCKET': expected gs://BUCKET" >&2; exit 2
fi

REPO=$(cd "$(dirname "$0")/../.." && pwd)
TARBALL=${TMPDIR:-/tmp}/funcnet-src.tar.gz
TPU=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE")
[[ -n $PROJECT ]] && WHERE+=(--project="$PROJECT")

# One word as a shell would need it typed: bare when safe, else in single
# quotes (so the printed commands can be pasted as they are).
q() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,~-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Print a command exactly as it would run, then run it unless --dry-run.
do_cmd() {
  local line="+" w
  for w in "$@"; do line+=" $(q "$w")"; done
  echo "$line"
  [[ -n $DRY_RUN ]] || "$@"
}

# The remote command line, run on every host of the slice at once.
on_all_hosts() {
  do_cmd "${TPU[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all --command "$1"
}

step_create() {
  local extra=()
  [[ -n $SPOT ]] && extra+=(--spot)
  do_cmd "${TPU[@]}" create "$NAME" "${WHERE[@]}" --accelerator-type="$TYPE" \
    --version="$VERSION" "${extra[@]}"
}

step_copy() {
  do_cmd tar -czf "$TARBALL" --exclude=./.venv --exclude=./runs --exclude=./.git \
    -C "$REPO" .
  do_cmd "${TPU[@]}" scp "$TARBALL" "$NAME:funcnet-src.tar.gz" "${WHERE[@]}" --worker=all
  on_all_hosts "rm -rf ~/funcnet && mkdir -p ~/funcnet && tar -xzf ~/funcnet-src.tar.gz -C ~/funcnet"
}

step_install() {
  on_all_hosts "cd ~/funcnet && python3 -m venv .venv && .venv/bin/pip install -q -U pip && .venv/bin/pip install -q -e \".[tpu]\" && .venv/bin/python -c \"import jax; print(jax.process_index(), jax.local_device_count(), jax.devices()[0].device_kind)\""
}

step_run() {
  local args=(--distributed --out "runs/$RUN" --progress never)
  [[ -n $BUCKET ]] && args+=(--set "run.checkpoint_dir=$BUCKET/$RUN")
  local quoted="" w
  for w in "${args[@]}" "${TRAIN_ARGS[@]}"; do quoted+=" $(q "$w")"; done
  # Every host runs the same command; JAX reads the slice's topology from the
  # TPU metadata server, so no coordinator address is needed.
  on_all_hosts "cd ~/funcnet && mkdir -p runs && set -o pipefail && .venv/bin/funcnet train$quoted 2>&1 | tee runs/$RUN.\$(hostname).log"
}

step_fetch() {
  do_cmd mkdir -p "$REPO/runs"
  # Worker 0 is JAX process 0, the one that writes metrics, plots and summary.
  do_cmd "${TPU[@]}" scp --recurse "$NAME:funcnet/runs/$RUN" "$REPO/runs/" \
    "${WHERE[@]}" --worker=0
}

step_delete() {
  do_cmd "${TPU[@]}" delete "$NAME" "${WHERE[@]}" --quiet
}

for s in "${STEPS[@]}"; do
  echo "# $s"
  "step_$s"
done
