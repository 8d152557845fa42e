#!/usr/bin/env bash
# bench-fetch.sh PHASE BUILD DOC: the data-plane benchmark, on loopback,
# for one 1 GiB object (size: BENCH_FETCH_MIB; runs: BENCH_RUNS, 5 by default, since
# on a shared machine the runs spread and the table shows by how much):
#   (a) nginx -> curl > /dev/null            the anchor: a plain download
#   (b) nginx -> curl | sha256sum            download + a hash tool
#   (c) phase serve -> phase fetch           verified fetch into a CAS
#   (d) nginx -> phase fetch                 nginx as a mirror
#   (e) 3 x phase serve -> phase fetch       three peers at once
#   (f) nginx -> curl -o FILE                a plain download into a file
#   (g) 3 x nginx -> aria2c -x3 --checksum   a verifying multi-source tool
# Medians of the runs, ratios against the anchors, and the peak RSS of
# phase fetch (GNU time). Client caches live on /dev/shm (tmpfs), so the
# figures compare network + verification + CAS work, not this VM's disk.
# Writes the section between <!-- fetch:begin --> and <!-- fetch:end --> of DOC.
set -euo pipefail
phase=$(realpath "$1"); build=$(realpath -m "$2"); doc=$3
mib=${BENCH_FETCH_MIB:-1024}
runs=${BENCH_RUNS:-5}
work=$build/bench-fetch
shm=$(mktemp -d /dev/shm/phase-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$shm"
}
trap cleanup EXIT
mkdir -p "$work"

# --- the release: one rootfs object of $mib MiB --------------------------------
if [[ ! -f $work/repo/metadata/timestamp.json || ! -f $work/rootfs.$mib ]]; then
  rm -rf "$work/repo" "$work/keys" "$work"/rootfs.*
  head -c $((mib << 20)) /dev/urandom >"$work/rootfs.$mib"
  "$phase" keygen --out "$work/keys" >/dev/null
  "$phase" publish --repo "$work/repo" --keys "$work/keys" --rootfs "$work/rootfs.$mib" --expires 3650d >/dev/null
