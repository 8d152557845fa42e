#!/usr/bin/env bash
# build-rootfs.sh: the Phase Boot target root filesystem (owner: target).
#
#   scripts/build-rootfs.sh PHASE_BIN PLASMD_BIN OUT.squashfs
#
# A squashfs made without root (mksquashfs -all-root) from a directory:
#   /bin              static busybox and its applets (symlinks)
#   /usr/bin/phase    the peer service (`phase serve --mdns` re-shares /phase)
#   /usr/bin/plasmd   the WASM job daemon
#   /lib*, /usr/lib*  the shared libraries those two need, found with ldd,
#                     and the dynamic loader (the host release binaries are
#                     glibc-dynamic; copying them is cheaper than a second
#                     musl build of wasmtime: see docs/target.md)
#   /etc              hostname, passwd, group, hosts, resolv.conf (empty),
#                     phase/services.toml (what phase-init supervises), phase/net.sh,
#                     phase/plasmd.toml (plasmd's config: the demo job at start-up, cache /phase)
#   /var/lib/phase    the peer service's cache view: /phase/cas and /phase/tuf
#                     bind-mounted on cas/ and tuf/ by the cache-view service
# The payload stage 1 hands over (/phase, read-only) holds only verified
# bytes; the node serves exactly those.
set -euo pipefail
usage="usage: build-rootfs.sh PHASE_BIN PLASMD_BIN OUT.squashfs"
PHASE=${1:?$usage}
PLASMD=${2:?$usage}
OUT=${3:?$usage}
die() {
  echo "build-rootfs: $*" >&2
  exit 1
}
for f in "$PHASE" "$PLASMD"; do
  [[ -x $f ]] || die "$f is not an executable (build it: make host plasmd)"
done
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || die "$BUSYBOX is missing (apt-get install busybox-static)"
! ldd "$BUSYBOX" >/dev/null 2>&1 || die "$BUSYBOX is not static (apt-get install busybox-static)"
command -v mksquashfs >/dev/null || die "mksquashfs is missing (apt-get install squashfs-tools)"
command -v ldd >/dev/null || die "ldd is missing (libc-bin)"

mkdir -p "$(dirname "$OUT")"
work=$(mktemp -d "$(dirname "$OUT")/.rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/phase,proc,sys,dev,run,tmp,root,var/lib/phase,var/lib/plasmd,usr/share/udhcpc}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"

# busybox and its applets (a symlink per applet, never over a real file).
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [[ $applet == busybox ]] && continue
  [[ -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
done
ln -sf ../bin/busybox "$root/sbin/init"

# The two Rust binaries and every library they load, at the paths ldd
# resolves (the loader's own path included), so the binaries run unchanged.
install -m 0755 "$PHASE" "$root/usr/bin/phase"
install -m 0755 "$PLASMD" "$root/usr/bin/plasmd"
libs=$(for b in "$PHASE" "$PLASMD"; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
done | sort -u)
[[ -n $libs ]] || die "ldd found no libraries for $PHASE (a static binary needs none: fine, but unexpected)"
for lib in $libs; do
  [[ -f $lib ]] || die "ldd names $lib, which does not exist"
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

# A minimal /etc.
echo phase-node >"$root/etc/hostname"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
: >"$root/etc/resolv.conf" # placeholder: a node needs no name server to boot or re-share
printf 'hosts: files\n' >"$root/etc/nsswitch.conf"

# The view of the payload for `phase serve --cache` (it keeps its peer key
# beside the cache, on the overlay; /phase itself is read-only). Bind mounts,
# not symbolic links: the server never follows a link inside a cache.
mkdir -p "$root/var/lib/phase/cas" "$root/var/lib/phase/tuf"

# Network: links up, a DHCPv4 lease if a server answers (bounded), IPv6
# link-local always; a host name unique per NIC.
cat >"$root/usr/share/udhcpc/default.script" <<'SH'
#!/bin/sh
# udhcpc's hook: apply the lease (busybox ip).
case "$1" in
  deconfig) ip -4 addr flush dev "$interface" ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    ;;
esac
exit 0
SH
chmod 0755 "$root/usr/share/udhcpc/default.script"
cat >"$root/etc/phase/net.sh" <<'SH'
#!/bin/sh
# Links up, DHCPv4 (at most ~6 s), IPv6 link-local; the host name gets the
# first NIC's MAC suffix so a fleet's nodes tell themselves apart.
ip link set lo up
name=$(cat /etc/hostname)
for dev in /sys/class/net/*; do
  i=${dev##*/}
  [ "$i" = lo ] && continue
  ip link set "$i" up
  [ "$name" = "$(cat /etc/hostname)" ] && name="$name-$(tr -d : <"$dev/address" | tail -c 7)"
  udhcpc -i "$i" -n -q -t 3 -T 2 -s /usr/share/udhcpc/default.script >/dev/null 2>&1 || true
done
hostname "$name"
sleep 2 # IPv6 duplicate address detection of the link-local address
echo "net: $(hostname): $(ip -o addr show | awk '$2 != "lo" { printf "%s %s  ", $2, $4 }')"
SH
chmod 0755 "$root/etc/phase/net.sh"

# plasmd reads the verified payload read-only (/phase: the job is in its CAS,
# the trusted metadata in /phase/tuf) and keeps its own state in /var/lib/plasmd.
cat >"$root/etc/phase/plasmd.toml" <<'TOML'
state = "/var/lib/plasmd"
socket = "/run/plasmd/plasmd.sock"
cache = "/phase"
root = "/phase/tuf/root.json"
boot_json = "/phase/boot.json"
peers_from_boot = true
peers = []
jobs = ["hello"]
TOML

# What phase-init supervises in the target (exec mode, no systemd).
cat >"$root/etc/phase/services.toml" <<'TOML'
# The Phase Boot target's services (phase-init stage 2 supervises them).

[service.net]
command = "/bin/sh"
args = ["/etc/phase/net.sh"]
type = "oneshot"

# The peer service's cache view: the verified payload's store and metadata
# under /var/lib/phase (recursive bind mounts: the server follows no symbolic
# link, and on the direct route each object under /phase is a bind mount).
[service.cache-view]
command = "/bin/sh"
args = ["-c", "mount -o rbind /phase/cas /var/lib/phase/cas && mount -o rbind /phase/tuf /var/lib/phase/tuf"]
type = "oneshot"

# Re-share the verified payload: the next node boots from this one.
# Not in private mode: it listens and announces (docs/threat-model.md).
[service.peer]
command = "/usr/bin/phase"
args = ["serve", "--cache", "/var/lib/phase", "--listen", "[::]:7070", "--mdns"]
# Its lines on the console: an object the boot did not hash whole (a rootfs
# read through dm-verity) is hashed before it is re-shared, or withheld.
env = { RUST_LOG = "fetcher::server=info" }
after = ["net", "cache-view"]
restart = "on-failure"
backoff_ms = 2000
modes = ["internet", "local"]

# The WASM job daemon: runs the demo job, verified against the trusted
# metadata; `plasmd submit|status|logs` over /run/plasmd/plasmd.sock.
[service.plasmd]
command = "/usr/bin/plasmd"
args = ["daemon", "--config", "/etc/phase/plasmd.toml"]
after = ["net"]
restart = "on-failure"
backoff_ms = 2000
TOML

mksquashfs "$root" "$OUT.tmp" -all-root -noappend -quiet -no-progress
mv -f "$OUT.tmp" "$OUT"
echo "build-rootfs: $OUT ($(du -h "$OUT" | cut -f1); busybox, phase, plasmd, $(wc -w <<<"$libs") libraries)"
