#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for tests (Debian slurm-wlm 22.05 + munge, no systemd, no cgroups).
#   scripts/slurm_local.sh start DIR   # writes DIR/slurm.conf, starts munged, slurmctld, slurmd; prints SLURM_CONF
#   scripts/slurm_local.sh stop DIR    # stops the three daemons (by the PIDs recorded in DIR), waits for them
# Everything (config, state, spool, sockets, logs, PID files) lives under DIR, so nothing of the machine's own
# SLURM or munge is touched. Needs root (SlurmUser=root) and `apt-get install slurmctld slurmd slurm-client munge`.
set -euo pipefail
cmd=${1:?usage: slurm_local.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: slurm_local.sh start|stop DIR}")

stop() {
  local name pid
  for name in slurmd slurmctld munged; do
    [[ -f "$dir/$name.pid" ]] || continue
    pid=$(cat "$dir/$name.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/$name.pid"
  done
}

start() {
  for tool in munged slurmctld slurmd sbatch; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge" >&2; exit 1; }
  done
  mkdir -p "$dir"/{munge,state,spool,log}
  chmod 700 "$dir/munge"
  [[ -f "$dir/munge/munge.key" ]] || { dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none; chmod 400 "$dir/munge/munge.key"; }
  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
  cat >"$dir/slurm.conf" <<CONF
ClusterName=nemo-spatial-local
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=$((6817 + ${SLURM_LOCAL_PORT_OFFSET:-100}))
SlurmdPort=$((6818 + ${SLURM_LOCAL_PORT_OFFSET:-100}))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
ReturnToService=2
KillWait=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
  munged --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" --pid-file="$dir/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed" --force
  export SLURM_CONF=$dir/slurm.conf
  slurmctld -D -f "$SLURM_CONF" >>"$dir/log/slurmctld.out" 2>&1 &
  slurmd -D -N localhost -f "$SLURM_CONF" >>"$dir/log/slurmd.out" 2>&1 &
  for _ in $(seq 100); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then echo "SLURM_CONF=$SLURM_CONF"; return 0; fi
    sleep 0.2
  done
  echo "error: the local SLURM did not come up within 20 s; logs in $dir/log" >&2
  tail -5 "$dir"/log/*.log >&2 || true
  stop
  exit 1
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: slurm_local.sh start|stop DIR" >&2; exit 2 ;;
esac
