#!/usr/bin/env bash
# Usage: scripts/container-engine.sh
#
# Sets up a Docker-compatible container engine on a Debian bookworm machine with no Docker
# daemon and no image registry: podman running containers through runc, a debian:bookworm-slim
# base image built locally with debootstrap, and podman's Docker API on a unix socket so that
# docker-compose can drive it. Run it as root. Every step checks first and is skipped when its
# result is already in place, so a second run takes seconds.
#
# Progress goes to stderr. The last line on stdout is the variable docker-compose needs, and the
# same line is written to $DTEST_CACHE/docker-host.env, so either of these works:
#   eval "$(scripts/container-engine.sh)"
#   scripts/container-engine.sh && . /var/cache/dtest/docker-host.env
#
# Environment:
#   DTEST_CACHE    where the base image's root filesystem tarball and the service log are kept
#                  (default /var/cache/dtest)
#   DEBIAN_MIRROR  the mirror debootstrap downloads from (default http://deb.debian.org/debian)

set -euo pipefail
# Functions inherit the ERR trap, so a failure anywhere names the step it happened in.
set -o errtrace

CACHE_DIR="${DTEST_CACHE:-/var/cache/dtest}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=(podman runc debootstrap docker-compose curl)
CONF_FILE=/etc/containers/containers.conf
BASE_IMAGE=debian:bookworm-slim
ROOTFS_TAR="$CACHE_DIR/debian-bookworm-minbase.tar"
SOCKET=/run/podman/podman.sock
SERVICE_PID_FILE=/run/podman/dtest-service.pid
SERVICE_LOG="$CACHE_DIR/podman-service.log"
ENV_FILE="$CACHE_DIR/docker-host.env"
SOCKET_WAIT_SECONDS=30

# runc rather than crun: this is the runtime the set-up was proven with on cgroup v1 hosts.
# Explicit ulimits: without them podman copies the host's limits into the container, and on
# these machines the runtime refuses to start a container with the inherited values.
CONF_CONTENT='# Written by dtest scripts/container-engine.sh; rerunning the script restores it.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"'

current_step="starting"
conf_changed=0

log() {
  echo "container-engine: $*" >&2
}

die() {
  log "error: $*"
  exit 1
}

on_error() {
  log "error: step \"$current_step\" failed (exit $1); the output above says why"
}
trap 'on_error $?' ERR

step() {
  current_step="$1"
  step_started=$SECONDS
  log "$1"
}

step_done() {
  log "  done in $((SECONDS - step_started))s"
}

socket_answers() {
  [[ -S "$SOCKET" ]] && curl --silent --fail --max-time 2 --unix-socket "$SOCKET" \
    http://podman/_ping >/dev/null 2>&1
}

check_host() {
  [[ "$(id -u)" == 0 ]] || die "run this as root; it installs packages and writes $CONF_FILE"
  command -v apt-get >/dev/null || die "apt-get not found; this script supports Debian bookworm"
  mkdir -p "$CACHE_DIR" || die "cannot create the cache directory $CACHE_DIR; set DTEST_CACHE"
}

