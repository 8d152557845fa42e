#!/bin/bash
# The trust round trip on a generated demo repository (owner: trust):
# keygen (once) -> publish generated demo artifacts -> verify -> tuf-client
# download from the repository served by a plain web server on 127.0.0.1.
# usage: scripts/demo-trust.sh PHASE_BIN BUILD_DIR
set -euo pipefail
PHASE=${1:?usage: demo-trust.sh PHASE_BIN BUILD_DIR}
BUILD=${2:?usage: demo-trust.sh PHASE_BIN BUILD_DIR}
KEYS=$BUILD/demo-keys
REPO=$BUILD/demo-trust-repo
ART=$BUILD/demo-artifacts
CLIENT=$BUILD/demo-client

step() { printf '\n== trust round trip: %s\n' "$*"; }

echo "== This is the TRUST ROUND TRIP (keygen -> publish -> verify -> tuf-client download)"
echo "== on a GENERATED demo repository: the artifacts are generated demo bytes, not a bootable system."

if [ -f "$KEYS/1.root.json" ]; then
  step "keys: reusing $KEYS (root $KEYS/1.root.json)"
else
  step "keygen into $KEYS"
  "$PHASE" keygen --out "$KEYS"
fi

step "generate demo artifacts in $ART"
mkdir -p "$ART"
head -c $((9 * 1024 * 1024)) /dev/urandom > "$ART/vmlinuz"
head -c $((1024 * 1024)) /dev/urandom > "$ART/initramfs.img"
head -c $((6 * 1024 * 1024)) /dev/urandom > "$ART/rootfs.squashfs"
printf '\0asm demo job\n' > "$ART/hello.wasm"

step "publish into $REPO"
"$PHASE" publish --repo "$REPO" --keys "$KEYS" --channel stable --arch x86_64 \
  --kernel "$ART/vmlinuz" --initramfs "$ART/initramfs.img" --rootfs "$ART/rootfs.squashfs" \
  --job "$ART/hello.wasm" --cmdline "console=ttyS0 phase.channel=stable" --release-version "demo-$(date -u +%Y%m%d%H%M%S)"

step "verify $REPO against $KEYS/1.root.json"
"$PHASE" verify --repo "$REPO" --root "$KEYS/1.root.json" --channel stable --arch x86_64

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step "serve $REPO with python3 -m http.server on 127.0.0.1:$port"
python3 -m http.server --bind 127.0.0.1 --directory "$REPO" "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/metadata/timestamp.json')" 2>/dev/null && break
  sleep 0.1
done

step "tuf-client init + download over HTTP into $CLIENT"
rm -rf "$CLIENT"
"$PHASE" tuf-client --metadata-dir "$CLIENT/metadata" init "$KEYS/1.root.json"
"$PHASE" tuf-client --metadata-dir "$CLIENT/metadata" --metadata-url "http://127.0.0.1:$port/metadata" \
  --target-name stable/x86_64/kernel --target-name stable/x86_64/initramfs \
  --target-name stable/x86_64/rootfs --target-name jobs/hello.wasm \
  --target-base-url "http://127.0.0.1:$port/targets" --target-dir "$CLIENT/targets" download
cmp "$ART/vmlinuz" "$CLIENT/targets/stable%2Fx86_64%2Fkernel"
cmp "$ART/rootfs.squashfs" "$CLIENT/targets/stable%2Fx86_64%2Frootfs"
ls -l "$CLIENT/targets"
echo
echo "== trust round trip OK: published, verified, and downloaded through the TUF client over HTTP."
