#!/usr/bin/env bash
# Install PostgreSQL's server binaries from Debian, for the tests' Iceberg catalog on PostgreSQL (the tests start
# and stop their own server: tests/support.py start_postgres). `make test` calls it.
#
#   bash scripts/install-postgres.sh
#
# Idempotent: nothing is done where an initdb is installed. Without root or apt-get it says what to install, and the
# tests that need PostgreSQL skip naming it.
set -euo pipefail

log() { echo "install-postgres: $*" >&2; }

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  log "PostgreSQL is not installed and this is not a root shell with apt-get: install Debian's postgresql package" \
      "(the Iceberg tests on a PostgreSQL catalog skip until then)"
  exit 0
fi
log "installing PostgreSQL from Debian (postgresql)"
# The package's own cluster is not used (policy-rc.d may refuse to start it): the tests run theirs.
bash "$(dirname "$0")/apt-install.sh" postgresql