install_packages() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]]; then
      missing+=("$pkg")
    fi
  done
  if ((${#missing[@]} == 0)); then
    log "  already installed: ${PACKAGES[*]}"
    return
  fi

  log "  installing: ${missing[*]}"
  apt-get update -qq || die "apt-get update failed; check the apt sources in /etc/apt"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed; run it by hand to see which package is at fault"
}

write_conf() {
  if [[ -f "$CONF_FILE" ]] && [[ "$(cat "$CONF_FILE")" == "$CONF_CONTENT" ]]; then
    log "  $CONF_FILE is already as needed"
    return
  fi

  if [[ -f "$CONF_FILE" ]] && [[ ! -f "$CONF_FILE.before-dtest" ]]; then
    cp "$CONF_FILE" "$CONF_FILE.before-dtest"
    log "  kept the previous $CONF_FILE as $CONF_FILE.before-dtest"
  fi
  mkdir -p "$(dirname "$CONF_FILE")"
  printf '%s\n' "$CONF_CONTENT" >"$CONF_FILE"
  conf_changed=1
  log "  wrote $CONF_FILE"
}

# Trims what a runtime image never reads, keeping each package's copyright file.
trim_rootfs() {
  local root="$1"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
  rm -rf "$root"/var/cache/apt/archives/*.deb
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
  find "$root/usr/share/doc" -type f ! -name copyright -delete
  find "$root/usr/share/doc" -type d -empty -delete
}

build_rootfs_tarball() {
  if [[ -s "$ROOTFS_TAR" ]]; then
    log "  reusing $ROOTFS_TAR"
    return
  fi

  local root
  root="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
  log "  debootstrap --variant=minbase bookworm from $MIRROR (takes a few minutes)"
  if ! debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1
  then
    rm -rf "$root"
    die "debootstrap failed; see $CACHE_DIR/debootstrap.log (set DEBIAN_MIRROR for another mirror)"
  fi
  trim_rootfs "$root"

  # Written under a temporary name first so that an interrupted run never leaves a partial
  # tarball that the next run would take for a finished one.
  tar --numeric-owner -C "$root" -cf "$ROOTFS_TAR.partial" .
  mv "$ROOTFS_TAR.partial" "$ROOTFS_TAR"
  rm -rf "$root"
  log "  cached $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1))"
}

import_base_image() {
  if podman image exists "$BASE_IMAGE"; then
    log "  $BASE_IMAGE is already in podman's storage"
    return
  fi

  # A tarball import carries no image config, so give it the PATH and CMD a Debian image has.
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null ||
    die "podman import of $ROOTFS_TAR failed; delete the tarball and rerun to rebuild it"
  log "  imported $BASE_IMAGE"
}

# A container that really starts proves the runtime and the ulimits in $CONF_FILE together;
# a broken combination otherwise shows up only later, inside docker-compose's output.
check_container_starts() {
  podman run --rm --network=none "$BASE_IMAGE" true ||
    die "podman could not start a container from $BASE_IMAGE; check $CONF_FILE and runc"
  log "  a container from $BASE_IMAGE started and exited 0"
}

# True when $1 is the pid of a running podman API service. Reading the command line rather
# than using kill -0 also rules out a zombie and a pid that the kernel has since reused.
service_alive() {
  [[ -n "$1" ]] && [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline")" == *"system service"* ]]
}

# Waits for the socket to answer. Returns 1 if the service $1 exits first.
wait_for_socket() {
  local pid="$1" deadline=$((SECONDS + SOCKET_WAIT_SECONDS))
  until socket_answers; do
    service_alive "$pid" || return 1
    ((SECONDS < deadline)) ||
      die "$SOCKET did not answer within ${SOCKET_WAIT_SECONDS}s; see $SERVICE_LOG"
    sleep 0.2
  done
}

# The service reads containers.conf once, when it starts, so one started by an earlier run is
# restarted after the file changes. A service started some other way is left alone.
restart_service_if_stale() {
  local pid="$1"
  if ((conf_changed == 0)) || ! socket_answers; then
    return 0
  fi
  if ! service_alive "$pid"; then
    log "  warning: the podman service on $SOCKET predates $CONF_FILE; restart it to apply it"
    return 0
  fi

  log "  restarting podman service (pid $pid) so that it reads the new $CONF_FILE"
  kill "$pid"
  local deadline=$((SECONDS + SOCKET_WAIT_SECONDS))
  while service_alive "$pid"; do
    ((SECONDS < deadline)) || die "podman service (pid $pid) did not stop; stop it and rerun"
    sleep 0.2
  done
}

start_service() {
  local pid
  pid="$(cat "$SERVICE_PID_FILE" 2>/dev/null || true)"
  restart_service_if_stale "$pid"
  if socket_answers; then
    log "  $SOCKET already answers"
    return
  fi

  if service_alive "$pid"; then
    log "  podman service (pid $pid) is running but not answering yet; waiting for it"
    wait_for_socket "$pid" && return
    log "  podman service (pid $pid) exited without answering; starting a new one"
  fi

  mkdir -p "$(dirname "$SOCKET")"
  # A socket file left by a service that has died would make the new one fail to bind.
  rm -f "$SOCKET"
  setsid podman system service --time=0 "unix://$SOCKET" >>"$SERVICE_LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$SERVICE_PID_FILE"
  log "  started podman system service (pid $pid, log $SERVICE_LOG)"
  wait_for_socket "$pid" || die "podman system service exited at start; see $SERVICE_LOG"
}

main() {
  local started=$SECONDS

  step "checking the host"
  check_host
  step_done

  step "installing packages"
  install_packages
  step_done

  step "configuring podman"
  write_conf
  step_done

  step "building the base root filesystem"
  build_rootfs_tarball
  step_done

  step "importing the base image"
  import_base_image
  check_container_starts
  step_done

  step "starting the Docker-compatible API"
  start_service
  step_done

  echo "export DOCKER_HOST=unix://$SOCKET" >"$ENV_FILE"
  log "ready in $((SECONDS - started))s; DOCKER_HOST is also in $ENV_FILE"
  echo "export DOCKER_HOST=unix://$SOCKET"
}

main "$@"
