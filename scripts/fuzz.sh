#!/usr/bin/env bash
# fuzz.sh: build and run the fuzz targets of fuzz/ on the stable toolchain
# (libFuzzer through libfuzzer-sys, coverage from rustc's sancov pass; see
# docs/fuzzing.md).
#
#   scripts/fuzz.sh build                      # instrumented build of every target
#   scripts/fuzz.sh run SECONDS [TARGET...]    # each target SECONDS, two at a time
#   scripts/fuzz.sh list                       # the targets
#
# Working corpora, crashes and logs go to $FUZZ_OUT (default build/fuzz);
# binaries to $FUZZ_TARGET_DIR (default target/fuzz). A crash ends `run`
# with status 1 after every target ran, naming the input file to reproduce
# with: <binary> <crash file>.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_OUT:-$here/build/fuzz}
target_dir=${FUZZ_TARGET_DIR:-$here/target/fuzz}
jobs=${FUZZ_JOBS:-2}
# The conformance suite's static repositories (real metadata made by
# tuf-on-ci and the sigstore root signing), when the shared snapshot is there.
tuf_static=${FUZZ_TUF_STATIC:-$here/../shared/vendor/tuf-conformance/tuf_conformance/static_data}

triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=$target_dir/$triple/release
manifest=$here/fuzz/Cargo.toml

targets() {
  sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | grep -v '^phase-fuzz$'
}

build() {
  # cargo-fuzz's flags without a sanitizer (none needs nightly): inline 8-bit
  # counters, the PC table and compare tracing for libFuzzer, `cfg(fuzzing)`.
  # --target keeps build scripts and proc macros uninstrumented.
  local flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
  flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
  flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
  flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
  local start=$SECONDS
  # Not a member of the root workspace, so `make lint` does not see it.
  cargo fmt --manifest-path "$manifest" --check
  RUSTFLAGS=$flags CARGO_TARGET_DIR=$target_dir \
    cargo build --manifest-path "$manifest" --locked --release --target "$triple" --bins
  echo "fuzz: built $(targets | wc -l) targets in $((SECONDS - start)) s"
}

# Seeds made at run time, into $out/seeds/<target>: the fixture repository of
# tuf_verify and the fixture key of keys_signatures (written by the targets
# themselves), and the conformance suite's static metadata for the metadata
# parsers.
seed() {
  local s=$out/seeds
  rm -rf "$s"
  mkdir -p "$s"/{tuf_verify,tuf_metadata,canonical_json}
  PHASE_FUZZ_WRITE_SEEDS=$s/tuf_verify "$bin_dir/tuf_verify" -runs=0 "$s/tuf_verify" \
    >"$out/logs/seed.log" 2>&1 || { cat "$out/logs/seed.log"; exit 1; }
  PHASE_FUZZ_WRITE_SEEDS=$s/keys_signatures "$bin_dir/keys_signatures" -runs=0 "$s/keys_signatures" \
    >>"$out/logs/seed.log" 2>&1 || { cat "$out/logs/seed.log"; exit 1; }
  for f in "$s"/tuf_verify/fixture-*; do
    tail -c +2 "$f" >"$s/tuf_metadata/${f##*/}"
  done
  if [[ -d $tuf_static ]]; then
    local n=0
    while IFS= read -r -d '' f; do
      n=$((n + 1))
      cp "$f" "$s/tuf_metadata/conformance-$n.json"
    done < <(find "$tuf_static" -name '*.json' -size -64k -print0 | sort -z)
    echo "fuzz: $n metadata seeds from $tuf_static"
  else
    echo "fuzz: no conformance suite at $tuf_static; metadata seeds from the fixture only"
  fi
  cp "$s"/tuf_metadata/* "$s/canonical_json/"
}

# One target for $1 seconds; prints one summary line, returns 1 on a crash.
run_one() {
  local t=$1 secs=$2
  local corpus=$out/corpus/$t crashes=$out/crashes/$t log=$out/logs/$t.log
  mkdir -p "$corpus" "$crashes"
  local dirs=("$corpus")
  [[ -d $here/fuzz/corpus/$t ]] && dirs+=("$here/fuzz/corpus/$t")
  [[ -d $out/seeds/$t ]] && dirs+=("$out/seeds/$t")
  local status=0
  "$bin_dir/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$crashes/" "${dirs[@]}" >"$log" 2>&1 || status=$?
  local runs cov
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -a -o 'cov: [0-9]*' "$log" | tail -1 || true)
  if ((status != 0)); then
    echo "fuzz: $t CRASHED after ${runs:-?} runs (status $status); log $log; inputs:"
    ls "$crashes"/* 2>/dev/null | sed 's/^/  /'
    grep -a -m1 -A1 -E 'panicked at|ERROR: libFuzzer' "$log" | sed 's/^/  /' || true
    return 1
  fi
  echo "fuzz: $t ok, ${runs:-?} runs in ${secs} s, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) files"
}

run() {
  local secs=$1
  shift
  local list=("$@")
  ((${#list[@]})) || mapfile -t list < <(targets)
  for t in "${list[@]}"; do
    [[ -x $bin_dir/$t ]] || { echo "fuzz: no binary $bin_dir/$t (run scripts/fuzz.sh build)"; exit 1; }
  done
  mkdir -p "$out/logs"
  seed
  local failed=() start=$SECONDS
  local -a pids=() names=()
  for t in "${list[@]}"; do
    run_one "$t" "$secs" &
    pids+=($!) names+=("$t")
    if ((${#pids[@]} >= jobs)); then
      wait "${pids[0]}" || failed+=("${names[0]}")
      pids=("${pids[@]:1}") names=("${names[@]:1}")
    fi
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed+=("${names[$i]}")
  done
  echo "fuzz: ${#list[@]} targets, ${secs} s each, $jobs at a time, $((SECONDS - start)) s in all"
  if ((${#failed[@]})); then
    echo "fuzz: crashes in: ${failed[*]} (inputs under $out/crashes/)"
    exit 1
  fi
}

case ${1:-} in
  build) build ;;
  run) shift; [[ ${1:-} =~ ^[0-9]+$ ]] || { echo "usage: $0 run SECONDS [TARGET...]"; exit 2; }; run "$@" ;;
  list) targets ;;
  *) echo "usage: $0 build | run SECONDS [TARGET...] | list"; exit 2 ;;
esac
