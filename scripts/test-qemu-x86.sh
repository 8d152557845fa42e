#!/usr/bin/env bash
# test-qemu-x86.sh: boot a Phase Boot disk image under QEMU/OVMF (TCG) and
# judge the boot from the serial log.
#
#   scripts/test-qemu-x86.sh --image build/phase-boot-x86_64.img \
#       [--mode internet|local|private] [--append "phase.test=poweroff ..."] \
#       [--timeout SECONDS] [--expect STRING] [--log FILE] [--stream] \
#       [--netns NS --tap IFNAME [--mac MAC]] [--memory MIB] [--secure-boot] \
#       [--tpm] [--then COMMAND]
#
# Exit status 0 when STRING (default "phase-init: ready") appears on the
# serial console within the timeout; otherwise non-zero and the log's tail.
# --then: once STRING appeared, run COMMAND (`bash -c`, with the serial log's
# path in $TEST_QEMU_LOG) while the VM still runs; its exit status is the
# script's; then the VM is stopped.
# --mode / --append edit the ESP (loader.conf default entry, the entry's
# options line) of a temporary copy: a sparse raw copy for a raw image, a
# qcow2 overlay backed by the image for a qcow2. The image is never modified.
# --stream copies the serial console to the terminal as it arrives.
# --netns/--tap: one virtio NIC on the existing tap IFNAME inside network
# namespace NS (QEMU runs under `ip netns exec NS`); otherwise no NIC.
# --secure-boot: OVMF's Secure Boot build with the stock Microsoft keys
# enrolled (a fresh copy of OVMF_VARS_4M.ms.fd), SMM on, as a PC leaves the
# factory; otherwise OVMF without enrolled keys (Secure Boot off).
# --tpm: a TPM 2.0 on the TIS interface, a fresh swtpm whose state lives in
# the temporary directory.
# KVM is not used (-accel tcg): it does not work on the build machines.
set -euo pipefail

usage() {
  sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
  exit 2
}
die() {
  echo "test-qemu-x86: $*" >&2
  exit 2
}

image='' mode='' append='' timeout=120 expect='phase-init: ready' log='' stream=false
netns='' tap='' mac=52:54:00:12:34:56 memory=512 secure_boot=false tpm=false then=''
while (($#)); do
  case $1 in
    --image) image=${2:?--image needs a path}; shift 2 ;;
    --mode) mode=${2:?--mode needs internet, local or private}; shift 2 ;;
    --append) append=${2?--append needs a string}; shift 2 ;;
    --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
    --expect) expect=${2:?--expect needs a string}; shift 2 ;;
    --log) log=${2:?--log needs a path}; shift 2 ;;
    --stream) stream=true; shift ;;
    --netns) netns=${2:?--netns needs a namespace}; shift 2 ;;
    --tap) tap=${2:?--tap needs an interface name}; shift 2 ;;
    --mac) mac=${2:?--mac needs a MAC address}; shift 2 ;;
    --memory) memory=${2:?--memory needs MiB}; shift 2 ;;
    --secure-boot) secure_boot=true; shift ;;
    --tpm) tpm=true; shift ;;
    --then) then=${2:?--then needs a command}; shift 2 ;;
    -h | --help) usage ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ -n $image ]] || die "--image is required (see --help)"
[[ -f $image ]] || die "image $image does not exist (build it with: make image)"
[[ -z $mode || $mode =~ ^(internet|local|private)$ ]] || die "--mode $mode: expected internet, local or private"
[[ $timeout =~ ^[0-9]+$ ]] || die "--timeout $timeout: expected whole seconds"
[[ $memory =~ ^[0-9]+$ ]] || die "--memory $memory: expected MiB"
[[ -z $netns && -z $tap ]] || [[ -n $netns && -n $tap ]] || die "--netns and --tap go together"
nic=(-nic none) runner=()
if [[ -n $tap ]]; then
  ip netns exec "$netns" ip link show "$tap" >/dev/null 2>&1 || die "no interface $tap in network namespace $netns"
  nic=(-nic "tap,ifname=$tap,script=no,downscript=no,model=virtio-net-pci,mac=$mac")
  runner=(ip netns exec "$netns")
