#!/usr/bin/env bash
# A multi-node Slurm on the emulated cluster of netns-cluster.sh: slurmctld on the host (the
# cluster's .254 address), one slurmd per node namespace with the node's hostname, so that
# sbatch -N 4 places tasks on four "nodes" that talk through the shaped network. Debian 12,
# slurm 22.05. Run as root, after 'netns-cluster.sh up N ...'. Adapted from the reference rig:
# the configuration, state and logs live in the cluster's own folder (/etc/slurm is not
# touched), the munge daemon is a private one with its own socket and key in /run/cb-munge-<name>
# (so no other cluster's
# munged is used or stopped), ports and first job id are the caller's, and stop kills only the
# daemons this folder's pid files name, any number of times.
#
#   netns-slurm.sh install        the Debian packages (slurmctld slurmd slurm-client munge)
#   netns-slurm.sh start [CPUS]   one node per namespace of the cluster, CPUS each (default 2)
#   netns-slurm.sh stop
#
# Env: CB_CLUSTER, CB_CLUSTER_NET (as netns-cluster.sh), CB_SLURM_DIR=/tmp/cb-netns-slurm-$CB_CLUSTER,
#      CB_SLURM_PORT=6917 (slurmctld; slurmd uses the next port), CB_SLURM_FIRST_JOB_ID=1.
# Then: export SLURM_CONF=$CB_SLURM_DIR/slurm.conf; the partition is 'emu', nodes node0..node<N-1>.
# Inside a job, MPICH needs MPIR_CVAR_NOLOCAL=1 MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=tcp and
# srun --mpi=pmi2 (slurm/profiles/netns-cluster.toml says so).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
P=${CB_CLUSTER:-cb}; NET=${CB_CLUSTER_NET:-10.77.0}
D=${CB_SLURM_DIR:-/tmp/cb-netns-slurm-$P}; M=/run/cb-munge-$P; PORT=${CB_SLURM_PORT:-6917}; FIRST=${CB_SLURM_FIRST_JOB_ID:-1}
export SLURM_CONF=$D/slurm.conf
. "$here/slurm-common.sh"
die() { echo "netns-slurm: $*" >&2; exit 1; }

nodes() { ip netns list 2>/dev/null | awk -v re="^${P}n[0-9]+$" '$1 ~ re {print $1}' | wc -l; }

write_conf() {
  local n=$1 cpus=$2 i
  cat > "$SLURM_CONF" <<EOF
ClusterName=emu
AuthInfo=socket=$M/munge.socket
SlurmctldHost=$(hostname -s)($NET.254)
AuthType=auth/munge
CredType=cred/munge
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
$(conf_common)
NodeName=DEFAULT CPUs=$cpus RealMemory=1000 State=UNKNOWN
EOF
  for i in $(seq 0 $((n - 1))); do
    echo "NodeName=node$i NodeHostname=node$i NodeAddr=$NET.$((i + 1))"
  done >> "$SLURM_CONF"
  echo "PartitionName=emu Nodes=node[0-$((n - 1))] Default=YES MaxTime=INFINITE State=UP" >> "$SLURM_CONF"
}

start_munge() {  # a private munged: own key, socket, pid and log in $M, which the munge user can reach
  rm -rf "$M"; install -d -o munge -g munge -m 0755 "$M"
  dd if=/dev/urandom bs=1024 count=1 status=none > "$M/munge.key"
  chown munge:munge "$M/munge.key"; chmod 0400 "$M/munge.key"
  runuser -u munge -- /usr/sbin/munged --socket="$M/munge.socket" --key-file="$M/munge.key" \
    --pid-file="$M/munged.pid" --log-file="$M/munged.log" --seed-file="$M/munged.seed" --force
  for _ in $(seq 50); do [ -s "$M/munged.pid" ] && break; sleep 0.1; done
  cp "$M/munged.pid" "$D/munged.pid"
  munge -S "$M/munge.socket" -n | unmunge -S "$M/munge.socket" >/dev/null
}

start() {
  local cpus=${1:-2} n i
  n=$(nodes); [ "$n" -ge 1 ] || die "cluster '$P' is not up: run netns-cluster.sh up N RATE first"
  [ ! -s "$D/slurmctld.pid" ] || ! kill -0 "$(cat "$D/slurmctld.pid")" 2>/dev/null \
    || die "a Slurm already runs from $D: run '$0 stop' first"
  rm -rf "$D"; mkdir -p "$D"/{state,log}
  for i in $(seq 0 $((n - 1))); do mkdir -p "$D/spool/node$i"; done
  write_conf "$n" "$cpus"
  trap 'echo "netns-slurm: start failed; stopping" >&2; tail -n 20 "$D"/log/*.log >&2 || true; stop' ERR
  start_munge
  slurmctld
  for i in $(seq 0 $((n - 1))); do CB_CLUSTER=$P "$here/netns-cluster.sh" exec "$i" slurmd -N "node$i"; done
  for _ in $(seq 150); do
    if [ "$(sinfo -h -o %T 2>/dev/null | sort -u)" = idle ]; then
      trap - ERR; echo "slurm ready: $(sinfo -h -o '%D nodes %N'), SLURM_CONF=$SLURM_CONF"; return 0
    fi
    sleep 0.2
  done
  false
}

stop() {
  local pids="" f
  for f in "$D"/slurmctld.pid "$D"/slurmd-*.pid; do [ -s "$f" ] && pids+=" $(cat "$f")"; done
  [ -f "$SLURM_CONF" ] && timeout 10 scontrol shutdown >/dev/null 2>&1 || true
  # shellcheck disable=SC2086
  kill_daemons $pids
  rm -f "$D"/slurmctld.pid "$D"/slurmd-*.pid "$D/munged.pid"; rm -rf "$M"
  echo "slurm of cluster $P stopped"
}

case "${1:-}" in
  install) install_pkgs ;; start) shift; start "$@" ;; stop) stop ;;
  *) sed -n '2,19p' "$0" >&2; exit 2 ;;
esac
