#!/usr/bin/env bash
# Fetch Apache Iceberg's REST catalog server (org.apache.iceberg.rest.RESTCatalogServer, iceberg-open-api's test
# fixtures: what the apache/iceberg-rest-fixture image runs) and its dependencies from Maven Central into
# <tools-dir>/iceberg-rest/lib, for the tests' Iceberg catalog over REST (the tests start and stop their own server:
# tests/support.py start_iceberg_rest). `make test` calls it.
#
#   bash scripts/install-iceberg-rest.sh [tools-dir]      (default: .tools)
#
# The jars are those tests/iceberg_rest/pom.xml names. Idempotent: nothing is done where the jars of this pom are
# there already. Without java (17+) or mvn it says what to install, and the tests on the REST catalog skip naming it.
set -euo pipefail

TOOLS_DIR="${1:-.tools}"
POM="$(cd "$(dirname "$0")/.." && pwd)/tests/iceberg_rest/pom.xml"
DEST="$TOOLS_DIR/iceberg-rest"
STAMP="$DEST/lib/.pom.sha256"

log() { echo "install-iceberg-rest: $*" >&2; }

want="$(sha256sum "$POM" | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    log "$tool is not installed: install Java 17+ and Maven (Debian's openjdk-17-jre-headless, maven)" \
        "(the Iceberg tests on a REST catalog skip until then)"
    exit 0
  fi
done
log "fetching the Iceberg REST catalog server's jars from Maven Central into $DEST/lib"
mkdir -p "$DEST"
rm -rf "$DEST/lib.new"
mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$(cd "$DEST" && pwd)/lib.new"
echo "$want" >"$DEST/lib.new/.pom.sha256"
rm -rf "$DEST/lib"
mv "$DEST/lib.new" "$DEST/lib"
