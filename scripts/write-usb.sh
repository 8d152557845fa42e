#!/usr/bin/env bash
# write-usb.sh: write a Phase Boot disk image to a USB stick.
#
#   scripts/write-usb.sh --image build/phase-boot-x86_64.img --device /dev/sdX \
#       [--yes] [--force] [--dry-run]
#
# Refuses: a device that is not a whole-disk block device, a device (or any of
# its partitions) that is mounted or used as swap, the disk holding /, a disk
# smaller than the image, a qcow2 image (write the raw .img), and a disk that
# is not removable (/sys/block/<dev>/removable = 0) unless --force.
# Asks you to type the device name unless --yes. --dry-run runs every check
# and says what it would write, without writing.
set -euo pipefail

usage() {
  sed -n '2,13s/^# \{0,1\}//p' "$0"
  exit 2
}
refuse() {
  echo "write-usb: refusing: $*" >&2
  exit 1
}

image='' device='' yes=false force=false dry_run=false
while (($#)); do
  case $1 in
    --image) image=${2:?--image needs a path}; shift 2 ;;
    --device) device=${2:?--device needs a path such as /dev/sdX}; shift 2 ;;
    --yes) yes=true; shift ;;
    --force) force=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h | --help) usage ;;
    *) echo "write-usb: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n $image && -n $device ]] || { echo "write-usb: --image and --device are required (see --help)" >&2; exit 2; }

# The image.
[[ -f $image ]] || refuse "image $image does not exist (build it with: make image)"
[[ -r $image ]] || refuse "image $image is not readable"
if [[ $(od -An -tx1 -N4 "$image" | tr -d ' \n') == 514649fb ]]; then
  refuse "$image is a qcow2 image; write the raw .img (or: qemu-img convert -O raw $image out.img)"
fi
image_bytes=$(stat -c %s "$image")

# The device: a whole disk, not a partition.
[[ -e $device ]] || refuse "$device does not exist"
[[ -b $device ]] || refuse "$device is not a block device"
dev=$(readlink -f "$device")
name=$(basename "$dev")
sys=/sys/class/block/$name
[[ -d $sys ]] || refuse "$device: no $sys (not a kernel block device?)"
if [[ -e $sys/partition ]]; then
  refuse "$device is a partition; give the whole disk (/dev/$(basename "$(readlink -f "$sys/..")"))"
fi

# Every block device this disk holds: itself, its partitions, anything
# stacked on them (dm-crypt, LVM, md), as /dev paths and their numbers.
members() {
  lsblk -nrpo NAME "$dev" 2>/dev/null
}
mapfile -t held < <(members)
((${#held[@]})) || held=("$dev")

# The disk holding /: refuse before anything else, loudly.
root_src=$(findmnt -nvo SOURCE / 2>/dev/null || true)
if [[ -n $root_src && -b $root_src ]]; then
  root_dev=$(readlink -f "$root_src")
  for m in "${held[@]}"; do
    [[ $(readlink -f "$m") == "$root_dev" ]] && refuse "$device holds / (the running system is on $root_src)"
  done
fi

# Mounted anywhere, or swap.
mounted=()
for m in "${held[@]}"; do
  while read -r target; do
    [[ -n $target ]] && mounted+=("$m on $target")
  done < <(findmnt -nro TARGET -S "$m" 2>/dev/null || true)
  if grep -q "^$(readlink -f "$m") " /proc/swaps 2>/dev/null; then
    mounted+=("$m as swap")
  fi
done
((${#mounted[@]} == 0)) || refuse "$device is in use: ${mounted[*]} (unmount it first)"

# Removable.
removable=$(cat "$sys/removable" 2>/dev/null || echo 0)
transport=$(lsblk -dno TRAN "$dev" 2>/dev/null | tr -d ' ' || true)
model=$(lsblk -dno MODEL "$dev" 2>/dev/null | sed 's/ *$//' || true)
if [[ $removable != 1 ]] && ! $force; then
  refuse "$device is not a removable disk (removable=$removable${transport:+, transport $transport}); pass --force if you are sure"
fi

# Size.
dev_bytes=$(($(cat "$sys/size") * 512))
((dev_bytes >= image_bytes)) ||
  refuse "$device is too small: $dev_bytes bytes for an image of $image_bytes bytes"

summary="$image ($image_bytes bytes) -> $device (${model:-unknown model}, $dev_bytes bytes${transport:+, $transport})"
if $dry_run; then
  echo "write-usb: dry run: checks passed; would write $summary"
  exit 0
fi

if ! $yes; then
  (exec </dev/tty) 2>/dev/null || refuse "no terminal to confirm on; pass --yes to write without asking"
  exec 3</dev/tty
  echo "write-usb: about to ERASE $device and write $summary"
  printf 'Type %s to continue: ' "$name"
  read -r answer <&3 || answer=''
  [[ $answer == "$name" ]] || refuse "not confirmed (typed '${answer}', expected '$name')"
fi

echo "write-usb: writing $summary"
dd if="$image" of="$dev" bs=4M conv=fsync oflag=direct status=progress
sync
echo "write-usb: done; $device can be removed"
