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
#   fmnist    the README's Fashion-MNIST table: uniform 40/60 %, flip 40 %,
#             long tail 50 (gin/fashion_mnist_*.gin) x baseline, exact MW-Net
#             (and the fast mode $FMNIST_FAST, if set) x seeds 0 1 2, each MW-Net run
#             followed by `python -m mwn_tf.analyze` (detection.json, figures)
#   fmnist_class  the class-aware study: long tail 50, flip 40 % and both
#             (gin/fashion_mnist_longtail_50_flip_40.gin) x baseline, exact
#             MW-Net and MW-Net with the class-aware V (mwn+classaware) x
#             seeds 0 1 2 (to runs/sweep_fmnist, like the fmnist table)
#   fmnist_fast  the fast-mode study: uniform 60 % and flip 40 % x MW-Net with
#             meta_interval 2/5, virtual_layers 1/2 and their combinations x
#             seeds 0 1 2 (its exact and baseline runs are the fmnist table's;
#             both presets write to runs/sweep_fmnist by default)
#
# Settings (environment, defaults in brackets):
#   SWEEP_DIR [runs/sweep_TABLE]: run folders SWEEP_DIR/<config>/<method>/seed<s>
#   METHODS ["mwn baseline"]  SEEDS ["0"] (fmnist presets: see above)
#     A method is baseline, mwn, or mwn+ the fast-mode tokens of
#     `python -m mwn_tf.bench`: last<k> (train_eval.virtual_layers = k),
#     interval<k> (train_eval.meta_interval = k), warm<n>
#     (train_eval.exact_warmup_steps = n), fd (train_eval.hypergradient =
#     'finite_difference'), recommended (train_eval.fast_mode), and
#     classaware (train_eval.weight_net = 'class_aware'), e.g.
#     mwn+last1+interval2; the run folder is named after it.
#   FMNIST_FAST [""]: a fast mode to add to the fmnist table, e.g. mwn+last2
#   JOBS [1]: runs at a time (e.g. 2 on a 2-core machine for small models)
#   ANALYZE [fmnist presets: 1, else 0]: run mwn_tf.analyze on MW-Net runs
#   LAUNCH ["plain"]: how each run starts: plain (one device), multi_gpu
#     (launch/multi_gpu.sh), or tpu (--strategy=tpu --tpu=${TPU:-local})
#   DRY_RUN=1: print the commands only.
#
# Runs go one after another. A run whose results.json says finished is
# skipped; a killed one resumes from its checkpoint when the sweep is run
# again. A failed run is reported and the sweep goes on. At the end:
#   SWEEP_DIR/results.md  (python launch/collect_results.py SWEEP_DIR)
#   SWEEP_DIR/figures/*_accuracy.png  (test accuracy per epoch, per setting)
set -uo pipefail
SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."

TABLE=${1:-}
if [[ -z "$TABLE" ]]; then
  awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$SELF"; exit 2
fi
shift
PYTHON=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
FMNIST_FAST=${FMNIST_FAST:-}
FMNIST_MODES="mwn+interval2 mwn+interval5 mwn+last1 mwn+last2 mwn+last1+interval2 mwn+last1+interval5 mwn+last2+interval2 mwn+last2+interval5"
case "$TABLE" in
  fmnist|fmnist_fast|fmnist_class)
    SWEEP_DIR=${SWEEP_DIR:-runs/sweep_fmnist}
    [[ "$TABLE" == fmnist ]] && METHODS=${METHODS:-baseline mwn $FMNIST_FAST}
    [[ "$TABLE" == fmnist_class ]] && METHODS=${METHODS:-baseline mwn mwn+classaware}
    METHODS=${METHODS:-$FMNIST_MODES}
    SEEDS=${SEEDS:-0 1 2}
    ANALYZE=${ANALYZE:-1} ;;
esac
SWEEP_DIR=${SWEEP_DIR:-runs/sweep_$TABLE}
METHODS=${METHODS:-mwn baseline}
SEEDS=${SEEDS:-0}
LAUNCH=${LAUNCH:-plain}
JOBS=${JOBS:-1}
ANALYZE=${ANALYZE:-0}

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
  fmnist)
    for c in uniform_60 uniform_40 flip_40 longtail_50; do
      CONFIGS+=("fashion_mnist_$c|gin/fashion_mnist_$c.gin|")
    done ;;
  fmnist_class)
    for c in longtail_50 flip_40 longtail_50_flip_40; do
      CONFIGS+=("fashion_mnist_$c|gin/fashion_mnist_$c.gin|")
    done ;;
  fmnist_fast)
    for c in uniform_60 flip_40; do
      CONFIGS+=("fashion_mnist_$c|gin/fashion_mnist_$c.gin|")
    done ;;
  *) echo "unknown TABLE '$TABLE' (noise, longtail, paper, smoke, fmnist, fmnist_class, fmnist_fast)" >&2
     exit 2 ;;
