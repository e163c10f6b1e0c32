#!/usr/bin/env bash
# An emulated cluster on one Linux host, for tests and benchmarks: N "nodes", each a network
# namespace with its own IP, hostname (a UTS namespace per process) and rate-limited NIC, joined
# by Linux bridges. Real TCP, real MPI, real contention. Run as root. Adapted from the project's
# reference rig: several clusters can coexist (each has a name that prefixes its interfaces and
# namespaces, and its own /24), bringing one up refuses to clobber a live one, and `down` removes
# exactly what `up` made, kills only processes living in its namespaces, and may run any number
# of times.
#
#   netns-cluster.sh check                 can this kernel do it? (exit 1 with the reason if not)
#   netns-cluster.sh install               the Debian packages it needs (iproute2, util-linux)
#   netns-cluster.sh up N RATE [HOSTS_PER_LEAF UPLINK_RATE]
#        e.g. up 4 200mbit (one switch); up 8 200mbit 4 200mbit (2 leaves of 4, 4:1 at the core)
#   netns-cluster.sh down
#   netns-cluster.sh exec I CMD...         run CMD on node I (its namespace and hostname)
#   netns-cluster.sh mpiexec VENV N CMD... N ranks, one per node, with VENV's mpiexec, over TCP
#
# Env: CB_CLUSTER=cb (name, at most 5 characters), CB_CLUSTER_NET=10.77.0 (the /24), CB_BURST=256kb,
# CB_TCP_CC (the nodes' TCP congestion control; default cubic, Linux's, or reno where this host
# does not let a namespace choose cubic: both loss-based. Not the host's own, which may be BBR:
# BBR reads the shapers' token-bucket bursts and the veths' microsecond RTT as a link of many
# Gbit/s with no delay, and then starves two-way exchanges; see docs/cluster.md).
# Node i is namespace ${CB_CLUSTER}n<i>, hostname node<i>, address $CB_CLUSTER_NET.<i+1>; the host
# is .254 on the top bridge ${CB_CLUSTER}br0. Shaping: tbf on both ends of each veth pair (a
# node's uplink is the egress of its end, its downlink the egress of the bridge's end). With
# HOSTS_PER_LEAF, leaves are bridges ${CB_CLUSTER}l<k> joined to the top bridge (the spine) by a
# veth pair shaped at UPLINK_RATE both ways: oversubscription HOSTS_PER_LEAF*RATE/UPLINK_RATE.
# Goodput is ~95% of RATE (TCP/IP headers in 1500 B frames); latency is the host's own.
# MPICH (the PyPI wheel) must be told to use the network between ranks of one host:
#   MPIR_CVAR_NOLOCAL=1 MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=tcp   (mpiexec here sets them)
set -euo pipefail
P=${CB_CLUSTER:-cb}; NET=${CB_CLUSTER_NET:-10.77.0}; BURST=${CB_BURST:-256kb}
MPI_ENV=(MPIR_CVAR_NOLOCAL=1 MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=tcp)

die() { echo "netns-cluster: $*" >&2; exit 1; }
[[ $P =~ ^[a-z][a-z0-9]{0,4}$ ]] || die "CB_CLUSTER must be 1-5 lower-case letters or digits, starting with a letter"
[[ $NET =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "CB_CLUSTER_NET must be the first three octets of a /24, e.g. 10.77.0"

tcp_cc() {  # the congestion control the nodes get: CB_TCP_CC, else cubic if a namespace may choose it, else reno
  local allowed; allowed=$(cat /proc/sys/net/ipv4/tcp_allowed_congestion_control 2>/dev/null || echo reno)
  if [ -n "${CB_TCP_CC:-}" ]; then
    [[ " $allowed reno " == *" $CB_TCP_CC "* ]] \
      || die "CB_TCP_CC=$CB_TCP_CC cannot be chosen inside a namespace here (allowed: $allowed reno)"
    echo "$CB_TCP_CC"
  elif [[ " $allowed " == *" cubic "* ]]; then echo cubic
  else echo reno; fi
}

shape() { tc qdisc replace dev "$1" root tbf rate "$2" burst "$BURST" latency 400ms; }
namespaces() { ip netns list 2>/dev/null | awk -v re="^${P}n[0-9]+$" '$1 ~ re {print $1}' | sort -V; }
links() { ip -o link show 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | grep -E "^${P}$1$" || true; }

check() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, veth, bridges, tc)"
  local t=${P}x$(($$ % 1000)) ok=0
  for c in ip tc nsenter unshare; do command -v $c >/dev/null || die "needs $c (run: $0 install)"; done
  ip netns add "$t" 2>/dev/null || die "this kernel or container does not allow network namespaces"
  if ip link add "${t}a" type veth peer name "${t}b" 2>/dev/null; then
    if ! ip link add "${t}r" type bridge 2>/dev/null; then echo "netns-cluster: no Linux bridges here" >&2
    elif ! tc qdisc replace dev "${t}a" root tbf rate 100mbit burst 32kb latency 50ms 2>/dev/null; then
      echo "netns-cluster: no tbf qdisc here (kernel module sch_tbf)" >&2
    else ok=1; fi
    ip link del "${t}r" 2>/dev/null || true; ip link del "${t}a" 2>/dev/null || true
  else echo "netns-cluster: no veth pairs here" >&2; fi
  ip netns del "$t" 2>/dev/null || true
  [ $ok = 1 ] || exit 1
  echo "netns-cluster: this host can build emulated clusters"
}

