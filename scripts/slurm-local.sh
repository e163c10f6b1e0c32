#!/usr/bin/env bash
# A private one-node Slurm cluster on localhost, for tests and CI (Debian 12, slurm 22.05).
# Run as root. Adapted from the project's reference script: the configuration lives in the
# cluster's own folder (SLURM_CONF points at it, /etc/slurm is not touched), the ports are
# chosen by the caller so that two clusters do not collide, and munged is stopped only if
# this script started it.
# Hydra mpiexec inside jobs needs "-iface lo"; srun needs --mpi=pmi2 with the PyPI mpich.
# Usage: slurm-local.sh install | start | stop | selftest VENV   (VENV has mpi4py+mpich)
# Env: SLURM_CI_DIR=/tmp/slurm-local SLURM_CI_CPUS=8 SLURM_CI_AUTH=munge|none
#      SLURM_CI_PORT=6817 (slurmctld; slurmd uses the next port)
#      SLURM_CI_FIRST_JOB_ID=1: a fresh cluster numbers jobs from here. Tests start high and
#      random, because MPICH names shared memory after job and step id, and a killed job's
#      /dev/shm segment would otherwise meet the next cluster's job of the same id.
# After start, use the cluster with: export SLURM_CONF=$SLURM_CI_DIR/slurm.conf
set -euo pipefail
D=${SLURM_CI_DIR:-/tmp/slurm-local}; CPUS=${SLURM_CI_CPUS:-8}; AUTH=${SLURM_CI_AUTH:-munge}
PORT=${SLURM_CI_PORT:-6817}; FIRST=${SLURM_CI_FIRST_JOB_ID:-1}
H=$(hostname -s); export SLURM_CONF=$D/slurm.conf
. "$(dirname "$0")/slurm-common.sh"

write_conf() {
  rm -rf "$D"; mkdir -p "$D"/{state,spool,log}
  cat > "$SLURM_CONF" <<EOF
ClusterName=ci
AuthInfo=cred_expire=10
SlurmctldHost=$H(127.0.0.1)
AuthType=auth/$AUTH
CredType=cred/$AUTH
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
$(conf_common)
NodeName=$H NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi  # someone's munged
  [ -s /etc/munge/munge.key ] || mungekey -c -f -k /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  cp /run/munge/munged.pid "$D/munged.pid"
  munge -n | unmunge >/dev/null
}

start() {
  write_conf
  if [ "$AUTH" = munge ]; then start_munge; fi
  slurmctld; slurmd
  for _ in $(seq 150); do
    if [ "$(sinfo -h -n "$H" -o %T 2>/dev/null)" = idle ]; then
      echo "slurm ready: $H x $CPUS cpus, SLURM_CONF=$SLURM_CONF"; return 0
    fi
    sleep 0.2
  done
  echo "slurm not ready" >&2; tail -n 20 "$D"/log/*.log >&2; return 1
}

stop() {
  local pids=""
  for f in "$D/slurmctld.pid" "$D/slurmd.pid"; do [ -s "$f" ] && pids+=" $(cat "$f")"; done
  scontrol shutdown >/dev/null 2>&1 || true
  # shellcheck disable=SC2086
  kill_daemons $pids
}

selftest() {
  local V=${1:?venv}; cat > "$D/t.py" <<'EOF'
from mpi4py import MPI; c = MPI.COMM_WORLD
s = c.allreduce(c.rank + 1); assert s == c.size * (c.size + 1) // 2
print(f"rank {c.rank}/{c.size} sum={s}", flush=True)
EOF
  sbatch --wait -n 4 -t 2 -o "$D/pmi2.out" --wrap "srun --mpi=pmi2 $V/bin/python $D/t.py"
  sbatch --wait -n 4 -t 2 -o "$D/hydra.out" --wrap "$V/bin/mpiexec -iface lo -n 4 $V/bin/python $D/t.py"
  cat "$D/pmi2.out" "$D/hydra.out"
}

case "${1:-}" in install) install_pkgs ;; start) start ;; stop) stop ;; selftest) selftest "${2:-}" ;;
  *) echo "usage: $0 install|start|stop|selftest VENV" >&2; exit 2 ;; esac
