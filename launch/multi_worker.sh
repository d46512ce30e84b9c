#!/usr/bin/env bash
# Several machines: MultiWorkerMirroredStrategy (synchronous data parallel,
# all-reduce over the network; every machine may have several GPUs).
#
# Run this script on EVERY machine, with the same WORKERS list (host:port of
# each machine, port free and reachable from the others) and its own INDEX:
#
#   # machine 10.0.0.1
#   WORKERS=10.0.0.1:2222,10.0.0.2:2222 INDEX=0 \
#       launch/multi_worker.sh gin/cifar10_uniform_40.gin gs://BUCKET/runs/c10_u40
#   # machine 10.0.0.2
#   WORKERS=10.0.0.1:2222,10.0.0.2:2222 INDEX=1 \
#       launch/multi_worker.sh gin/cifar10_uniform_40.gin gs://BUCKET/runs/c10_u40
#
# The script turns WORKERS/INDEX into the TF_CONFIG each worker needs, e.g. on
# machine 2:
#   TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
#               "task": {"type": "worker", "index": 1}}'
# (set TF_CONFIG yourself instead, e.g. from a cluster scheduler, and leave
# WORKERS unset). All workers start the same command; training begins when
# all have joined, and a worker that dies stops the others.
#
# Who writes what: worker 0 is the chief. It writes checkpoints, TensorBoard
# summaries, results.json and exports into MODEL_DIR. The other workers must
# take part in every checkpoint save, so they save into
# MODEL_DIR/workertemp_<index>, which they delete when the run ends; they
# never write into the chief's files. Use the same MODEL_DIR everywhere, on
# storage all machines see (gs://..., NFS): resuming needs every worker to
# read the chief's checkpoint.
#
# Batch sizes are GLOBAL and split over all replicas of all machines.
#
# Try it on one machine (2 processes on 127.0.0.1, free ports, logs in
# MODEL_DIR.logs/):
#   LOCAL=2 launch/multi_worker.sh gin/smoke.gin /tmp/mwn_multi_worker
set -euo pipefail
SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."

if [[ $# -lt 2 ]]; then
  awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$SELF"; exit 2
fi
GIN_FILE=$1 MODEL_DIR=$2; shift 2
PYTHON=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
RUN=("$PYTHON" -m mwn_tf.main --gin_file="$GIN_FILE" --strategy=multi_worker
     --model_dir="$MODEL_DIR" "$@")

tf_config() {  # tf_config "host:port,host:port" INDEX
  "$PYTHON" -c 'import json, sys
print(json.dumps({"cluster": {"worker": sys.argv[1].split(",")},
                  "task": {"type": "worker", "index": int(sys.argv[2])}}))' "$1" "$2"
}

if [[ -n "${LOCAL:-}" ]]; then
  # One machine, LOCAL worker processes on loopback ports picked free now.
  PORTS=$("$PYTHON" -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(",".join("127.0.0.1:%d" % s.getsockname()[1] for s in socks))' "$LOCAL")
  LOGS="${MODEL_DIR%/}.logs"; mkdir -p "$LOGS"
  PIDS=()
  for ((i = 0; i < LOCAL; i++)); do
    # CPU only: every process would otherwise grab all GPUs of the machine.
    TF_CONFIG=$(tf_config "$PORTS" "$i") CUDA_VISIBLE_DEVICES="" \
        "${RUN[@]}" >"$LOGS/worker_$i.log" 2>&1 &
    PIDS+=($!)
  done
  echo "workers ${PIDS[*]} on $PORTS; logs in $LOGS/" >&2
  STATUS=0
  for i in "${!PIDS[@]}"; do
    if ! wait "${PIDS[$i]}"; then
      STATUS=1; echo "worker $i failed: see $LOGS/worker_$i.log" >&2
    fi
  done
  tail -n 2 "$LOGS/worker_0.log"
  exit $STATUS
fi

if [[ -z "${TF_CONFIG:-}" ]]; then
  : "${WORKERS:?set WORKERS=host:port,... and INDEX=<this machine>, or TF_CONFIG}"
  : "${INDEX:?set INDEX to the position of this machine in WORKERS (0 = chief)}"
  export TF_CONFIG=$(tf_config "$WORKERS" "$INDEX")
fi
echo "TF_CONFIG=$TF_CONFIG" >&2
exec "${RUN[@]}"