install_pkgs() {
  command -v ip >/dev/null && command -v tc >/dev/null && command -v nsenter >/dev/null && return 0
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends iproute2 util-linux >/dev/null
}

up() {
  local n=${1:?up N RATE [HOSTS_PER_LEAF UPLINK_RATE]} rate=${2:?rate, e.g. 200mbit} leaf=${3:-0} uplink=${4:-${2}}
  local i k br cc
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 250 ] || die "N must be 1..250 nodes, not $n"
  [[ $leaf =~ ^[0-9]+$ ]] || die "HOSTS_PER_LEAF must be a whole number, not $leaf"
  [ -z "$(links br0)$(namespaces)" ] || die "cluster '$P' is already up: run '$0 down' first"
  cc=$(tcp_cc)
  trap 'echo "netns-cluster: up failed; tearing down" >&2; down' ERR
  ip link add "${P}br0" type bridge; ip addr add "$NET.254/24" dev "${P}br0"; ip link set "${P}br0" up
  if [ "$leaf" -gt 0 ]; then
    for k in $(seq 0 $(( (n + leaf - 1) / leaf - 1 ))); do
      ip link add "${P}l$k" type bridge; ip link set "${P}l$k" up
      ip link add "${P}u$k" type veth peer name "${P}d$k"   # u: leaf -> spine, d: spine -> leaf
      ip link set "${P}u$k" master "${P}l$k"; ip link set "${P}d$k" master "${P}br0"
      ip link set "${P}u$k" up; ip link set "${P}d$k" up
      shape "${P}u$k" "$uplink"; shape "${P}d$k" "$uplink"
    done
  fi
  for i in $(seq 0 $((n - 1))); do
    br=${P}br0; [ "$leaf" -gt 0 ] && br=${P}l$((i / leaf))
    ip netns add "${P}n$i"
    ip link add "${P}h$i" type veth peer name "${P}v$i"
    ip link set "${P}v$i" netns "${P}n$i"
    ip link set "${P}h$i" master "$br"; ip link set "${P}h$i" up
    ip -n "${P}n$i" addr add "$NET.$((i + 1))/24" dev "${P}v$i"
    ip -n "${P}n$i" link set "${P}v$i" up
    ip -n "${P}n$i" link set lo up
    ip netns exec "${P}n$i" sh -c "echo $cc > /proc/sys/net/ipv4/tcp_congestion_control"
    ip netns exec "${P}n$i" tc qdisc replace dev "${P}v$i" root tbf rate "$rate" burst "$BURST" latency 400ms
    shape "${P}h$i" "$rate"
  done
  trap - ERR
  if [ "$leaf" -gt 0 ]; then echo "cluster $P up: $n nodes at $rate, $leaf per leaf, uplinks $uplink, TCP $cc"
  else echo "cluster $P up: $n nodes at $rate on one switch, TCP $cc"; fi
}

down() {
  local ns pid l
  for ns in $(namespaces); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  done
  for ns in $(namespaces); do ip netns del "$ns" 2>/dev/null || true; done
  for l in $(links 'h[0-9]+') $(links 'd[0-9]+') $(links 'l[0-9]+') $(links br0); do
    ip link del "$l" 2>/dev/null || true
  done
  echo "cluster $P down"
}

# nsenter, not 'ip netns exec': the latter remounts /sys, which hides the host's cgroups (slurmd needs them)
node_exec() {
  local i=${1:?exec I CMD...}; shift
  [ -e "/run/netns/${P}n$i" ] || die "cluster '$P' has no node $i"
  exec nsenter --net="/run/netns/${P}n$i" unshare --uts sh -c 'hostname "$0"; exec "$@"' "node$i" "$@"
}

run_mpi() {
  local v=${1:?mpiexec VENV N CMD...} n=${2:?mpiexec VENV N CMD...} i args=(); shift 2
  [ -x "$v/bin/mpiexec" ] || die "$v/bin/mpiexec not found (pip install mpich into that venv)"
  [ -e "/run/netns/${P}n$((n - 1))" ] || die "cluster '$P' has fewer than $n nodes"
  for i in $(seq 0 $((n - 1))); do
    args+=(-n 1 nsenter --net="/run/netns/${P}n$i" unshare --uts sh -c 'hostname "$0"; exec "$@"' "node$i" "$@")
    [ "$i" -lt $((n - 1)) ] && args+=(:)
  done
  exec env "${MPI_ENV[@]}" "$v/bin/mpiexec" "${args[@]}"
}

case "${1:-}" in
  check) check ;; install) install_pkgs ;; up) shift; up "$@" ;; down) down ;;
  exec) shift; node_exec "$@" ;; mpiexec) shift; run_mpi "$@" ;;
  *) sed -n '2,30p' "$0" >&2; exit 2 ;;
esac
