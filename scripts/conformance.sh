#!/usr/bin/env bash
# conformance.sh: run the public TUF conformance suite (tuf-conformance)
# against `phase tuf-client` and require a clean result (see docs/trust.md).
#
#   scripts/conformance.sh PHASE_BIN VENV OUT_DIR
#
# The suite is read from $TUF_CONFORMANCE (default ../shared/vendor/
# tuf-conformance beside the repository) and is never copied into the
# project: a copy is made in a temporary directory, installed from there into
# VENV (its dependencies are pinned in scripts/requirements-test.txt, which
# `scripts/deps-check.sh --install` installs) and run from its installed
# location. The JSON report goes to OUT_DIR/report.json. Success means: 0
# failed, 0 errors, 0 xfailed, 0 xpassed, 0 skipped and more than 100 passed.
# Without the suite, one line says so and where to get it, and the script
# succeeds.
set -euo pipefail

(($# == 3)) || { echo "usage: $0 PHASE_BIN VENV OUT_DIR" >&2; exit 2; }
phase=$(realpath -m "$1") venv=$(realpath -m "$2") out=$(realpath -m "$3")
here=$(cd "$(dirname "$0")/.." && pwd)
suite=$(realpath -m "${TUF_CONFORMANCE:-$here/../shared/vendor/tuf-conformance}")
# The snapshot this project passes with (upstream commit).
tested_commit=eec841c186f81f2d9d8d30460c7e7deefa615f9e
upstream=https://github.com/theupdateframework/tuf-conformance

if [[ ! -f $suite/pyproject.toml || ! -d $suite/tuf_conformance ]]; then
  echo "conformance: TUF conformance suite not run: $suite is missing (get $upstream at commit $tested_commit, put it there or set TUF_CONFORMANCE=DIR)"
  exit 0
fi
[[ -x $phase ]] || { echo "conformance: $phase is not an executable (build it with make host)" >&2; exit 1; }
[[ -x $venv/bin/python ]] || { echo "conformance: no Python venv at $venv (run scripts/deps-check.sh --install)" >&2; exit 1; }
command -v faketime >/dev/null || { echo "conformance: faketime is missing (scripts/deps-check.sh --install installs it)" >&2; exit 1; }
commit=$(tr -d '[:space:]' <"$suite/UPSTREAM_COMMIT" 2>/dev/null || echo unknown)

export PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
py=$venv/bin/python
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Install (again) only when the suite's files changed: the stamp is a hash of
# every file of the snapshot.
stamp=$venv/.tuf-conformance
sum=$(cd "$suite" && find . -type f -not -path './.git/*' -print0 | LC_ALL=C sort -z |
  xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp ]] || [[ $(cat "$stamp") != "$sum" ]] || ! "$py" -c 'import tuf_conformance' 2>/dev/null; then
  echo "conformance: installing tuf-conformance $commit into $venv"
  # pip builds in the source tree; the snapshot stays untouched.
  cp -r "$suite" "$tmp/src"
  chmod -R u+w "$tmp/src"
  "$py" -m pip install -q --no-deps "$tmp/src"
  rm -rf "$tmp/src"
  echo "$sum" >"$stamp"
fi
# The suite's own pins (tuf, securesystemslib, pytest, pytest-json-report)
# must be what the venv holds: requirements-test.txt pins the same versions.
if ! "$py" -m pip check >"$tmp/pip-check" 2>&1; then
  echo "conformance: the venv does not satisfy the suite's requirements:" >&2
  cat "$tmp/pip-check" >&2
  exit 1
fi

pkg=$("$py" -c 'import os, tuf_conformance; print(os.path.dirname(tuf_conformance.__file__))')
mkdir -p "$out"
report=$out/report.json
rm -f "$report"
start=$(date +%s)
status=0
# Run from an empty directory: pytest writes nothing next to the suite.
(cd "$tmp" && "$py" -m pytest -p no:cacheprovider -q --tb=short -rfEsxX "$pkg" \
  --entrypoint "$phase tuf-client" \
  --json-report --json-report-file="$report" --json-report-omit log streams) || status=$?
secs=$(($(date +%s) - start))

[[ -f $report ]] || { echo "conformance: pytest wrote no report (exit $status)" >&2; exit 1; }
"$py" - "$report" "$status" "$secs" "$commit" <<'EOF'
import json, sys
report, status, secs, commit = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = json.load(open(report))["summary"]
n = {k: s.get(k, 0) for k in ("passed", "failed", "error", "xfailed", "xpassed", "skipped")}
bad = {k: v for k, v in n.items() if k != "passed" and v}
print(f"conformance: {n['passed']} passed, {n['failed']} failed, {n['error']} errors, "
      f"{n['xfailed']} xfailed, {n['xpassed']} xpassed, {n['skipped']} skipped "
      f"(tuf-conformance {commit[:12]}, {secs}s)")
if bad or n["passed"] <= 100 or status != 0:
    why = ", ".join(f"{v} {k}" for k, v in bad.items()) or f"pytest exit {status}"
    if n["passed"] <= 100:
        why += f"; only {n['passed']} passed (expected more than 100)"
    print(f"conformance: FAILED: {why} (report: {report})", file=sys.stderr)
    sys.exit(1)
EOF
