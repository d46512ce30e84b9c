#!/usr/bin/env bash
# One machine, several GPUs: MirroredStrategy, one replica per visible GPU.
#
#   launch/multi_gpu.sh GIN_FILE [MODEL_DIR] [more mwn_tf.main flags...]
#
#   # all GPUs of the machine
#   launch/multi_gpu.sh gin/cifar10_uniform_40.gin runs/c10_u40_mirrored
#   # GPUs 0-3 only, one extra binding
#   CUDA_VISIBLE_DEVICES=0,1,2,3 launch/multi_gpu.sh gin/cifar10_uniform_40.gin \
#       runs/c10_u40_4gpu --gin_param="train_eval.seed = 1"
#   # dry run on a machine without GPUs: the CPU split into 2 logical devices
#   CPU_DEVICES=2 launch/multi_gpu.sh gin/smoke.gin /tmp/mwn_multi_gpu
#
# What changes with N GPUs: nothing in the maths. Batch sizes in the gin files
# are GLOBAL (paper: 100 train + 100 meta); each GPU gets batch / N, so N must
# divide both (e.g. 2, 4 or 5 GPUs for 100). The meta step is exact
# (MetaWeightModel, virtual_step="global"); BatchNorm normalises each GPU's
# batch / N samples unless you add
#   --gin_param="MetaWeightModel.sync_batchnorm = True"
# and the cheaper, non-exact meta step is
#   --gin_param="MetaWeightModel.virtual_step = 'local'"
# (see docs/distributed.md). XLA: the runner's jit_compile="auto" lets
# Keras decide; Keras turns XLA off under tf.distribute.
#
# MODEL_DIR defaults to runs/<gin stem>. Rerun the same command to resume.
set -euo pipefail
SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."

if [[ $# -lt 1 ]]; then
  awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$SELF"; exit 2
fi
GIN_FILE=$1; shift
MODEL_DIR_FLAG=()
if [[ $# -gt 0 && $1 != --* ]]; then MODEL_DIR_FLAG=(--model_dir="$1"); shift; fi
PYTHON=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}

if [[ -n "${CPU_DEVICES:-}" ]]; then
  # Dry run: mirror over CPU_DEVICES logical CPUs (same code path as GPUs).
  exec "$PYTHON" launch/cpu_devices.py "$CPU_DEVICES" --gin_file="$GIN_FILE" \
      --strategy=mirrored "${MODEL_DIR_FLAG[@]}" "$@"
fi
if command -v nvidia-smi >/dev/null; then
  echo "GPUs: $(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)" \
       "(CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-all})" >&2
fi
exec "$PYTHON" -m mwn_tf.main --gin_file="$GIN_FILE" --strategy=mirrored \
    "${MODEL_DIR_FLAG[@]}" "$@"