esac

method_params() {  # METHOD -> its --gin_param flags, one per line
  local token first=1
  local IFS=+
  for token in $1; do
    if (( first )); then
      first=0
      [[ "$token" == mwn || "$token" == baseline ]] || return 1
      echo "train_eval.method = '$token'"
    elif [[ "$1" == mwn+* && "$token" =~ ^last([0-9]+)$ ]]; then
      echo "train_eval.virtual_layers = ${BASH_REMATCH[1]}"
    elif [[ "$1" == mwn+* && "$token" =~ ^interval([0-9]+)$ ]]; then
      echo "train_eval.meta_interval = ${BASH_REMATCH[1]}"
    elif [[ "$1" == mwn+* && "$token" =~ ^warm([0-9]+)$ ]]; then
      echo "train_eval.exact_warmup_steps = ${BASH_REMATCH[1]}"
    elif [[ "$1" == mwn+* && "$token" == fd ]]; then
      echo "train_eval.hypergradient = 'finite_difference'"
    elif [[ "$1" == mwn+* && "$token" == recommended ]]; then
      echo "train_eval.fast_mode = 'recommended'"
    elif [[ "$1" == mwn+* && "$token" == classaware ]]; then
      echo "train_eval.weight_net = 'class_aware'"
    else
      return 1
    fi
  done
}
for method in $METHODS; do
  if ! method_params "$method" >/dev/null; then
    echo "unknown method '$method' (baseline, mwn, or mwn+ tokens last<k> interval<k> warm<n> fd recommended)" >&2
    exit 2
  fi
done

launcher() {  # the command that trains one config, before its own flags
  case "$LAUNCH" in
    plain) echo "$PYTHON -m mwn_tf.main" ;;
    multi_gpu) echo "launch/multi_gpu.sh" ;;
    tpu) echo "$PYTHON -m mwn_tf.main --strategy=tpu --tpu=${TPU:-local}" ;;
    *) echo "unknown LAUNCH '$LAUNCH'" >&2; exit 2 ;;
  esac
}
LAUNCHER=$(launcher) || exit 2

run_one() {  # DIR COMMAND...: train, then analyse (ANALYZE=1, MW-Net runs)
  local dir=$1; shift
  rm -f "$dir.failed"
  if ! "$@" >"$dir.log" 2>&1; then
    touch "$dir.failed"; echo "   FAILED, see $dir.log" >&2; return
  fi
  if [[ "$ANALYZE" == 1 && "$dir" != */baseline/* ]]; then
    "$PYTHON" -m mwn_tf.analyze --model_dir="$dir" >"$dir.analyze.log" 2>&1 ||
      { touch "$dir.failed"; echo "   analysis FAILED, see $dir.analyze.log" >&2; }
  fi
}

mkdir -p "$SWEEP_DIR"
for entry in "${CONFIGS[@]}"; do
  IFS='|' read -r name gin_file gin_param <<<"$entry"
  for method in $METHODS; do
    for seed in $SEEDS; do
      dir="$SWEEP_DIR/$name/$method/seed$seed"
      if grep -qs '"finished": true' "$dir/results.json" && [[ "$ANALYZE" != 1 ||
          "$method" == baseline || -f "$dir/analysis/detection.json" ]]; then
        echo "== $dir: finished, skipped" >&2; continue
      fi
      if [[ "$LAUNCH" == multi_gpu ]]; then
        cmd=($LAUNCHER "$gin_file" "$dir")
      else
        cmd=($LAUNCHER --gin_file="$gin_file" --model_dir="$dir")
      fi
      while IFS= read -r param; do
        cmd+=(--gin_param="$param")
      done < <(method_params "$method")
      cmd+=(--gin_param="train_eval.seed = $seed")
      [[ -n "$gin_param" ]] && cmd+=(--gin_param="$gin_param")
      cmd+=("$@")
      printf '== %s:' "$dir" >&2; printf ' %q' "${cmd[@]}" >&2; echo >&2
      [[ -n "${DRY_RUN:-}" ]] && continue
      mkdir -p "$dir"
      while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n; done
      run_one "$dir" "${cmd[@]}" &
    done
  done
done
wait

[[ -n "${DRY_RUN:-}" ]] && exit 0
FAILED=()
while IFS= read -r marker; do
  FAILED+=("${marker%.failed}")
done < <(find "$SWEEP_DIR" -name '*.failed' | sort)
"$PYTHON" launch/collect_results.py "$SWEEP_DIR" --output="$SWEEP_DIR/results.md" \
  --figures="$SWEEP_DIR/figures"
echo "table: $SWEEP_DIR/results.md" >&2
if [[ ${#FAILED[@]} -gt 0 ]]; then
  echo "${#FAILED[@]} run(s) failed: ${FAILED[*]}" >&2; exit 1
fi
