#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`; install and start one if needed.
#
#   bash scripts/docker-engine.sh          # ensure (idempotent: does nothing when docker already answers)
#   bash scripts/docker-engine.sh stop     # stop a daemon this script started
#
# On a machine that already has a running Docker (a laptop, a CI runner with Docker) this only checks it.
# On a fresh Debian/Ubuntu machine run as root it installs Debian's engine (`docker.io`) and starts `dockerd`
# in the background, with its data root, pidfile and log under $SHARDSCORE_DOCKER_DIR (default /var/lib/shardscore-docker).
# No container registry is needed for anything here.
set -euo pipefail

STATE_DIR="${SHARDSCORE_DOCKER_DIR:-/var/lib/shardscore-docker}"
DATA_ROOT="$STATE_DIR/data"
PIDFILE="$STATE_DIR/dockerd.pid"
LOG="$STATE_DIR/dockerd.log"
WAIT_S="${SHARDSCORE_DOCKER_WAIT_S:-60}"

log() { echo "[docker-engine] $*" >&2; }

docker_ok() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

if [[ "${1:-}" == "stop" ]]; then
  if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    pid="$(cat "$PIDFILE")"
    log "stopping dockerd (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  else
    log "no dockerd started by this script is running"
  fi
  exit 0
fi

if docker_ok; then
  log "docker engine is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
  exit 0
fi

# Install the engine (dockerd) if it is missing. A docker *client* alone (e.g. /usr/local/bin/docker) is not enough.
if ! command -v dockerd >/dev/null 2>&1; then
  if [[ "$(id -u)" != 0 ]]; then
    log "no Docker engine here and not root: install Docker (https://docs.docker.com/engine/install/) and start it"
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    log "no dockerd and no apt-get: install a Docker engine yourself"
    exit 1
  fi
  log "installing the Docker engine from Debian (docker.io)"
  pkgs=(docker.io iptables ca-certificates)
  # Where the kernel enforces AppArmor, dockerd needs apparmor_parser to load its default profile.
  [[ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" == Y* ]] && pkgs+=(apparmor)
  bash "$(dirname "$0")/apt-install.sh" "${pkgs[@]}"
  # The package's init script may have started a daemon already.
  sleep 1
  if docker_ok; then
    log "docker engine is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    exit 0
  fi
fi

# A daemon we started earlier may still be coming up.
if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  log "dockerd (pid $(cat "$PIDFILE")) is running; waiting for it"
else
  if [[ "$(id -u)" != 0 ]]; then
    log "dockerd is installed but not running, and starting it needs root"
    exit 1
  fi
  # An init system may manage docker (systemd on a normal machine): prefer it when present.
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]] && systemctl start docker 2>/dev/null; then
    log "started docker through systemd"
  else
    mkdir -p "$DATA_ROOT"
    rm -f "$PIDFILE"
    log "starting dockerd (data root $DATA_ROOT, log $LOG)"
    # setsid: the daemon outlives this script and the make target that called it.
    setsid dockerd --data-root "$DATA_ROOT" --pidfile "$PIDFILE" >>"$LOG" 2>&1 < /dev/null &
  fi
fi

for _ in $(seq 1 "$WAIT_S"); do
  if docker_ok; then
    log "docker engine is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    exit 0
  fi
  sleep 1
done
log "docker did not answer within ${WAIT_S}s; last lines of $LOG:"
tail -n 30 "$LOG" >&2 || true
exit 1
