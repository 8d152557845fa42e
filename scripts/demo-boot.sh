#!/usr/bin/env bash
# demo-boot.sh: the boot part of `make demo` (owner: lead).
#
# Publishes a target system (Debian's kernel, a target initramfs holding
# phase-init, a busybox squashfs rootfs whose service greets) with the demo
# keys, seeds a disk image's PHASE-CACHE partition with it, and boots that
# image under QEMU/OVMF with no network: systemd-boot -> phase-init verifies
# the cached artifacts against TUF -> kexec -> stage 2 mounts the squashfs
# under OverlayFS -> the greeting. The console streams to the terminal.
#
#   scripts/demo-boot.sh PHASE_BIN BUILD_DIR KERNEL_RELEASE INIT_BIN
set -euo pipefail
# DEMO_SECURE_BOOT=off boots with Secure Boot off; default: on, with the
# stock Microsoft keys, as a PC leaves the factory.
SECURE_BOOT_FLAG=(--secure-boot)
[[ ${DEMO_SECURE_BOOT:-on} == off ]] && SECURE_BOOT_FLAG=()
PHASE=${1:?usage: demo-boot.sh PHASE_BIN BUILD_DIR KERNEL_RELEASE INIT_BIN}
BUILD=${2:?usage}
RELEASE=${3:?usage}
INIT=${4:?usage}
here=$(cd "$(dirname "$0")/.." && pwd)
KEYS=$BUILD/demo-keys
WORK=$BUILD/demo-boot
KERNEL=$BUILD/kernel/$RELEASE/boot/vmlinuz-$RELEASE
DISK=$BUILD/phase-boot-demo.img
GREETING="Hello from the verified Phase Boot target"
DONE="== demo: the verified target ran its service; powering off"

step_start=$SECONDS
step() { printf '\n== boot demo [%3ds]: %s\n' $((SECONDS - step_start)) "$*"; }

[[ -f $KEYS/1.root.json ]] || "$PHASE" keygen --out "$KEYS"
rm -rf "$WORK" && mkdir -p "$WORK"
common=(--root "$KEYS/1.root.json" --init "$INIT" --arch x86_64 --build-dir "$BUILD"
  --kernel-version "$RELEASE" --templates "$here/esp" --modules-list "$here/kernel/modules-x86_64.list")

step "target initramfs (phase-init in its target role, the trusted root, modules)"
"$PHASE" image --out "$WORK/target-initramfs.img" "${common[@]}" --stage initramfs

step "target rootfs: a busybox squashfs whose service greets and prints its provenance"
root=$WORK/rootfs
mkdir -p "$root"/{bin,sbin,etc/phase,proc,sys,dev,run,tmp}
cp /bin/busybox "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
ln -s ../bin/busybox "$root/sbin/init"
cat >"$root/etc/phase/services.toml" <<TOML
[service.hello]
command = "/bin/sh"
args = ["-c", "echo; echo '$GREETING'; echo \"root filesystem: \$(busybox awk '\$2==\"/\"{print \$3}' /proc/mounts)\"; echo 'provenance (/phase/boot.json):'; busybox cat /phase/boot.json; echo; echo '$DONE'"]
type = "oneshot"

[service.stopper]
command = "/bin/busybox"
args = ["poweroff"]
after = ["hello"]
TOML
mksquashfs "$root" "$WORK/rootfs.squashfs" -all-root -noappend -quiet -no-progress

step "publish kernel, initramfs and rootfs into $WORK/repo (signed with $KEYS)"
"$PHASE" publish --repo "$WORK/repo" --keys "$KEYS" --channel stable --arch x86_64 \
  --kernel "$KERNEL" --initramfs "$WORK/target-initramfs.img" --rootfs "$WORK/rootfs.squashfs" \
  --cmdline "console=ttyS0,115200" --release-version "demo-$(date -u +%Y%m%d%H%M%S)"

step "disk image $DISK with the repository seeded into PHASE-CACHE"
"$PHASE" image --out "$DISK" "${common[@]}" --seed-repo "$WORK/repo" --channel stable --default-mode local

step "boot under QEMU/OVMF (TCG, no KVM, no network): verify -> kexec -> overlay root"
"$here/scripts/test-qemu-x86.sh" --image "$DISK" ${SECURE_BOOT_FLAG[@]+"${SECURE_BOOT_FLAG[@]}"} --timeout 400 --stream --expect "$DONE"
