#!/bin/bash
# Soft-RoCE test guest for the verbs transport (project-owned copy of ../shared/rxe-vm).
#
#   scripts/rxe-guest.sh setup          install qemu + rdma-core + python3-pyverbs (apt, root),
#                                       build the guest (Debian kernel + rdma_rxe, ~10 s once) and
#                                       make pyverbs visible to the project's venv (one symlink)
#   scripts/rxe-guest.sh venv           only the pyverbs symlink into the venv
#   scripts/rxe-guest.sh run 'cmds'     boot the guest (~8 s), chroot into this machine's root
#                                       (read-only), create rxe0 on eth0, run cmds as root;
#                                       $OUT (writable, = $RXEVM_DIR/out here) and /run are writable;
#                                       prints the job's log and exits with its status
#   scripts/rxe-guest.sh ready          exit 0 if the guest is built
#
# Environment: RXEVM_DIR (default /tmp/collbench-rxe-vm), RXEVM_TIMEOUT (s, default 900),
# RXEVM_MEM (MiB, default 3072), RXEVM_ACCEL (default tcg), RXEVM_NICS (guest NICs, default 1;
# 2 adds eth1 for a second rxe device: multi-rail), VENV (default <repo>/.venv).
# Emulated CPU (TCG): timings inside the guest mean nothing; correctness does.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
D=${RXEVM_DIR:-/tmp/collbench-rxe-vm}
VENV=${VENV:-$HERE/.venv}

venv() {
  local src=/usr/lib/python3/dist-packages/pyverbs
  [ -d "$src" ] || { echo "rxe-guest: $src missing (apt-get install python3-pyverbs)" >&2; return 1; }
  local sp
  sp=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  ln -sfn "$src" "$sp/pyverbs"          # only pyverbs, never all of dist-packages
  "$VENV/bin/python" -c 'import pyverbs.device' && echo "rxe-guest: pyverbs visible in $VENV"
}

setup() {
  [ "$(id -u)" = 0 ] || { echo "rxe-guest: setup needs root (apt-get, qemu)" >&2; return 2; }
  command -v apt-get >/dev/null || { echo "rxe-guest: setup needs apt-get (Debian/Ubuntu)" >&2; return 2; }
  mkdir -p "$D" && cd "$D"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends qemu-system-x86 \
    busybox-static rdma-core ibverbs-providers ibverbs-utils python3-pyverbs >/dev/null
  local pkg kv m want
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  kv=${pkg#linux-image-}
  [ -f "kroot/boot/vmlinuz-$kv" ] || { apt-get download "$pkg" && dpkg-deb -x "${pkg}"_*.deb kroot && rm -f "${pkg}"_*.deb; }
  busybox depmod -b kroot "$kv"
  m=kroot/lib/modules/$kv; rm -rf initrd; mkdir -p initrd/{bin,proc,sys,dev,host,out,lib/modules/$kv}
  want="crc32_generic crc32-pclmul virtio_pci virtio_net 9pnet_virtio 9p rdma_rxe"
  for mod in $want; do grep -E "^([^:]*/)?$mod\.ko:" "$m/modules.dep" | tr -d ':' | tr ' ' '\n'; done | sort -u |
  while read -r f; do
    [ -n "$f" ] && mkdir -p "initrd/lib/modules/$kv/$(dirname "$f")" && cp "$m/$f" "initrd/lib/modules/$kv/$f"
  done
  cp "$m/modules.dep" "$m/modules.alias" "initrd/lib/modules/$kv/"
  cp /bin/busybox initrd/bin/busybox
  cat > initrd/init <<EOT
#!/bin/busybox sh
/bin/busybox --install -s /bin; export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mkdir -p /dev/shm; mount -t tmpfs shm /dev/shm
for m in $want; do modprobe \$m || echo "modprobe \$m failed"; done
hostname rxevm; ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0
mount -t 9p -o trans=virtio,version=9p2000.L,ro hostroot /host
mount -t 9p -o trans=virtio,version=9p2000.L out /out
for d in proc sys dev; do mount --bind /\$d /host/\$d; done
mount -t tmpfs tmp /host/run
P=\$(cat /out/.outpath); mount --bind /out /host/\$P
chroot /host /bin/bash /\$P/job.sh > /out/job.log 2>&1; echo \$? > /out/job.rc
sync; poweroff -f
EOT
  chmod +x initrd/init
  (cd initrd && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > ../initrd.cpio.gz)
  ln -sf "kroot/boot/vmlinuz-$kv" vmlinuz
  echo "rxe-guest: ready: $D (kernel $kv)"
  [ ! -x "$VENV/bin/python" ] || venv
}

ready() { [ -e "$D/vmlinuz" ] && [ -f "$D/initrd.cpio.gz" ] && command -v qemu-system-x86_64 >/dev/null; }

run() {
  ready || { echo "rxe-guest: guest not built; run '$0 setup' first" >&2; return 2; }
  local out=$D/out; rm -rf "$out"; mkdir -p "$out"
  echo "${out#/}" > "$out/.outpath"
  cat > "$out/job.sh" <<EOT
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TMPDIR=/run HOME=/run OUT=$out
rdma link add rxe0 type rxe netdev eth0 || exit 97
$1
EOT
  # TCG by default: /dev/kvm may exist yet hang (nested virtualisation); RXEVM_ACCEL=kvm to try it
  local accel=${RXEVM_ACCEL:-tcg} nics=(-nic user,model=virtio-net-pci)
  [ "${RXEVM_NICS:-1}" -lt 2 ] || nics+=(-nic user,model=virtio-net-pci,net=10.0.3.0/24)
  timeout --foreground "${RXEVM_TIMEOUT:-900}" qemu-system-x86_64 -accel $accel -cpu max -smp 2 \
    -m "${RXEVM_MEM:-3072}" -kernel "$D/vmlinuz" -initrd "$D/initrd.cpio.gz" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1" -nographic -no-reboot -display none \
    -serial "file:$out/console.log" -monitor none \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$out,mount_tag=out,security_model=none" "${nics[@]}" || true
  cat "$out/job.log" 2>/dev/null || true
  return "$(cat "$out/job.rc" 2>/dev/null || echo 99)"
}

case "${1:-}" in
  setup) setup ;;
  venv) venv ;;
  ready) ready ;;
  run) shift; run "$*" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
