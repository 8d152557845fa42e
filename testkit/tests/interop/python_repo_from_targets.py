"""Re-sign a repository that `phase publish` wrote as a NEW repository
written by python-tuf (the reference implementation), with fresh keys of one
type (ECDSA P-256 by default, as securesystemslib generates them).

The target entries (length, hashes, and Phase's signed `custom` metadata:
kind, version, chunk list, cmdline) are taken from phase's current targets
metadata, after python-tuf has checked phase's signatures on the chain
timestamp -> snapshot -> targets with phase's newest root. The target files
are hard-linked (copied across file systems) into OUT/targets/ under their
consistent names `<dir>/<sha256>.<name>`, the layout `phase serve --repo`
serves. Writes OUT/metadata/{1.root,root,1.targets,1.snapshot,timestamp}.json
(consistent snapshots, everything valid for 30 days).

Prints a JSON summary: the key type and scheme of every key in the new root,
its root role's key ids, and the target paths.

usage: python_repo_from_targets.py PHASE_REPO OUT [ecdsa|ed25519|rsa]
"""
import json
import os
import shutil
import sys
from datetime import datetime, timedelta, timezone

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer


def fail(msg):
    print(f"python_repo_from_targets.py: {msg}", file=sys.stderr)
    sys.exit(1)


if len(sys.argv) not in (3, 4):
    fail("usage: python_repo_from_targets.py PHASE_REPO OUT [ecdsa|ed25519|rsa]")
src, out = sys.argv[1], sys.argv[2]
keytype = sys.argv[3] if len(sys.argv) == 4 else "ecdsa"
generators = {
    "ecdsa": CryptoSigner.generate_ecdsa,
    "ed25519": CryptoSigner.generate_ed25519,
    "rsa": CryptoSigner.generate_rsa,
}
if keytype not in generators:
    fail(f"unknown key type {keytype!r} (ecdsa, ed25519 or rsa)")
src_meta = os.path.join(src, "metadata")


def verify(role, md):
    phase_root.signed.verify_delegate(role, md.signed_bytes, md.signatures)


# Phase's chain, checked by python-tuf with phase's newest root.
try:
    phase_root = Metadata[Root].from_file(os.path.join(src_meta, "root.json"))
    ts = Metadata[Timestamp].from_file(os.path.join(src_meta, "timestamp.json"))
    verify("timestamp", ts)
    snap_file = f"{ts.signed.snapshot_meta.version}.snapshot.json"
    snap = Metadata[Snapshot].from_file(os.path.join(src_meta, snap_file))
    verify("snapshot", snap)
    tmeta = snap.signed.meta.get("targets.json")
    if tmeta is None:
        fail(f"{snap_file} lists no targets.json")
    targets_file = f"{tmeta.version}.targets.json"
    phase_targets = Metadata[Targets].from_file(os.path.join(src_meta, targets_file))
    verify("targets", phase_targets)
except Exception as e:  # one line naming what was wrong
    fail(f"{src}: phase's metadata does not verify with python-tuf: {type(e).__name__}: {e}")
if phase_targets.signed.delegations is not None:
    fail(f"{targets_file} has delegations; only top-level targets are re-signed")
if not phase_targets.signed.targets:
    fail(f"{targets_file} lists no targets")

meta_dir = os.path.join(out, "metadata")
tgt_dir = os.path.join(out, "targets")
os.makedirs(meta_dir, exist_ok=True)
os.makedirs(tgt_dir, exist_ok=True)
expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)
ser = JSONSerializer(compact=False)
signers = {r: generators[keytype]() for r in ("root", "timestamp", "snapshot", "targets")}

root = Metadata(Root(expires=expires, consistent_snapshot=True))
for role, signer in signers.items():
    root.signed.add_key(signer.public_key, role)
root.sign(signers["root"])
root.to_file(os.path.join(meta_dir, "1.root.json"), ser)
root.to_file(os.path.join(meta_dir, "root.json"), ser)

targets = Metadata(Targets(expires=expires))
for path, tf in phase_targets.signed.targets.items():
    # The same entry: length, hashes and custom, unchanged.
    targets.signed.targets[path] = tf
    digest = tf.hashes.get("sha256")
    if digest is None:
        fail(f"target {path}: no sha256 hash in {targets_file}")
    d, _, base = path.rpartition("/")
    name = os.path.join(d, f"{digest}.{base}") if d else f"{digest}.{base}"
    have = os.path.join(src, "targets", name)
    if not os.path.isfile(have):
        fail(f"target {path}: {have} is missing")
    dest = os.path.join(tgt_dir, name)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    try:
        os.link(have, dest)
    except OSError:
        shutil.copyfile(have, dest)
    if os.path.getsize(dest) != tf.length:
        fail(f"target {path}: {have} has {os.path.getsize(dest)} bytes, metadata says {tf.length}")
targets.sign(signers["targets"])
targets.to_file(os.path.join(meta_dir, "1.targets.json"), ser)

snapshot = Metadata(Snapshot(expires=expires))
snapshot.signed.meta["targets.json"] = MetaFile(version=1)
snapshot.sign(signers["snapshot"])
snapshot.to_file(os.path.join(meta_dir, "1.snapshot.json"), ser)

timestamp = Metadata(Timestamp(expires=expires))
timestamp.signed.snapshot_meta = MetaFile(version=1)
timestamp.sign(signers["timestamp"])
timestamp.to_file(os.path.join(meta_dir, "timestamp.json"), ser)

print(
    json.dumps(
        {
            "keys": [
                {"keytype": k.keytype, "scheme": k.scheme}
                for k in root.signed.keys.values()
            ],
            "root_keyids": root.signed.roles["root"].keyids,
            "targets": sorted(targets.signed.targets),
        }
    )
)
