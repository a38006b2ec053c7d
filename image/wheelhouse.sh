#!/usr/bin/env bash
# Download every wheel the image needs into a wheelhouse on the host, so `docker build` needs no network.
#
#   bash image/wheelhouse.sh [DIR]            # default DIR: image/.wheelhouse (gitignored; the Dockerfile uses it when present)
#
# Env: TORCH_VARIANT (cpu|cu128|...|none, default cpu), TORCH_VERSION (default 2.13.0),
#      TORCH_INDEX_URL (default https://download.pytorch.org/whl/$TORCH_VARIANT), EXTRA_REQUIREMENTS (more pip specs),
#      PYTHON (the pip to download with; default python3).
# Wheels are for CPython 3.11 on x86_64 glibc (Debian bookworm), whatever the host is.
# Cached: a stamp records what was downloaded; nothing is fetched again while the inputs are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${1:-image/.wheelhouse}"
PYTHON="${PYTHON:-python3}"
TORCH_VARIANT="${TORCH_VARIANT:-cpu}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/${TORCH_VARIANT}}"
EXTRA_REQUIREMENTS="${EXTRA_REQUIREMENTS:-}"

log() { echo "[wheelhouse] $*" >&2; }
# pip download, without the warnings a machine's pip.conf may add about local index folders it lacks.
pip_download() {
  "$PYTHON" -m pip download "$@" 2> >(grep -v -e 'is ignored: it is neither a file nor a directory' >&2)
}

mkdir -p "$DIR"
key="$(cat requirements.lock job/pyproject.toml; echo "$TORCH_VARIANT $TORCH_VERSION $TORCH_INDEX_URL $EXTRA_REQUIREMENTS")"
key="$(printf '%s' "$key" | sha256sum | cut -c1-16)"
if [[ -f "$DIR/.stamp" && "$(cat "$DIR/.stamp")" == "$key" ]]; then
  log "$DIR is up to date ($(ls "$DIR" | grep -c '\.whl$') wheels)"
  exit 0
fi

# pip matches platform tags exactly: list every manylinux level up to bookworm's glibc 2.36.
target=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311)
for minor in $(seq 5 36); do target+=(--platform "manylinux_2_${minor}_x86_64"); done
target+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
start=$SECONDS

if [[ "$TORCH_VARIANT" != none ]]; then
  # The CPU and CUDA builds come from PyTorch's own index (local versions 2.13.0+cpu, 2.13.0+cu128).
  # A wheel already on a configured --find-links (pip.conf) is used first.
  torch_spec="torch==${TORCH_VERSION}+${TORCH_VARIANT}"
  log "downloading $torch_spec"
  if ! pip_download -q "${target[@]}" -d "$DIR" "$torch_spec" 2>/dev/null; then
    pip_download -q "${target[@]}" -d "$DIR" --extra-index-url "$TORCH_INDEX_URL" "$torch_spec"
  fi
fi

log "downloading requirements.lock, build tools ${EXTRA_REQUIREMENTS:+and $EXTRA_REQUIREMENTS }into $DIR"
# shellcheck disable=SC2086
pip_download -q "${target[@]}" -d "$DIR" -r requirements.lock "setuptools>=77" wheel $EXTRA_REQUIREMENTS

echo "$key" > "$DIR/.stamp"
log "$DIR ready in $((SECONDS - start))s: $(ls "$DIR" | grep -c '\.whl$') wheels, $(du -sh "$DIR" | cut -f1)"
