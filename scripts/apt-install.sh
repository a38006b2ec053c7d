#!/usr/bin/env bash
# Install Debian packages, one caller at a time: `make test-deps` (PostgreSQL) and `make cluster-build` (the
# cluster's packages, the Docker engine, debootstrap) run side by side in CI (.ci/run), and two apt-get on one
# machine fail on dpkg's lock (or on the lists' lock, in `apt-get update`) instead of waiting for it.
#
#   bash scripts/apt-install.sh PACKAGE...
#
# Needs root. The package lists are fetched only when an install fails without them (a fresh machine has none).
set -euo pipefail
(($# > 0)) || { echo "usage: $0 PACKAGE..." >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive
# One lock for every caller of this script, held for the whole update-and-install (flock(1), util-linux).
exec 9>/var/lock/shardscore-apt.lock
flock 9
if ! apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
fi
