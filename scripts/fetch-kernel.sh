#!/usr/bin/env bash
# fetch-kernel.sh: get Debian's boot kernel without installing it.
#
#   scripts/fetch-kernel.sh --build DIR [--arch x86_64] [--version RELEASE]
#
# Resolves linux-image-<flavour> (apt's candidate, from the local package
# lists) to its versioned package linux-image-<release>; when
# DIR/kernel/<release>/ is not there yet, downloads both packages with
# `apt-get download` and unpacks the versioned one with `dpkg-deb -x` into
# DIR/kernel/<release>/ (one directory per release, side by side). Writes the
# release to DIR/kernel/current. The same logic as image::kernel::acquire.
set -euo pipefail

build= arch=x86_64 version=
while (($#)); do
  case $1 in
    --build) build=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    *) echo "fetch-kernel.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $build ]] || { echo "fetch-kernel.sh: --build DIR is required" >&2; exit 2; }
case $arch in
  x86_64|amd64) flavour=amd64 ;;
  arm64) echo "fetch-kernel.sh: ARCH=arm64 is not supported yet (only x86_64)" >&2; exit 1 ;;
  *) echo "fetch-kernel.sh: unknown architecture $arch" >&2; exit 1 ;;
esac

meta=linux-image-$flavour
if [[ -z $version ]]; then
  depends=$(apt-cache show --no-all-versions "$meta" | sed -n 's/^Depends: //p' | head -1)
  pkg=$(tr ',|' '\n\n' <<<"$depends" | awk '{print $1}' | grep -m1 '^linux-image-' || true)
  [[ -n $pkg ]] || { echo "fetch-kernel.sh: $meta depends on no linux-image-* package (run apt-get update?)" >&2; exit 1; }
  version=${pkg#linux-image-}
else
  pkg=linux-image-$version
fi

cache=$build/kernel
dest=$cache/$version
if [[ ! -d $dest ]]; then
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/.download-XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "fetch-kernel.sh: downloading $pkg with apt-get"
  (cd "$work" && apt-get download -q "$pkg")
  dpkg-deb -x "$work/${pkg}_"*.deb "$work/root"
  [[ -f $work/root/boot/vmlinuz-$version ]] || { echo "fetch-kernel.sh: $pkg has no boot/vmlinuz-$version" >&2; exit 1; }
  mv "$work/root" "$dest"
fi
# Rewrite only on change: the Makefile keys rebuilds on its mtime.
[[ $(cat "$cache/current" 2>/dev/null) == "$version" ]] || echo "$version" >"$cache/current"
echo "kernel $version in $dest"
