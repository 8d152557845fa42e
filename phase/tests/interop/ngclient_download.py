"""Refresh and download targets with python-tuf's ngclient.Updater (the
reference client), trusting ROOT. Prints a JSON map target -> sha256 of the
downloaded file; exits non-zero on any failure.

usage: ngclient_download.py METADATA_URL TARGETS_URL ROOT WORKDIR TARGET...
"""
import hashlib
import json
import os
import sys

from tuf.ngclient import Updater

metadata_url, targets_url, root, workdir, *names = sys.argv[1:]
meta_dir = os.path.join(workdir, "metadata")
dl_dir = os.path.join(workdir, "downloads")
os.makedirs(meta_dir, exist_ok=True)
os.makedirs(dl_dir, exist_ok=True)
with open(root, "rb") as f:
    bootstrap = f.read()

updater = Updater(
    bootstrap=bootstrap,
    metadata_dir=meta_dir,
    metadata_base_url=metadata_url,
    target_base_url=targets_url,
    target_dir=dl_dir,
)
updater.refresh()
result = {}
for name in names:
    info = updater.get_targetinfo(name)
    if info is None:
        sys.exit(f"ngclient: target {name} not found")
    path = updater.download_target(info)
    with open(path, "rb") as f:
        result[name] = {"sha256": hashlib.sha256(f.read()).hexdigest(), "custom": info.custom}
print(json.dumps(result))
