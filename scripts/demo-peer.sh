#!/usr/bin/env bash
# demo-peer.sh: the boot part of `make demo` (owner: target).
#
# A VM boots a verified target FETCHED FROM A PEER, runs a WASM job and
# attests its boot:
#   1. a disk image whose cache partition is empty (local mode): the stick
#      carries only systemd-boot, the kernel, phase-init and the trusted root;
#      `phase image` writes the stick's manifest next to it
#      ($DISK.manifest.json);
#   2. a test LAN: a network namespace with a bridge (198.18.0.1/24 and IPv6
#      link-local), busybox udhcpd on it, and `phase serve --mdns` serving the
#      demo repository ($BUILD/demo-repo, `make publish-demo`);
#   3. QEMU/OVMF (TCG) with a TPM 2.0 (swtpm) on a tap on that bridge; the
#      console streams here: systemd-boot -> phase-init finds the peer,
#      verifies and fetches the kernel, initramfs, rootfs and the demo job,
#      measuring each into PCR 23 -> kexec -> the target mounts the squashfs
#      under OverlayFS -> plasmd runs the verified job:
#      `Hello from Phase WASM on <host>`; the node re-shares /phase with
#      `phase serve --mdns`, which also answers GET /attest with a TPM quote;
#   4. while the VM runs: the node's address from its console (`net:` line),
#      and `phase attest verify` from the LAN asks the node for a quote and
#      checks it (signature, nonce, AK first seen, the event logs' replays,
#      every artifact against the TUF metadata and the stick's manifest):
#      its verdict line;
#   5. the VM is stopped and the namespace deleted (also on error or ^C).
# The last lines: the firmware the VM booted, stage 1's platform line
# (`secureboot on, lockdown integrity` under Secure Boot), the greeting and
# the verdict.
#
#   scripts/demo-peer.sh PHASE_BIN BUILD_DIR KERNEL_RELEASE INIT_BIN
# Environment: DEMO_PEERS=mdns (default: find the peer by mDNS and also name
# it with phase.peers=) or DEMO_PEERS=mdns-only; DEMO_TIMEOUT (s, 600) for
# the greeting; DEMO_ATTEST_TIMEOUT (s, 120) for the node's peer service to
# answer after it; DEMO_ATTEST_RUNS (0) timed verifies after the verdict
# (scripts/bench-attest.sh).
set -euo pipefail
# DEMO_SECURE_BOOT=off boots with Secure Boot off; default: on, with the
# stock Microsoft keys, as a PC leaves the factory.
SECURE_BOOT_FLAG=(--secure-boot)
[[ ${DEMO_SECURE_BOOT:-on} == off ]] && SECURE_BOOT_FLAG=()
PHASE=${1:?usage: demo-peer.sh PHASE_BIN BUILD_DIR KERNEL_RELEASE INIT_BIN}
BUILD=${2:?usage}
RELEASE=${3:?usage}
INIT=${4:?usage}
here=$(cd "$(dirname "$0")/.." && pwd)
KEYS=$BUILD/demo-keys
REPO=$BUILD/demo-repo
WORK=$BUILD/demo-peer
DISK=$BUILD/phase-boot-demo.img
GREETING="Hello from Phase WASM"
NS=phase-demo-$$
PEER_IP=198.18.0.1
PORT=7070
TIMEOUT=${DEMO_TIMEOUT:-600}
ATTEST_TIMEOUT=${DEMO_ATTEST_TIMEOUT:-120}

t0=$SECONDS
demo_start=$(date +%s) # for attest_node, which runs in another shell
step() { printf '\n== boot demo [%3ds]: %s\n' $((SECONDS - t0)) "$*"; }
die() {
  echo "demo-peer: $*" >&2
  exit 1
}
[[ $(id -u) == 0 ]] || die "needs root (network namespaces, tap devices)"
[[ -f $KEYS/1.root.json ]] || die "no demo keys in $KEYS (run: make publish-demo)"
[[ -f $REPO/metadata/timestamp.json ]] || die "no demo repository in $REPO (run: make publish-demo)"

