#!/usr/bin/env bash
# deps-check.sh: list what Phase Boot needs on this Debian machine and, with
# --install, install it (apt-get, cargo tools, a Python venv
# for interop tests). Idempotent: a second run installs nothing.
#
#   scripts/deps-check.sh            # report only, exit 1 if something is missing
#   scripts/deps-check.sh --install  # install what is missing
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$here/build}
install=false
[[ ${1:-} == --install ]] && install=true

# Debian packages: "package:command-or-file-that-proves-it".
apt_pkgs=(
  qemu-system-x86:/usr/bin/qemu-system-x86_64
  qemu-utils:/usr/bin/qemu-img
  ovmf:/usr/share/OVMF/OVMF_CODE_4M.fd
  systemd-boot-efi:/usr/lib/systemd/boot/efi/systemd-bootx64.efi
  busybox-static:/bin/busybox
  mtools:/usr/bin/mcopy
  dosfstools:/usr/sbin/fsck.vfat
  e2fsprogs:/usr/sbin/mke2fs
  squashfs-tools:/usr/bin/mksquashfs
  gdisk:/usr/sbin/sgdisk
  cpio:/usr/bin/cpio
  zstd:/usr/bin/zstd
  iproute2:/usr/sbin/ip
  nftables:/usr/sbin/nft
  nginx:/usr/sbin/nginx
  dpkg-dev:/usr/bin/dpkg-architecture
)
# Extra lines from later issues go in scripts/deps-apt.list ("pkg:path" per line).
if [[ -f $here/scripts/deps-apt.list ]]; then
  while read -r line; do
    [[ -z $line || $line == \#* ]] && continue
    apt_pkgs+=("$line")
  done <"$here/scripts/deps-apt.list"
fi

# Cargo tools, "crate@version" (installed with --locked into $tools, a cache
# outside the clone, so a machine builds each once: `make lint` runs
# cargo-deny from there).
tools=${PHASE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/phase-boot/tools}
cargo_tools=(cargo-deny@0.20.2)
missing_tools=()
for t in "${cargo_tools[@]}"; do
  name=${t%@*} version=${t#*@}
  [[ $("$tools/bin/$name" --version 2>/dev/null) == "$name $version" ]] || missing_tools+=("$t")
done

missing_apt=()
for entry in "${apt_pkgs[@]}"; do
  pkg=${entry%%:*} path=${entry#*:}
  [[ -e $path ]] || missing_apt+=("$pkg")
done

venv=$build/venv
reqs=$here/scripts/requirements-test.txt
venv_stamp=$venv/.phase-reqs
venv_ok=false
if [[ -x $venv/bin/python && -f $venv_stamp ]] && cmp -s "$reqs" "$venv_stamp"; then
  venv_ok=true
fi

if ! $install; then
  status=0
  ((${#missing_apt[@]})) && { echo "missing Debian packages: ${missing_apt[*]}"; status=1; }
  ((${#missing_tools[@]})) && { echo "missing cargo tools in $tools: ${missing_tools[*]}"; status=1; }
  $venv_ok || { echo "missing Python venv with $(basename "$reqs") at $venv"; status=1; }
  ((status == 0)) && echo "deps-check: everything is installed"
  exit $status
fi

if ((${#missing_apt[@]})); then
  echo "deps-check: installing ${missing_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # QEMU: a machine may carry the backported qemu-utils, which conflicts with
  # bookworm's qemu-system; take qemu from the same suite as qemu-utils.
  # The backports suite comes through an apt configuration of our own, laid
  # out as image::deb::AptConfig lays out the build's: its own source list
  # (the machine's sources plus backports), package lists and cache, so the
  # machine's apt sources and state stay as they are.
  if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    aptdir=${XDG_CACHE_HOME:-$HOME/.cache}/phase-boot/apt-${codename}-backports
    rm -rf "$aptdir/sources.list.d"
    mkdir -p "$aptdir/sources.list.d" "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
    if [[ -f /etc/apt/sources.list ]]; then cp /etc/apt/sources.list "$aptdir/sources.list"; else : >"$aptdir/sources.list"; fi
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
      [[ -f $f ]] && cp "$f" "$aptdir/sources.list.d/"
    done
    if ! grep -rqs "${codename}-backports" "$aptdir/sources.list" "$aptdir/sources.list.d/"; then
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$codename" >"$aptdir/sources.list.d/phase-${codename}-backports.sources"
    fi
    apt_bpo=(apt-get -o "Dir::Etc::SourceList=$aptdir/sources.list" -o "Dir::Etc::SourceParts=$aptdir/sources.list.d"
      -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir/cache")
    "${apt_bpo[@]}" update -q
    "${apt_bpo[@]}" install -y -q --no-install-recommends -t "${codename}-backports" qemu-system-x86 qemu-utils
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing_apt[@]}"
fi

for t in "${missing_tools[@]}"; do
  echo "deps-check: building $t into $tools (once per machine)"
  # --debug: the tools only read Cargo.lock and manifests, so their speed
  # does not matter, and a debug build compiles in a third of the CPU time.
  cargo install --debug --locked --root "$tools" "$t"
done

if ! $venv_ok; then
  echo "deps-check: creating Python venv $venv"
  mkdir -p "$build"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs"
  cp "$reqs" "$venv_stamp"
fi
echo "deps-check: everything is installed"
