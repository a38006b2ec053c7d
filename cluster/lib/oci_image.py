#!/usr/bin/env python3
"""Write a one-layer OCI image archive from local files, for `ctr images import` (no registry, no Docker).

    oci_image.py --name localhost/shardscore-cluster/pause:1 --out pause.tar \
        --file /path/to/pause:/pause --entrypoint /pause [--user 65535:65535]

The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...). containerd's importer
(core/images/archive/importer.go, ImportIndex) names the image from the index's `io.containerd.image.name`
annotation; `org.opencontainers.image.ref.name` carries the tag as the OCI spec asks. The layer is an uncompressed
tar with fixed owners and times, so the same files always give the same image digest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tarfile


def layer_tar(files: list[tuple[str, str]]) -> bytes:
    """A tar of (source path, path in image) pairs, with their parent folders, owned by root, mtime 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        made: set[str] = set()
        for src, dest in files:
            parts = dest.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                folder = "/".join(parts[:i])
                if folder not in made:
                    info = tarfile.TarInfo(folder + "/")
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    tar.addfile(info)
                    made.add(folder)
            info = tarfile.TarInfo(dest.strip("/"))
            info.size = os.path.getsize(src)
            info.mode = 0o755 if os.access(src, os.X_OK) else 0o644
            info.mtime = 0
            with open(src, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def blob(out: tarfile.TarFile, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":", 1)[1])
    info.size, info.mtime = len(data), 0
    out.addfile(info, io.BytesIO(data))
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="full image reference, e.g. localhost/x/pause:1")
    parser.add_argument("--out", required=True, help="archive to write")
    parser.add_argument("--file", action="append", required=True, metavar="SRC:DEST", help="file to put in the image")
    parser.add_argument("--entrypoint", nargs="+", required=True)
    parser.add_argument("--user", default="")
    args = parser.parse_args()

    files = [tuple(spec.split(":", 1)) for spec in args.file]
    layer = layer_tar(files)  # type: ignore[arg-type]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": args.entrypoint, "User": args.user, "WorkingDir": "/",
                   "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [{"created_by": "cluster/lib/oci_image.py"}],
    }
    tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
    tmp = args.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_digest = blob(out, config_bytes)
        layer_digest = blob(out, layer)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                        "size": len(layer)}],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        manifest_digest = blob(out, manifest_bytes)
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                "size": len(manifest_bytes), "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": args.name, "org.opencontainers.image.ref.name": tag},
            }],
        }
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                           ("index.json", json.dumps(index, sort_keys=True).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            out.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)
    print(manifest_digest)


if __name__ == "__main__":
    main()
