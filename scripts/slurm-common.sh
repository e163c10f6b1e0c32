# Sourced by slurm-local.sh and netns-slurm.sh: what their private Slurm clusters share.
PKGS="slurmctld slurmd slurm-client munge"

install_pkgs() {
  local have
  # shellcheck disable=SC2086
  have=$(dpkg-query -W -f '${Status}\n' $PKGS 2>/dev/null | grep -c 'install ok installed' || true)
  if [ "$have" -ne 4 ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends $PKGS >/dev/null
  fi
  command -v slurmctld >/dev/null && command -v sbatch >/dev/null
}

conf_common() {  # slurm.conf lines both clusters share: ports, job ids, plugins, scheduling
  cat <<EOF2
FirstJobId=$FIRST
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
StateSaveLocation=$D/state
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=pmi2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=4
MailProg=/bin/true
DependencyParameters=kill_invalid_depend
EOF2
}

kill_daemons() {  # PIDS...: wait up to 10 s for them to exit after 'scontrol shutdown', then kill -9
  local alive p
  for _ in $(seq 50); do
    alive=""; for p in "$@"; do kill -0 "$p" 2>/dev/null && alive+=" $p"; done
    [ -z "$alive" ] && break; sleep 0.2
  done
  for p in $alive; do kill -9 "$p" 2>/dev/null || true; done
  if [ -s "$D/munged.pid" ]; then kill "$(cat "$D/munged.pid")" 2>/dev/null || true; fi
}
