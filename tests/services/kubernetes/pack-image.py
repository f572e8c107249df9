#!/usr/bin/env python3
"""Pack a root filesystem directory as a one-layer image tar in the `docker save`
layout (manifest.json + image config JSON + an uncompressed layer tar), which
`ctr images import` loads: images for the test cluster without any registry.

Usage: pack-image.py --rootfs DIR --tag NAME:TAG [--tag NAME:TAG]... --out FILE.tar
                     [--env K=V]... [--entrypoint JSON-LIST] [--cmd JSON-LIST]
                     [--workdir DIR] [--user UID[:GID]] [--label K=V]...

The layer is made by GNU tar (numeric owners, sorted names, no /dev /proc /sys
contents: the runtime mounts those), so equal trees give equal layers.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_list(text, flag):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        sys.exit(f"pack-image: {flag} must be a JSON list of strings: {e}")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        sys.exit(f"pack-image: {flag} must be a JSON list of strings")
    return value


def pairs(items, flag):
    out = {}
    for item in items:
        if "=" not in item or item.startswith("="):
            sys.exit(f"pack-image: {flag} wants K=V, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rootfs", required=True)
    p.add_argument("--tag", action="append", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--label", action="append", default=[])
    p.add_argument("--entrypoint")
    p.add_argument("--cmd")
    p.add_argument("--workdir", default="/")
    p.add_argument("--user")
    a = p.parse_args()

    if not os.path.isdir(a.rootfs):
        sys.exit(f"pack-image: --rootfs {a.rootfs} is not a directory")
    for full in a.tag:
        name, _, tag = full.rpartition(":")
        if not name or not tag or "/" in tag:
            sys.exit(f"pack-image: --tag must be NAME:TAG, got {full!r}")

    out_dir = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".pack-") as work:
        layer = os.path.join(work, "layer.tar")
        subprocess.run(
            [
                "tar", "--create", "--file", layer, "--format=gnu", "--sort=name",
                "--numeric-owner", "--xattrs", "--xattrs-include=security.capability",
                "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
                "-C", a.rootfs, ".",
            ],
            check=True,
        )
        diff_id = sha256_file(layer)

        config = {"Env": [f"{k}={v}" for k, v in pairs(a.env, "--env").items()],
                  "WorkingDir": a.workdir}
        if a.entrypoint is not None:
            config["Entrypoint"] = json_list(a.entrypoint, "--entrypoint")
        if a.cmd is not None:
            config["Cmd"] = json_list(a.cmd, "--cmd")
        if a.user:
            config["User"] = a.user
        labels = pairs(a.label, "--label")
        if labels:
            config["Labels"] = labels
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created": "1970-01-01T00:00:00Z",
                         "created_by": "muster tests/services/kubernetes/pack-image.py"}],
        }
        config_bytes = json.dumps(image_config, sort_keys=True, separators=(",", ":")).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        manifest = [{"Config": config_name, "RepoTags": a.tag,
                     "Layers": [f"{diff_id}/layer.tar"]}]
        with open(os.path.join(work, config_name), "wb") as f:
            f.write(config_bytes)
        with open(os.path.join(work, "manifest.json"), "w") as f:
            json.dump(manifest, f)

        tmp_out = os.path.join(work, "image.tar")
        with tarfile.open(tmp_out, "w", format=tarfile.GNU_FORMAT) as t:
            for arcname, path in (("manifest.json", os.path.join(work, "manifest.json")),
                                  (config_name, os.path.join(work, config_name)),
                                  (f"{diff_id}/layer.tar", layer)):
                info = t.gettarinfo(path, arcname)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                with open(path, "rb") as f:
                    t.addfile(info, f)
        os.replace(tmp_out, a.out)
    print(" ".join(a.tag), a.out)


if __name__ == "__main__":
    main()
