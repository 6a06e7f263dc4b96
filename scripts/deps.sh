#!/usr/bin/env bash
# Usage: scripts/deps.sh broker | test
#
# Makes sure what dtest's commands and tests need is on this machine (Debian or Ubuntu),
# installing only what is missing, so a second run takes a moment:
#   broker  RabbitMQ answering on 127.0.0.1:5672 (installed and started if none answers)
#   test    the broker, plus the real peers and tools the tests drive: py-amqp and Celery,
#           openssl (a throwaway CA), xmllint (JUnit schema checks), Chromium (the HTML
#           report), and a container engine (scripts/container-engine.sh)
# Installing needs root; without it, the script names the packages to install and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-test}"
case "$mode" in
  broker | test) ;;
  *) echo "usage: scripts/deps.sh broker | test" >&2; exit 2 ;;
esac

log() {
  echo "deps: $*" >&2
}

install() {
  if [ "$(id -u)" -ne 0 ]; then
    log "missing: $*; install them (apt-get install $*) or run this script as root"
    exit 1
  fi
  log "installing $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

broker_up() {
  (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null
}

ensure_broker() {
  broker_up && return
  command -v rabbitmq-server >/dev/null || install rabbitmq-server
  log "starting RabbitMQ"
  rabbitmq-server -detached
  for _ in $(seq 1 120); do
    broker_up && return
    sleep 0.5
  done
  log "RabbitMQ did not start on 127.0.0.1:5672 within 60 s; see /var/log/rabbitmq"
  exit 1
}

ensure_test_tools() {
  local missing=()
  /usr/bin/python3 -c "import amqp, celery, yaml" 2>/dev/null ||
    missing+=(python3-amqp python3-celery python3-yaml)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v xmllint >/dev/null || missing+=(libxml2-utils)
  command -v chromium >/dev/null || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then install "${missing[@]}"; fi
}

ensure_broker
if [ "$mode" = test ]; then
  ensure_test_tools
  # The container tests find podman's socket by themselves; the script's stdout is not needed.
  # Outside CI a machine without an engine still runs every other test.
  if ! scripts/container-engine.sh >/dev/null; then
    [ -n "${CI:-}" ] && { log "CI needs the container engine; see the errors above"; exit 1; }
    log "no container engine could be set up: the container tests will not run"
  fi
fi