fi

ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
machine=(-machine q35)
if $secure_boot; then
  ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd
  ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.ms.fd
  machine=(-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on)
fi
tools=(qemu-system-x86_64 qemu-img sgdisk mtype mcopy)
$tpm && tools+=(swtpm)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/deps-check.sh --install)"
done
[[ -f $ovmf_code ]] || die "$ovmf_code is missing (Debian package ovmf)"
[[ -f $ovmf_vars ]] || die "$ovmf_vars is missing (Debian package ovmf)"
if $secure_boot; then
  echo "test-qemu-x86: firmware $ovmf_code, variables $ovmf_vars (Secure Boot on, Microsoft keys enrolled)"
else
  echo "test-qemu-x86: firmware $ovmf_code, variables $ovmf_vars (no keys enrolled: Secure Boot off)"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-qemu-x86.XXXXXX")
qemu_pid='' tail_pid='' swtpm_pid=''
cleanup() {
  local rc=$?
  [[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null || true
  [[ -n $tail_pid ]] && kill "$tail_pid" 2>/dev/null && wait "$tail_pid" 2>/dev/null || true
  [[ -n $swtpm_pid ]] && kill "$swtpm_pid" 2>/dev/null && wait "$swtpm_pid" 2>/dev/null || true
  rm -rf "$tmp"
  # The script's verdict, not the status of the processes stopped above.
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[[ -n $log ]] || log=$tmp/serial.log
: >"$log"

image=$(readlink -f "$image")
format=raw
[[ $(od -An -tx1 -N4 "$image" | tr -d ' \n') == 514649fb ]] && format=qcow2

disk=$image disk_format=$format snapshot=,snapshot=on
if [[ -n $mode || -n $append ]]; then
  raw=$tmp/disk.raw
  if [[ $format == raw ]]; then
    cp --sparse=always "$image" "$raw"
  else
    qemu-img convert -f qcow2 -O raw "$image" "$raw"
  fi
  first=$(sgdisk -i 1 "$raw" 2>/dev/null | sed -n 's/^First sector: \([0-9]*\).*/\1/p') || true
  [[ -n $first ]] || die "$image has no GPT partition 1 (the ESP)"
  esp="$raw@@$((first * 512))"
  export MTOOLS_SKIP_CHECK=1
  mtype -i "$esp" ::/loader/loader.conf | tr -d '\r' >"$tmp/loader.conf"
  if [[ -n $mode ]]; then
    { grep -v '^[[:space:]]*default[[:space:]]' "$tmp/loader.conf" || true; echo "default phase-$mode.conf"; } >"$tmp/loader.new"
    mcopy -o -i "$esp" "$tmp/loader.new" ::/loader/loader.conf
    entry=phase-$mode.conf
  else
    entry=$(awk '$1 == "default" { e = $2 } END { print e }' "$tmp/loader.conf")
    [[ -n $entry ]] || die "loader/loader.conf on $image names no default entry"
  fi
  if [[ -n $append ]]; then
    mtype -i "$esp" "::/loader/entries/$entry" 2>/dev/null | tr -d '\r' >"$tmp/entry.conf" ||
      die "$image has no loader/entries/$entry"
    awk -v extra="$append" '!done && $1 == "options" { $0 = $0 " " extra; done = 1 } { print } END { if (!done) print "options " extra }' \
      "$tmp/entry.conf" >"$tmp/entry.new"
    mcopy -o -i "$esp" "$tmp/entry.new" "::/loader/entries/$entry"
  fi
  snapshot=''
  if [[ $format == qcow2 ]]; then
    # Only the clusters that differ from the image go into the overlay.
    qemu-img convert -f raw -O qcow2 -B "$image" -F qcow2 "$raw" "$tmp/overlay.qcow2"
    rm -f "$raw"
    disk=$tmp/overlay.qcow2 disk_format=qcow2
  else
    disk=$raw disk_format=raw
  fi
fi

tpmdev=()
if $tpm; then
  # The control socket is a path, so QEMU reaches it from inside --netns too.
  mkdir "$tmp/tpm"
  swtpm socket --tpm2 --tpmstate "dir=$tmp/tpm" --ctrl "type=unixio,path=$tmp/swtpm.sock" \
    --flags startup-clear >"$tmp/swtpm.out" 2>&1 &
  swtpm_pid=$!
  for _ in $(seq 100); do
    [[ -S $tmp/swtpm.sock ]] && break
    kill -0 "$swtpm_pid" 2>/dev/null || { cat "$tmp/swtpm.out" >&2; die "swtpm exited"; }
    sleep 0.1
  done
  [[ -S $tmp/swtpm.sock ]] || die "swtpm did not create its socket within 10 s"
  tpmdev=(-chardev "socket,id=chrtpm,path=${tmp//,/,,}/swtpm.sock" -tpmdev emulator,id=tpm0,chardev=chrtpm
    -device tpm-tis,tpmdev=tpm0)
  echo "test-qemu-x86: TPM 2.0 (swtpm) on the TIS interface"
fi

cp "$ovmf_vars" "$tmp/OVMF_VARS.fd"
"${runner[@]}" qemu-system-x86_64 -accel tcg "${machine[@]}" -m "$memory" -smp 1 \
  -display none -monitor none "${nic[@]}" "${tpmdev[@]}" -no-reboot \
  -drive "if=pflash,format=raw,unit=0,readonly=on,file=$ovmf_code" \
  -drive "if=pflash,format=raw,unit=1,file=$tmp/OVMF_VARS.fd" \
  -drive "if=virtio,format=$disk_format,file=${disk//,/,,},cache=unsafe$snapshot" \
  -serial "file:$log" </dev/null >"$tmp/qemu.out" 2>&1 &
qemu_pid=$!
if $stream; then
  # Escape sequences from the firmware and systemd-boot's menu are dropped so
  # the terminal shows plain lines.
  tail --pid="$qemu_pid" -n +1 -F "$log" 2>/dev/null |
    sed -u -e 's/\x1b\[[0-9;?]*[ -/]*[@-~]//g' -e 's/\x1b[()][0-9A-Za-z]//g' -e 's/\r//g' &
  tail_pid=$!
fi

plain() { sed -e 's/\x1b\[[0-9;?]*[ -/]*[@-~]//g' -e 's/\x1b[()][0-9A-Za-z]//g' -e 's/\r//g' "$log"; }
start=$SECONDS
result=timeout
while ((SECONDS - start < timeout)); do
  if plain | grep -aqF -- "$expect"; then
    result=seen
    break
  fi
  if ! kill -0 "$qemu_pid" 2>/dev/null; then
    plain | grep -aqF -- "$expect" && result=seen || result=exited
    break
  fi
  sleep 0.5
done

if [[ $result == seen ]]; then
  echo "test-qemu-x86: ok: \"$expect\" after $((SECONDS - start)) s (log: $log)"
  plain | grep -aF -- "$expect" | head -n 1
  # Let a guest told to power off finish; otherwise stop QEMU now.
  if [[ $append == *phase.test=poweroff* ]]; then
    for _ in $(seq 20); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.5; done
  fi
  if [[ -n $then ]]; then
    # COMMAND's output is not interleaved with the console (the log keeps it).
    [[ -n $tail_pid ]] && kill "$tail_pid" 2>/dev/null && wait "$tail_pid" 2>/dev/null || true
    tail_pid=''
    echo "test-qemu-x86: the VM runs on; running: $then"
    rc=0
    TEST_QEMU_LOG=$log bash -c "$then" </dev/null || rc=$?
    echo "test-qemu-x86: the command exited with status $rc; stopping the VM"
    exit "$rc"
  fi
  exit 0
fi
case $result in
  timeout) echo "test-qemu-x86: FAIL: no \"$expect\" within $timeout s (log: $log)" >&2 ;;
  exited) echo "test-qemu-x86: FAIL: QEMU exited without \"$expect\" (log: $log)" >&2 ;;
esac
echo "--- last 40 lines of the serial log ---" >&2
plain | tail -n 40 >&2
if [[ -s $tmp/qemu.out ]]; then
  echo "--- QEMU output ---" >&2
  cat "$tmp/qemu.out" >&2
fi
exit 1
