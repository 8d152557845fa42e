"""Write a TUF repository with python-tuf (the reference implementation):
keys of one type (Ed25519 by default, ECDSA P-256 or RSA-PSS 3072 as
securesystemslib generates them), consistent snapshots, one delegated role,
and a root rotated to version 2 with a new root key. Prints a JSON manifest
of the targets.

usage: make_python_repo.py OUTDIR [ed25519|ecdsa|rsa]
"""
import hashlib
import json
import os
import sys
from datetime import datetime, timedelta, timezone

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

out = sys.argv[1]
keytype = sys.argv[2] if len(sys.argv) > 2 else "ed25519"
generate = {
    "ed25519": CryptoSigner.generate_ed25519,
    "ecdsa": CryptoSigner.generate_ecdsa,
    "rsa": CryptoSigner.generate_rsa,
}[keytype]
meta_dir = os.path.join(out, "metadata")
tgt_dir = os.path.join(out, "targets")
os.makedirs(meta_dir, exist_ok=True)
os.makedirs(tgt_dir, exist_ok=True)
expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)
ser = JSONSerializer(compact=False)

signers = {r: generate() for r in ("root", "timestamp", "snapshot", "targets", "team")}

root = Metadata(Root(expires=expires, consistent_snapshot=True))
for role in ("root", "timestamp", "snapshot", "targets"):
    root.signed.add_key(signers[role].public_key, role)
root.sign(signers["root"])
root.to_file(os.path.join(meta_dir, "1.root.json"), ser)

# Rotate root: v2 with a new root key, signed by old and new root keys.
new_root_signer = generate()
root.signed.revoke_key(signers["root"].public_key.keyid, "root")
root.signed.add_key(new_root_signer.public_key, "root")
root.signed.version = 2
root.signatures.clear()
root.sign(signers["root"], append=True)
root.sign(new_root_signer, append=True)
root.to_file(os.path.join(meta_dir, "2.root.json"), ser)
root.to_file(os.path.join(meta_dir, "root.json"), ser)

manifest = {}


def add_target(md, path, data, custom=None):
    tf = TargetFile.from_data(path, data, ["sha256"])
    if custom is not None:
        tf.unrecognized_fields["custom"] = custom
    md.signed.targets[path] = tf
    digest = hashlib.sha256(data).hexdigest()
    d, _, base = path.rpartition("/")
    dest = os.path.join(tgt_dir, d, f"{digest}.{base}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "wb") as f:
        f.write(data)
    manifest[path] = {"sha256": digest, "length": len(data)}


targets = Metadata(Targets(expires=expires))
add_target(targets, "file1.txt", b"hello from python-tuf\n")
# Phase's signed custom metadata (docs/trust.md "Chunk metadata") so that
# `phase fetch` can take the kernel; 64 KiB chunks.
kernel = os.urandom(100_000)
CHUNK = 65536
add_target(
    targets,
    "stable/x86_64/kernel",
    kernel,
    {
        "kind": "kernel",
        "version": "1",
        "chunks": {
            "size": CHUNK,
            "sha256": [
                hashlib.sha256(kernel[i : i + CHUNK]).hexdigest()
                for i in range(0, len(kernel), CHUNK)
            ],
        },
    },
)
team_key = signers["team"].public_key
targets.signed.delegations = Delegations(
    keys={team_key.keyid: team_key},
    roles={"team": DelegatedRole("team", [team_key.keyid], 1, True, paths=["team/*"])},
)
targets.sign(signers["targets"])
targets.to_file(os.path.join(meta_dir, "1.targets.json"), ser)

team = Metadata(Targets(expires=expires))
add_target(team, "team/file2.txt", b"delegated file\n")
team.sign(signers["team"])
team.to_file(os.path.join(meta_dir, "1.team.json"), ser)

snapshot = Metadata(Snapshot(expires=expires))
snapshot.signed.meta["targets.json"] = MetaFile(version=1)
snapshot.signed.meta["team.json"] = MetaFile(version=1)
snapshot.sign(signers["snapshot"])
snapshot.to_file(os.path.join(meta_dir, "1.snapshot.json"), ser)

timestamp = Metadata(Timestamp(expires=expires))
timestamp.signed.snapshot_meta = MetaFile(version=1)
timestamp.sign(signers["timestamp"])
timestamp.to_file(os.path.join(meta_dir, "timestamp.json"), ser)

print(json.dumps(manifest))
