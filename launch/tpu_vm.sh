#!/usr/bin/env bash
# One experiment on a Cloud TPU VM (single host: v4-8, v5litepod-8, ...).
#
#   launch/tpu_vm.sh all        # create, setup, run, logs, and print delete
#   launch/tpu_vm.sh create     # or one step at a time
#   launch/tpu_vm.sh setup      # copy this checkout, install requirements.txt
#   launch/tpu_vm.sh run        # train GIN_FILE with --strategy=tpu --tpu=local
#   launch/tpu_vm.sh logs       # copy TensorBoard logs + results to BUCKET
#   launch/tpu_vm.sh delete     # stop paying
#   DRY_RUN=1 launch/tpu_vm.sh all   # print every command, run none
#
# Settings (environment, defaults in brackets):
#   TPU_NAME [mwn-tpu]  ZONE [us-central2-b]  PROJECT [gcloud's default]
#   ACCELERATOR [v4-8]  RUNTIME [tpu-ubuntu2204-base]
#   TF_VERSION [2.21.0]: the tensorflow-tpu build to install. Check that it
#     exists for your TPU (https://cloud.google.com/tpu/docs/supported-versions)
#     and that it matches requirements.txt's tensorflow pin.
#   GIN_FILE [gin/cifar10_uniform_40.gin]  EXTRA_FLAGS [""] (more main flags)
#   RUN_NAME [stem of GIN_FILE]  BUCKET [gs://$PROJECT-mwn]: logs go to
#     $BUCKET/runs/$RUN_NAME; watch them with
#     tensorboard --logdir $BUCKET/runs
#
# Batch sizes are GLOBAL and split over the TPU cores TF sees (v4-8: 4,
# v2-8/v3-8: 8, v5litepod-8: 8): the paper's batch 100 divides by 4, not by
# 8, so on 8 cores bind e.g. train_eval.batch_size = 104 (and
# meta_batch_size) or use v4-8. Every step is compiled by XLA (the step is
# XLA-clean: tests/test_distribute_tpu.py). Training runs in a detached
# `nohup` on the VM; `run` waits for it and streams its log.
# Not tried on a real TPU from this repository's CI (no TPU there): if TF
# does not see the chips, check the tensorflow-tpu install notes for your
# TF version (some releases need TF_PLUGGABLE_DEVICE_LIBRARY_PATH and
# NEXT_PLUGGABLE_DEVICE_USE_C_API=true exported on the VM).
set -euo pipefail
SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."

TPU_NAME=${TPU_NAME:-mwn-tpu}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR=${ACCELERATOR:-v4-8}
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
TF_VERSION=${TF_VERSION:-2.21.0}
GIN_FILE=${GIN_FILE:-gin/cifar10_uniform_40.gin}
RUN_NAME=${RUN_NAME:-$(basename "${GIN_FILE%.gin}")}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
if [[ -z "${PROJECT:-}" ]]; then
  PROJECT=$(gcloud config get-value project 2>/dev/null || echo YOUR_PROJECT)
fi
BUCKET=${BUCKET:-gs://$PROJECT-mwn}
REMOTE_DIR=mwn_tf            # the checkout on the VM, under ~
MODEL_DIR=runs/$RUN_NAME      # on the VM's disk, under ~/$REMOTE_DIR
GCLOUD=(gcloud compute tpus tpu-vm --project="$PROJECT" --zone="$ZONE")

run() {  # echo the command; run it unless DRY_RUN
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ -z "${DRY_RUN:-}" ]]; then "$@"; fi
}
on_vm() { run "${GCLOUD[@]}" ssh "$TPU_NAME" --command="$1"; }

create() {
  run "${GCLOUD[@]}" create "$TPU_NAME" --accelerator-type="$ACCELERATOR" \
      --version="$RUNTIME"
  run gcloud storage buckets create "$BUCKET" --project="$PROJECT" \
      --location="${ZONE%-*}" || true   # fine if it exists
}

setup() {
  # Ship this checkout (tracked and untracked-but-not-ignored files).
  local tarball=/tmp/mwn_tf_src.tgz
  run bash -c "git ls-files -co --exclude-standard -z | xargs -0 tar czf $tarball"
  run "${GCLOUD[@]}" scp "$tarball" "$TPU_NAME:~/mwn_tf_src.tgz"
  # requirements.txt without its CPU/GPU tensorflow line; TPU TensorFlow is
  # the tensorflow-tpu wheel with libtpu from Google's index.
  on_vm "set -e; mkdir -p ~/$REMOTE_DIR && tar xzf ~/mwn_tf_src.tgz -C ~/$REMOTE_DIR
    cd ~/$REMOTE_DIR && python3 -m venv .venv
    .venv/bin/pip install -q -U pip
    .venv/bin/pip install -q tensorflow-tpu==$TF_VERSION \
      -f https://storage.googleapis.com/libtpu-tf-releases/index.html
    grep -v '^tensorflow==' requirements.txt > /tmp/requirements-tpu.txt
    .venv/bin/pip install -q -r /tmp/requirements-tpu.txt
    .venv/bin/python -c 'import tensorflow as tf; print(tf.__version__)'"
}

train() {
  # Detached, so a dropped ssh session does not kill training; rerunning
  # `run` resumes from the newest checkpoint in MODEL_DIR.
  on_vm "cd ~/$REMOTE_DIR && mkdir -p runs && nohup .venv/bin/python -m mwn_tf.main \
    --gin_file=$GIN_FILE --strategy=tpu --tpu=local --model_dir=$MODEL_DIR \
    $EXTRA_FLAGS > $MODEL_DIR.log 2>&1 &
    sleep 5; tail -f $MODEL_DIR.log --pid=\$(pgrep -n -f 'mwn_tf.main')"
}

logs() {
  # TensorBoard event files, results.json, configs and weight files; the
  # checkpoints and exports stay on the VM unless COPY_ALL=1.
  local excl="--exclude='^(checkpoints|export)/'"
  [[ -n "${COPY_ALL:-}" ]] && excl=""
  on_vm "cd ~/$REMOTE_DIR && gcloud storage rsync --recursive $excl \
    $MODEL_DIR $BUCKET/runs/$RUN_NAME && \
    gcloud storage cp $MODEL_DIR.log $BUCKET/runs/$RUN_NAME/train.log"
  echo "tensorboard --logdir $BUCKET/runs" >&2
}

delete() { run "${GCLOUD[@]}" delete "$TPU_NAME" --quiet; }

case "${1:-}" in
  create) create ;;
  setup) setup ;;
  run) train ;;
  logs) logs ;;
  delete) delete ;;
  all) create; setup; train; logs
       echo "done; delete the TPU VM with: launch/tpu_vm.sh delete" >&2 ;;
  *) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$SELF"; exit 2 ;;
esac