fi
rel=targets/$(cd "$work/repo/targets" && ls stable/x86_64/*.rootfs)
root=$work/keys/1.root.json

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# --- nginx on loopback ------------------------------------------------------------
ngx=$work/nginx; mkdir -p "$ngx"
nport=$(free_port); nport2=$(free_port); nport3=$(free_port)
cat >"$ngx/nginx.conf" <<CONF
worker_processes 2;
user root;
pid $ngx/nginx.pid;
error_log $ngx/error.log warn;
daemon off;
events { worker_connections 256; }
http {
  access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path $ngx/body; proxy_temp_path $ngx/proxy; fastcgi_temp_path $ngx/fcgi;
  uwsgi_temp_path $ngx/uwsgi; scgi_temp_path $ngx/scgi;
  server {
    listen 127.0.0.1:$nport; listen 127.0.0.1:$nport2; listen 127.0.0.1:$nport3;
    location /repo/ { alias $work/repo/; }
  }
}
CONF
/usr/sbin/nginx -e "$ngx/error.log" -c "$ngx/nginx.conf" & pids+=($!)
for p in "$nport" "$nport2" "$nport3"; do wait_port "$p"; done
nurl=http://127.0.0.1:$nport/repo/
nurls=("$nurl" "http://127.0.0.1:$nport2/repo/" "http://127.0.0.1:$nport3/repo/")

# --- phase serve x3 -----------------------------------------------------------------
purls=()
for i in 1 2 3; do
  p=$(free_port)
  "$phase" serve --cache "$work/srv$i" --repo "$work/repo" --listen 127.0.0.1:$p >/dev/null & pids+=($!)
  [[ $i == 1 ]] && serve1=$!
  wait_port "$p"
  purls+=("http://127.0.0.1:$p")
done

# Warm the page cache with the object; aria2c checks the same SHA-256 the
# signed targets metadata names (the object's CAS name).
obj_sha=$(sha256sum "$work/repo/$rel" | cut -d' ' -f1)

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
declare -A secs
rss_kib=0
timed() { # name cmd...
  local name=$1; shift
  local t0 t1
  t0=$(now); "$@"; t1=$(now)
  echo "$t1 - $t0" | bc -l >>"$shm/$name.times"
}
fetch_into() { # cache peers...
  local cache=$1; shift
  local args=()
  for p in "$@"; do args+=(--peer "$p"); done
  /usr/bin/time -f '%M %U %S' -o "$shm/rss" "$phase" fetch --quiet --root "$root" --cache "$cache" "${args[@]}" --target stable/x86_64/rootfs >"$shm/fetch.out"
  local r u sy; read -r r u sy <<<"$(tail -1 "$shm/rss")"
  (( r > rss_kib )) && rss_kib=$r
  # CPU seconds of the fetch process (user, sys), to see where time goes.
  echo "$u $sy" >>"$shm/cpu.$(basename "$cache")"
  return 0
}
# CPU seconds (user + sys) a process has used so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f\n", ($14 + $15) / hz}' "/proc/$1/stat"; }
# Memory first: in a VM whose balloon hands free memory back to the host,
# the first write into such memory costs a host fault per page. Here
# `curl -o FILE` of the object took 0.71-0.79 s into memory freed a moment
# before and 3.2-4.0 s after 3 GiB of other files had been written, almost
# all of it system time. So before each writing case a 1 GiB file of zeros
# is written to tmpfs and removed (outside the clock), and the case writes
# into the pages just freed; each case's output is removed after it.
fresh_memory() {
  dd if=/dev/zero of="$shm/warm" bs=4M count=$(((mib + 64) / 4)) status=none
  rm -f "$shm/warm"
}
for run in $(seq "$runs"); do
  timed a /usr/bin/time -f '%U %S' -a -o "$shm/cpu.a" curl -sf -o /dev/null "$nurl$rel"
  timed b bash -c "curl -sf '$nurl$rel' | sha256sum >/dev/null"
  fresh_memory
  s0=$(cpu_of "$serve1")
  timed c fetch_into "$shm/c" "${purls[0]}"
  echo "$(cpu_of "$serve1") - $s0" | bc -l >>"$shm/serve.cpu"
  rm -rf "$shm/c"
  fresh_memory
  timed d fetch_into "$shm/d" "$nurl"
  rm -rf "$shm/d"
  fresh_memory
  timed e fetch_into "$shm/e" "${purls[@]}"
  rm -rf "$shm/e"
  fresh_memory
  timed f curl -sf -o "$shm/f.obj" "$nurl$rel"
  rm -f "$shm/f.obj"
  fresh_memory
  timed g aria2c --quiet=true -x3 -s3 -k1M --file-allocation=none --allow-overwrite=true \
    --checksum=sha-256="$obj_sha" -d "$shm" -o g.obj "${nurls[0]}$rel" "${nurls[1]}$rel" "${nurls[2]}$rel"
  rm -f "$shm/g.obj"
done
rm -rf "$shm/c" "$shm/d" "$shm/e" "$shm/f.obj" "$shm/g.obj"
hash_line=$(cd "$(dirname "$0")/.." && ${CARGO:-cargo} run -q --release -p fetcher --example hash_speed 2>/dev/null || echo "sha256 speed: not measured")
coreutils_s=$( { /usr/bin/time -f '%e' sha256sum "$work/repo/$rel" >/dev/null; } 2>&1 | tail -1)

row() { # name label
  local m; m=$(median <"$shm/$1.times")
  local mibs; mibs=$(echo "$mib / $m" | bc -l)
  local lo hi; lo=$(sort -g "$shm/$1.times" | head -1); hi=$(sort -g "$shm/$1.times" | tail -1)
  printf '| %s | %s | %.3f | %.3f-%.3f | %.0f |\n' "$1" "$2" "$m" "$lo" "$hi" "$mibs"
  secs[$1]=$m
}
{
  echo "<!-- fetch:begin -->"
  echo "## Data plane: fetch"
  echo
  echo "One $mib MiB object on loopback, median of $runs runs, measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))."
  echo "Client caches on tmpfs; \`phase fetch\` times include its TUF refresh. \`make bench\` rewrites this section."
  echo "Load average when the runs ended: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared; figures move with it)."
  echo
  echo "| case | what | seconds (median) | fastest-slowest | MiB/s |"
  echo "|---|---|---|---|---|"
  row a "nginx -> curl > /dev/null"
  row b "nginx -> curl \\| sha256sum"
  row c "phase serve -> phase fetch (CAS)"
  row d "nginx -> phase fetch (mirror)"
  row e "3 x phase serve -> phase fetch"
  row f "nginx -> curl -o FILE (tmpfs)"
  row g "3 x nginx -> aria2c -x3 --checksum=sha-256"
  echo
  ratio() { echo "${secs[$1]} / ${secs[$2]}" | bc -l; }
  printf 'Throughput of `phase fetch` (c) against the anchors:\n\n'
  printf '| against | ratio | target |\n|---|---|---|\n'
  printf '| (f) curl -o FILE, no verification | %.2f | >= 0.8 |\n' "$(ratio f c)"
  printf '| (g) aria2c, three sources, SHA-256 checked | %.2f | >= 2 |\n' "$(ratio g c)"
  printf '| (b) curl \\| sha256sum | %.2f | >= 4 |\n' "$(ratio b c)"
  printf '| (a) curl > /dev/null, no file, no verification | %.2f | |\n' "$(ratio a c)"
  echo
  printf 'Mirror and peers: (d)/(a) = %.2f, (e)/(a) = %.2f; (e)/(g) = %.2f (three sources each).\n' \
    "$(ratio a d)" "$(ratio a e)" "$(ratio g e)"
  echo
  echo "Peak RSS of \`phase fetch\` over all runs: $((rss_kib / 1024)) MiB (object: $mib MiB)."
  echo
  cpu_u=$(cut -d' ' -f1 "$shm/cpu.c" | median); cpu_s=$(cut -d' ' -f2 "$shm/cpu.c" | median)
  cpu_srv=$(median <"$shm/serve.cpu")
  cpu_a=$(awk '{print $1 + $2}' "$shm/cpu.a" | median)
  printf 'CPU of `phase fetch` in (c), median: %.2f s user + %.2f s sys for %.2f s wall (%.0f %% of all cores); the `phase serve` it fetched from: %.2f s.\n' \
    "$cpu_u" "$cpu_s" "${secs[c]}" "$(echo "100 * ($cpu_u + $cpu_s) / ${secs[c]} / $(nproc)" | bc -l)" "$cpu_srv"
  printf 'CPU of curl in (a), median: %.2f s (user + sys).\n' "$cpu_a"
  echo
  echo "Hashing: \`$hash_line\`; coreutils \`sha256sum\` of the object: ${coreutils_s} s."
  echo
  echo "Where the CPU goes on 2 cores: docs/fetcher.md, \"Known limits\"."
  echo "<!-- fetch:end -->"
} >"$shm/section.md"
cat "$shm/section.md"
mkdir -p "$(dirname "$doc")"
[[ -f $doc ]] || printf '# Benchmarks\n\nEach area of `make bench` writes its own section between markers.\n\n' >"$doc"
python3 - "$doc" "$shm/section.md" <<'PY'
import sys, re
doc, sec = sys.argv[1], open(sys.argv[2]).read().strip() + "\n"
s = open(doc).read()
pat = re.compile(r"<!-- fetch:begin -->.*?<!-- fetch:end -->\n?", re.S)
s = pat.sub(lambda m: sec, s) if pat.search(s) else s.rstrip("\n") + "\n\n" + sec
open(doc, "w").write(s)
PY
