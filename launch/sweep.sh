#!/usr/bin/env bash
# The paper's tables: one run per (dataset, corruption level, method, seed),
# then every results.json collected into one markdown table.
#
#   launch/sweep.sh TABLE [more mwn_tf.main flags...]
#
# TABLE:
#   noise     CIFAR-10 and CIFAR-100 x uniform 0/20/40/60 % (WRN-28-10) and
#             flip 0/20/40 % (ResNet-32): gin/cifar{10,100}_{uniform,flip}_*.gin
#   longtail  CIFAR-10 and CIFAR-100 x imbalance factor 1/10/20/50/100/200
#             (ResNet-32): gin/cifar{10,100}_longtail_*.gin
#   paper     noise + longtail
#   smoke     digits x uniform 0/20/40/60 % with gin/smoke.gin (2 steps each):
#             checks the whole sweep on a laptop in a few minutes
#
# Settings (environment, defaults in brackets):
#   SWEEP_DIR [runs/sweep_TABLE]: run folders SWEEP_DIR/<config>/<method>/seed<s>
#   METHODS ["mwn baseline"]  SEEDS ["0"]
#   LAUNCH ["plain"]: how each run starts: plain (one device), multi_gpu
#     (launch/multi_gpu.sh), or tpu (--strategy=tpu --tpu=${TPU:-local})
#   DRY_RUN=1: print the commands only.
#
# Runs go one after another. A run whose results.json says finished is
# skipped; a killed one resumes from its checkpoint when the sweep is run
# again. A failed run is reported and the sweep goes on. At the end:
#   SWEEP_DIR/results.md  (python launch/collect_results.py SWEEP_DIR)
set -uo pipefail
SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."

TABLE=${1:-}
if [[ -z "$TABLE" ]]; then
  awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$SELF"; exit 2
fi
shift
PYTHON=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
SWEEP_DIR=${SWEEP_DIR:-runs/sweep_$TABLE}
METHODS=${METHODS:-mwn baseline}
SEEDS=${SEEDS:-0}
LAUNCH=${LAUNCH:-plain}

# Each entry: NAME|GIN_FILE|GIN_PARAM (the binding may be empty).
CONFIGS=()
noise() {
  local ds r
  for ds in cifar10 cifar100; do
    for r in 0 20 40 60; do CONFIGS+=("${ds}_uniform_$r|gin/${ds}_uniform_$r.gin|"); done
    for r in 0 20 40; do CONFIGS+=("${ds}_flip_$r|gin/${ds}_flip_$r.gin|"); done
  done
}
longtail() {
  local ds f
  for ds in cifar10 cifar100; do
    for f in 1 10 20 50 100 200; do
      CONFIGS+=("${ds}_longtail_$f|gin/${ds}_longtail_$f.gin|")
    done
  done
}
case "$TABLE" in
  noise) noise ;;
  longtail) longtail ;;
  paper) noise; longtail ;;
  smoke)
    for r in 0 20 40 60; do
      CONFIGS+=("digits_uniform_$r|gin/smoke.gin|digits.noise_rate = 0.$r")
    done ;;
  *) echo "unknown TABLE '$TABLE' (noise, longtail, paper, smoke)" >&2; exit 2 ;;
esac

launcher() {  # the command that trains one config, before its own flags
  case "$LAUNCH" in
    plain) echo "$PYTHON -m mwn_tf.main" ;;
    multi_gpu) echo "launch/multi_gpu.sh" ;;
    tpu) echo "$PYTHON -m mwn_tf.main --strategy=tpu --tpu=${TPU:-local}" ;;
    *) echo "unknown LAUNCH '$LAUNCH'" >&2; exit 2 ;;
  esac
}
LAUNCHER=$(launcher) || exit 2

FAILED=()
mkdir -p "$SWEEP_DIR"
for entry in "${CONFIGS[@]}"; do
  IFS='|' read -r name gin_file gin_param <<<"$entry"
  for method in $METHODS; do
    for seed in $SEEDS; do
      dir="$SWEEP_DIR/$name/$method/seed$seed"
      if grep -qs '"finished": true' "$dir/results.json"; then
        echo "== $dir: finished, skipped" >&2; continue
      fi
      if [[ "$LAUNCH" == multi_gpu ]]; then
        cmd=($LAUNCHER "$gin_file" "$dir")
      else
        cmd=($LAUNCHER --gin_file="$gin_file" --model_dir="$dir")
      fi
      cmd+=(--gin_param="train_eval.method = '$method'"
            --gin_param="train_eval.seed = $seed")
      [[ -n "$gin_param" ]] && cmd+=(--gin_param="$gin_param")
      cmd+=("$@")
      printf '== %s:' "$dir" >&2; printf ' %q' "${cmd[@]}" >&2; echo >&2
      [[ -n "${DRY_RUN:-}" ]] && continue
      mkdir -p "$dir"
      if ! "${cmd[@]}" >"$dir.log" 2>&1; then
        FAILED+=("$dir"); echo "   FAILED, see $dir.log" >&2
      fi
    done
  done
done

[[ -n "${DRY_RUN:-}" ]] && exit 0
"$PYTHON" launch/collect_results.py "$SWEEP_DIR" --output="$SWEEP_DIR/results.md"
echo "table: $SWEEP_DIR/results.md" >&2
if [[ ${#FAILED[@]} -gt 0 ]]; then
  echo "${#FAILED[@]} run(s) failed: ${FAILED[*]}" >&2; exit 1
fi
