# Functions of every rendered job script (inlined by nemo_spatial/launcher/render.py; bash >= 4.3).
# Background steps are watched by PID: a component that exits stops the job with its log tail (no hang).
PIDS=(); NAMES=(); LOGS=()

stamp() { date -u +%H:%M:%S; }

start_step() {  # start_step NAME LOG COMMAND...: run COMMAND (an srun) in the background, watched
  local name=$1 log=$2
  shift 2
  echo "[$(stamp)] starting $name (log: $log)"
  echo "=== $(stamp) $*" >>"$log"
  "$@" >>"$log" 2>&1 &
  PIDS+=($!); NAMES+=("$name"); LOGS+=("$log")
}

log_tail() {  # log_tail INDEX
  echo "----- last 40 lines of ${LOGS[$1]} (${NAMES[$1]}) -----"
  tail -n 40 "${LOGS[$1]}" 2>/dev/null
  echo "-----"
}

dead_step() {  # prints the index of the first watched step that has exited
  local i
  for i in "${!PIDS[@]}"; do
    kill -0 "${PIDS[$i]}" 2>/dev/null || { echo "$i"; return 0; }
  done
  return 1
}

stop_steps() {  # SIGTERM every watched step still running (srun passes it on), SIGKILL after 60 s
  local pid deadline=$((SECONDS + 60))
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  while ((SECONDS < deadline)); do
    running_step >/dev/null || return 0
    sleep 1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
}

running_step() {  # prints the PID of a watched step still running; fails when none is
  local pid
  for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && { echo "$pid"; return 0; }; done
  return 1
}

fail() {  # fail INDEX MESSAGE: the component's log tail, every step stopped, the job failed
  echo "[$(stamp)] error: $2" >&2
  log_tail "$1" >&2
  stop_steps
  exit 1
}

wait_healthy() {  # wait_healthy INDEX URL TIMEOUT_S: until URL answers 200; fail if any step dies first
  local deadline=$((SECONDS + $3)) i code
  until curl -sf -o /dev/null --max-time 10 "$2"; do
    if i=$(dead_step); then
      wait "${PIDS[$i]}"; code=$?
      fail "$i" "${NAMES[$i]} exited with code $code before ${NAMES[$1]} answered $2"
    fi
    ((SECONDS < deadline)) || fail "$1" "${NAMES[$1]} did not answer $2 within $3 s (launch.startup_timeout_s)"
    sleep 3
  done
  echo "[$(stamp)] ${NAMES[$1]} ready at $2"
}

checkpoint_step() {  # the step of the run's newest complete checkpoint (0: none)
  local latest
  latest=$(cat "$RUN_DIR/checkpoints/latest" 2>/dev/null) || { echo 0; return; }
  latest=${latest#step_}
  echo $((10#${latest:-0}))
}

node_addr() {  # an IPv4 address of a node name (the name itself when it does not resolve)
  getent ahostsv4 "$1" 2>/dev/null | awk 'NR == 1 { print $1 }' | grep . || echo "$1"
}
