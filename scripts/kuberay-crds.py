#!/usr/bin/env python3
"""Put the CRDs of the KubeRay release the chart targets into <tools-dir>/kuberay-crds (`make test` calls it).

    python3 scripts/kuberay-crds.py [tools-dir]        (default: .tools)

The release and its checksums are pinned in cluster/versions.env (KUBERAY_RELEASE ...). The CRDs are the
operator module's config/crd/bases, taken from, in this order:
  1. SHARDSCORE_KUBERAY_ARCHIVE: an unmodified `git archive` (tar.gz, prefix ray-operator/) of the release's
     ray-operator/ folder, checked against KUBERAY_RELEASE_ARCHIVE_SHA256;
  2. the Go module proxy (the first URL of GOPROXY, else proxy.golang.org): the module's zip, checked against
     KUBERAY_RELEASE_H1, the Go checksum database's hash of it (golang.org/x/mod/sumdb/dirhash Hash1).
Nothing is written unless the check passes. Idempotent: CRDs already there for the pinned release are kept; with
SHARDSCORE_CRD_DIR set (the tests read the CRDs there) it does nothing. Exits 1 with one message that says what to
set when neither source gives them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE = "github.com/ray-project/kuberay/ray-operator"
BASES = "config/crd/bases/"
KINDS = ("rayclusters", "rayjobs", "raycronjobs", "rayservices")


def pins() -> dict[str, str]:
    """KEY=VALUE lines of cluster/versions.env (comments and blank lines aside)."""
    found = {}
    for line in (ROOT / "cluster" / "versions.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            found[key.strip()] = value.strip().strip('"')
    return found


def from_archive(path: str, sha256: str) -> dict[str, bytes]:
    data = Path(path).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise SystemExit(f"kuberay-crds: SHARDSCORE_KUBERAY_ARCHIVE={path} has sha256 {actual}, not the pinned "
                         f"{sha256} (cluster/versions.env): not the release's archive. Nothing was written.")
    prefix = "ray-operator/" + BASES
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name[len(prefix):]: tar.extractfile(m).read() for m in tar.getmembers()
                if m.isfile() and m.name.startswith(prefix) and m.name.endswith(".yaml")}


def hash1(archive: zipfile.ZipFile) -> str:
    """The Go checksum database's hash of a module zip: SHA-256 over the sorted lines "<sha256 hex>  <name>\\n"
    of its files (golang.org/x/mod/sumdb/dirhash Hash1)."""
    names = sorted(n for n in archive.namelist() if not n.endswith("/"))
    lines = "".join(f"{hashlib.sha256(archive.read(n)).hexdigest()}  {n}\n" for n in names)
    return "h1:" + base64.b64encode(hashlib.sha256(lines.encode()).digest()).decode()


def from_proxy(version: str, h1: str) -> dict[str, bytes]:
    proxy = next((p for p in os.environ.get("GOPROXY", "").split(",") if p.startswith("http")),
                 "https://proxy.golang.org")
    url = f"{proxy.rstrip('/')}/{MODULE}/@v/{version}.zip"
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - the module proxy's https URL
        data = response.read()
    archive = zipfile.ZipFile(io.BytesIO(data))
    actual = hash1(archive)
    if actual != h1:
        raise SystemExit(f"kuberay-crds: {url} hashes to {actual}, not the pinned {h1} (cluster/versions.env). "
                         "Nothing was written.")
    prefix = f"{MODULE}@{version}/{BASES}"
    return {n[len(prefix):]: archive.read(n) for n in archive.namelist()
            if n.startswith(prefix) and n.endswith(".yaml")}


def main() -> None:
    if os.environ.get("SHARDSCORE_CRD_DIR"):
        return
    tools = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / ".tools")
    p = pins()
    version = p["KUBERAY_RELEASE"]
    dest = tools / "kuberay-crds"
    if (dest / "RELEASE").is_file() and (dest / "RELEASE").read_text().strip() == version:
        return
    archive = os.environ.get("SHARDSCORE_KUBERAY_ARCHIVE")
    if archive:
        crds = from_archive(archive, p["KUBERAY_RELEASE_ARCHIVE_SHA256"])
        source = archive
    else:
        try:
            crds = from_proxy(version, p["KUBERAY_RELEASE_H1"])
        except (urllib.error.URLError, OSError) as exc:
            raise SystemExit(
                f"kuberay-crds: the KubeRay {version} CRDs the chart tests need could not be fetched: the Go module "
                f"proxy did not serve {MODULE}@{version} ({exc}). Set SHARDSCORE_KUBERAY_ARCHIVE to an unmodified "
                f"`git archive --prefix=ray-operator/` tar.gz of ray-operator/ at the tag ray-operator/{version} "
                f"(sha256 {p['KUBERAY_RELEASE_ARCHIVE_SHA256']}), or SHARDSCORE_CRD_DIR to a folder of those CRDs, "
                "or GOPROXY to a module proxy that serves it.") from None
        source = f"the Go module proxy ({MODULE}@{version})"
    missing = [k for k in KINDS if f"ray.io_{k}.yaml" not in crds]
    if missing:
        raise SystemExit(f"kuberay-crds: {source} has no {BASES}ray.io_{{{','.join(missing)}}}.yaml")
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in crds.items():
        (dest / name).write_bytes(data)
    (dest / "RELEASE").write_text(version + "\n")  # last: a stamp over a complete folder
    print(f"kuberay-crds: the KubeRay {version} CRDs from {source} are in {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
