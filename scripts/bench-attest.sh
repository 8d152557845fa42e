#!/usr/bin/env bash
# bench-attest.sh: what one `phase attest verify` of a booted node costs
# (owner: lead). See docs/benchmarks.md "Attestation".
#
#   scripts/bench-attest.sh PHASE_BIN BUILD_DIR KERNEL_RELEASE INIT_BIN DOC
#
# Boots the demo node (scripts/demo-peer.sh: Secure Boot, swtpm, the demo
# release from a peer in a test namespace) and, while it runs, times
# BENCH_ATTEST_RUNS (5) verifies from the LAN: fresh nonce, the node's TPM
# quote (swtpm, under TCG), its event logs, and on the host the signature,
# both replays, the stick's PCR 9 and the TUF refresh from the node. The
# anchor, in the same run: a bare GET /attest of a quote over a fresh nonce
# (curl), which is the node's share. Rewrites the section between
# <!-- attest:begin --> and <!-- attest:end --> of DOC.
set -euo pipefail
PHASE=${1:?usage: bench-attest.sh PHASE_BIN BUILD_DIR KERNEL_RELEASE INIT_BIN DOC}
BUILD=${2:?usage}
RELEASE=${3:?usage}
INIT=${4:?usage}
DOC=${5:?usage}
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${BENCH_ATTEST_RUNS:-5}
[[ $runs =~ ^[0-9]+$ && $runs -ge 1 && $runs -le 50 ]] ||
  { echo "bench-attest: BENCH_ATTEST_RUNS=$runs: expected 1 to 50" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench-attest: needs curl" >&2; exit 1; }

DEMO_ATTEST_RUNS=$runs "$here/scripts/demo-peer.sh" "$PHASE" "$BUILD" "$RELEASE" "$INIT" >"$BUILD/bench-attest.log" 2>&1 ||
  { tail -n 40 "$BUILD/bench-attest.log" >&2; echo "bench-attest: the demo boot failed (log: $BUILD/bench-attest.log)" >&2; exit 1; }

python3 - "$BUILD/demo-peer/attest-ms.txt" "$runs" "$DOC" <<'PYEOF'
import os, statistics, subprocess, sys, time
path, runs, doc = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ms = {'verify': [], 'quote': []}
for line in open(path):
    kind, v = line.split()
    ms[kind].append(int(v))
if len(ms['verify']) != runs or len(ms['quote']) != runs:
    sys.exit(f"bench-attest: {path} has {len(ms['verify'])} verify and {len(ms['quote'])} quote times, expected {runs} each")
verify, quote = statistics.median(ms['verify']), statistics.median(ms['quote'])
load = ' '.join(open('/proc/loadavg').read().split()[:3])
when = time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())
cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), 'unknown CPU')
text = f"""<!-- attest:begin -->
## Attestation

`make bench-attest` (scripts/bench-attest.sh), measured {when} on {os.cpu_count()} shared cores ({cpu}).
The demo node (Secure Boot, swtpm, QEMU TCG) booted from a peer; from its LAN, {runs} runs each, one second
apart (the node allows 4 quotes at once, then 1 per second). Load average when the runs ended: {load}.

| what | median (ms) | runs (ms) |
|---|---|---|
| `phase attest verify --peer --stick`: fresh nonce, the node's quote, both event-log replays, PCR 9 against the stick, TUF refreshed from the node | {verify:.0f} | {', '.join(map(str, ms['verify']))} |
| anchor: `curl` GET /attest (the node's quote alone) | {quote:.0f} | {', '.join(map(str, ms['quote']))} |
| verify / anchor | {verify / quote:.2f} | |

Measuring at boot (stage 1's `measure` step, the events into PCR 23) is in "Boot", (p).
<!-- attest:end -->
"""
old = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n"
if '<!-- attest:begin -->' in old:
    a = old.index('<!-- attest:begin -->'); b = old.index('<!-- attest:end -->') + len('<!-- attest:end -->\n')
    new = old[:a] + text + old[b:]
else:
    new = old.rstrip('\n') + '\n\n' + text
open(doc, 'w').write(new)
print(text)
PYEOF