serve_pid='' dhcp_pid=''
cleanup() {
  local rc=$?
  [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
  [[ -n $dhcp_pid ]] && kill "$dhcp_pid" 2>/dev/null && wait "$dhcp_pid" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$WORK" && mkdir -p "$WORK"
# The peer's address goes on the stick's command line itself, not into a
# copy edited at boot: the firmware measures the entry's load options into
# PCR 9, and attest verify --stick holds them to the stick's manifest.
append=()
[[ ${DEMO_PEERS:-} == mdns-only ]] || append=(--append-cmdline "phase.peers=http://$PEER_IP:$PORT")
step "disk image $DISK: local mode, EMPTY cache partition (everything comes from the peer) ${append[*]}"
"$PHASE" image --out "$DISK" --root "$KEYS/1.root.json" --init "$INIT" --arch x86_64 \
  --build-dir "$BUILD" --kernel-version "$RELEASE" --templates "$here/esp" \
  --modules-list "$here/kernel/modules-x86_64.list" --default-mode local ${append[@]+"${append[@]}"}

step "test LAN: network namespace $NS, bridge br0 $PEER_IP/24 + IPv6 link-local, DHCP (busybox udhcpd)"
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add br0 type bridge
ip -n "$NS" link set br0 up
ip -n "$NS" addr add "$PEER_IP/24" dev br0
ip -n "$NS" tuntap add dev tap0 mode tap
ip -n "$NS" link set tap0 master br0
ip -n "$NS" link set tap0 up
cat >"$WORK/udhcpd.conf" <<EOF
start 198.18.0.100
end 198.18.0.150
interface br0
lease_file $WORK/udhcpd.leases
pidfile $WORK/udhcpd.pid
option subnet 255.255.255.0
option lease 600
EOF
: >"$WORK/udhcpd.leases"
ip netns exec "$NS" busybox udhcpd -f "$WORK/udhcpd.conf" >"$WORK/udhcpd.log" 2>&1 &
dhcp_pid=$!

step "peer: phase serve --mdns over $REPO on [::]:$PORT in $NS"
mkdir -p "$WORK/peer-cache"
ip netns exec "$NS" "$PHASE" serve --repo "$REPO" --cache "$WORK/peer-cache" \
  --listen "[::]:$PORT" --mdns >"$WORK/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do
  grep -q 'listening on' "$WORK/serve.log" 2>/dev/null && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$WORK/serve.log" >&2; die "phase serve exited"; }
  sleep 0.1
done
grep -q 'listening on' "$WORK/serve.log" || die "phase serve did not start within 10 s"
sed 's/^/    /' "$WORK/serve.log"

step "boot under QEMU/OVMF (TCG) with a TPM on tap0: discover -> verify + fetch -> kexec -> overlay root -> plasmd"
# Run by test-qemu-x86.sh --then once the greeting is on the console, while
# the VM still runs: the node's address from its console, then its verdict.
attest_node() {
  local addr deadline rc
  addr=$(sed 's/\r//g' "$TEST_QEMU_LOG" | grep -a '^net: phase-node-' | tail -n 1 |
    grep -o '198\.18\.[0-9]*\.[0-9]*/' | head -n 1) || true
  addr=${addr%/}
  [[ -n $addr ]] || { echo "demo-peer: the console shows no IPv4 address of the node (net: line)" >&2; return 1; }
  printf '\n== boot demo [%3ds]: attest: phase attest verify --peer http://%s:%s (the node quotes with its TPM)\n' \
    $(($(date +%s) - demo_start)) "$addr" "$PORT"
  # Only a connection that fails is retried, for ATTEST_TIMEOUT seconds (the
  # node's peer service starts after the greeting); any answer is the verdict.
  deadline=$(($(date +%s) + ATTEST_TIMEOUT))
  while :; do
    rc=0
    ip netns exec "$NS" "$PHASE" attest verify --root "$KEYS/1.root.json" --peer "http://$addr:$PORT" \
      --stick "$DISK.manifest.json" --ak-store "$WORK/attest-aks.json" \
      >"$WORK/verdict.txt" 2>"$WORK/attest.err" || rc=$?
    ((rc == 0)) && break
    grep -q 'attest?nonce=[0-9a-f]* failed' "$WORK/attest.err" || break
    (($(date +%s) < deadline)) || break
    sleep 3
  done
  cat "$WORK/verdict.txt"
  if ((rc != 0)); then
    cat "$WORK/attest.err" >&2
    echo "demo-peer: phase attest verify of the node at $addr failed (status $rc)" >&2
    return "$rc"
  fi
  attest_timings "$addr"
}
# DEMO_ATTEST_RUNS=N (make bench-attest): N more verifies of the node, each
# timed (ms, wall clock), and N bare GET /attest of a quote for the anchor,
# into $WORK/attest-ms.txt as "verify MS" and "quote MS" lines. One second
# apart: the node's rate limit allows 4 quotes at once, then 1 per second.
attest_timings() {
  local addr=$1 i t nonce
  : >"$WORK/attest-ms.txt"
  for ((i = 0; i < ${DEMO_ATTEST_RUNS:-0}; i++)); do
    sleep 1
    t=$(date +%s%N)
    ip netns exec "$NS" "$PHASE" attest verify --root "$KEYS/1.root.json" --peer "http://$addr:$PORT" \
      --stick "$DISK.manifest.json" --ak-store "$WORK/attest-aks.json" >/dev/null 2>"$WORK/attest.err" ||
      { cat "$WORK/attest.err" >&2; echo "demo-peer: timed attest verify $i failed" >&2; return 1; }
    echo "verify $((($(date +%s%N) - t) / 1000000))" >>"$WORK/attest-ms.txt"
    sleep 1
    nonce=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    t=$(date +%s%N)
    ip netns exec "$NS" curl -sSf -o /dev/null "http://$addr:$PORT/attest?nonce=$nonce" ||
      { echo "demo-peer: timed GET /attest $i failed" >&2; return 1; }
    echo "quote $((($(date +%s%N) - t) / 1000000))" >>"$WORK/attest-ms.txt"
  done
}
export -f attest_node attest_timings
export demo_start PHASE NS KEYS DISK WORK PORT ATTEST_TIMEOUT DEMO_ATTEST_RUNS
"$here/scripts/test-qemu-x86.sh" --image "$DISK" ${SECURE_BOOT_FLAG[@]+"${SECURE_BOOT_FLAG[@]}"} --tpm \
  --netns "$NS" --tap tap0 --timeout "$TIMEOUT" --stream \
  --expect "$GREETING" --log "$WORK/serial.log" --then attest_node | tee "$WORK/test-qemu-x86.out"

step "the VM ran the verified WASM job and attested its boot; it is stopped, deleting $NS"
echo "== boot demo: done in $((SECONDS - t0)) s (serial log: $WORK/serial.log)"
grep -a '^test-qemu-x86: firmware ' "$WORK/test-qemu-x86.out"
# Stage 1's view of the firmware: Secure Boot state and kernel lockdown.
sed 's/\r//g' "$WORK/serial.log" | grep -a 'platform ok' | head -n 1 | sed 's/^\[[^]]*\] *//; s/  */ /g'
grep -aF "$GREETING" "$WORK/serial.log" | head -n 1 | tr -d '\r'
cat "$WORK/verdict.txt"
