#!/usr/bin/env bash
# Usage: scripts/compose-smoke.sh [--binary PATH] [--ready-pattern REGEX] [--keep-image]
#
# Proves Dockerfile, .dockerignore, docker-compose.yml and docker-compose.test.yml end to end
# on the podman engine from scripts/container-engine.sh: builds the image with docker-compose,
# starts one worker per queue, scales worker-a to 3, reads the logs, stops the workers with
# SIGTERM and checks that each exited 0 well inside its grace period, then takes everything
# down and checks that nothing is left. It prints the build time, the image size and how long
# a container took from start to a running worker process.
#
# The committed files are copied into a temporary directory with the binary beside them, so a
# ./dtest in the work tree is never touched, and the image is tagged dtest-smoke:latest so the
# dtest:latest you run is not replaced. Workers use docker-compose.test.yml, so they share the
# host's network and talk only to the broker on 127.0.0.1 (or AMQP_URL when set).
#
# Options:
#   --binary PATH          put this Linux binary in the image instead of the built-in stand-in
#                          (the stand-in is a few lines of TypeScript compiled with bun: it
#                          checks the broker answers the AMQP handshake and waits for SIGTERM)
#   --ready-pattern REGEX  a log line that shows a worker is ready (default for the stand-in:
#                          its handshake line; with --binary: any line)
#   --keep-image           leave dtest-smoke:latest in podman's storage afterwards
#
# Environment: DOCKER_HOST (default: read from $DTEST_CACHE/docker-host.env), AMQP_URL.

set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${DTEST_CACHE:-/var/cache/dtest}"
PROJECT=dtest-smoke
export DTEST_IMAGE=dtest-smoke:latest
COMPOSE_FILES=(Dockerfile .dockerignore docker-compose.yml docker-compose.test.yml test-config.yml)
WAIT_SECONDS=30
STAND_IN_READY="answered connection.start"

binary=""
ready_pattern=""
keep_image=0
work_dir=""

log() {
  echo "compose-smoke: $*" >&2
}

die() {
  log "FAILED: $*"
  exit 1
}

usage() {
  sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

parse_args() {
  while (($# > 0)); do
    case "$1" in
      --binary) binary="${2:?--binary needs a path}" && shift 2 ;;
      --ready-pattern) ready_pattern="${2:?--ready-pattern needs a regex}" && shift 2 ;;
      --keep-image) keep_image=1 && shift ;;
      -h | --help) usage ;;
      *) log "unknown argument: $1" && usage ;;
    esac
  done
  if [[ -n "$binary" ]]; then
    [[ -x "$binary" ]] || die "--binary $binary is not an executable file"
    ready_pattern="${ready_pattern:-.}"
  fi
  ready_pattern="${ready_pattern:-$STAND_IN_READY}"
}

now() {
  echo "$EPOCHREALTIME"
}

# Seconds from $1 (an EPOCHREALTIME value) to now, with two decimals.
since() {
  awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'
}

compose() {
  docker-compose --ansi never -p "$PROJECT" \
    -f "$work_dir/docker-compose.yml" -f "$work_dir/docker-compose.test.yml" "$@"
}

cleanup() {
  local status=$?
  if [[ -n "$work_dir" ]]; then
    # After a failure, take the project down so that no worker is left running; errors here
    # are printed but must not hide the failure that brought us here.
    if [[ -n "$(project_containers)" ]]; then
      compose down --remove-orphans >&2 || log "docker-compose down failed during clean-up"
    fi
    rm -rf "$work_dir"
  fi
  if ((keep_image == 0)) && podman image exists "$DTEST_IMAGE"; then
    podman rmi "$DTEST_IMAGE" >/dev/null || log "could not remove $DTEST_IMAGE"
  fi
  exit "$status"
}

project_containers() {
  podman ps -a -q --filter "label=com.docker.compose.project=$PROJECT"
}

check_engine() {
  if [[ -z "${DOCKER_HOST:-}" ]] && [[ -f "$CACHE_DIR/docker-host.env" ]]; then
    # shellcheck source=/dev/null
    . "$CACHE_DIR/docker-host.env"
  fi
  [[ -n "${DOCKER_HOST:-}" ]] || die "DOCKER_HOST is not set; run scripts/container-engine.sh"
  local socket="${DOCKER_HOST#unix://}"
  curl --silent --fail --max-time 2 --unix-socket "$socket" http://podman/_ping >/dev/null ||
    die "nothing answers on $DOCKER_HOST; run scripts/container-engine.sh to start podman"
  command -v docker-compose >/dev/null || die "docker-compose not found; run container-engine.sh"
  [[ -z "$(project_containers)" ]] ||
    die "containers of project $PROJECT already exist; remove them with podman rm -f"
}

check_broker() {
  local url="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672}" host port
  [[ "$url" =~ ^amqps?://([^@/]*@)?([^:/]+)(:([0-9]+))? ]] ||
    die "AMQP_URL=$url is not of the form amqp://user:pass@host:port"
  host="${BASH_REMATCH[2]}"
  port="${BASH_REMATCH[4]:-5672}"
  (: <"/dev/tcp/$host/$port") 2>/dev/null ||
    die "no broker answers on $host:$port; start RabbitMQ with: rabbitmq-server -detached"
}

find_bun() {
  if [[ -x "$REPO_DIR/node_modules/.bin/bun" ]]; then
    echo "$REPO_DIR/node_modules/.bin/bun"
  elif command -v bun >/dev/null; then
    command -v bun
  else
    die "bun not found; run npm install in $REPO_DIR"
  fi
}

# The stand-in accepts the worker command line, opens a TCP connection to the broker in
# AMQP_URL and sends the AMQP 0-9-1 protocol header. A broker answers with a connection.start
# method frame, which proves the container reaches it. Then it waits for SIGTERM, as a worker
# does, and exits 0.
write_stand_in() {
  cat >"$1" <<'EOF'
import { connect } from "node:net";

const [command, flag, queue] = process.argv.slice(2);
if (command !== "worker" || flag !== "--queue" || !queue) {
  console.error("stand-in: usage: dtest worker --queue NAME");
  process.exit(2);
}
const url = new URL(process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672");
const where = `${url.hostname}:${url.port || 5672}`;
console.log(`stand-in ${queue}: running as uid ${process.getuid?.()}, started_ms=${Date.now()}`);

const socket = connect(Number(url.port || 5672), url.hostname);
socket.setTimeout(5000, () => socket.destroy(new Error("no reply within 5s")));
socket.once("connect", () => socket.write(Buffer.from("AMQP\x00\x00\x09\x01", "latin1")));
socket.once("data", (frame) => {
  // Frame type 1 is a method frame; class 10, method 10 is connection.start.
  const isStart = frame[0] === 1 && frame.readUInt16BE(7) === 10 && frame.readUInt16BE(9) === 10;
  const reply = isStart ? "answered connection.start" : "sent something else";
  console.log(`stand-in ${queue}: broker at ${where} ${reply}`);
  socket.destroy();
});
socket.on("error", (error) => {
  console.log(`stand-in ${queue}: broker at ${where} unreachable: ${error.message}`);
  process.exit(1);
});

process.on("SIGTERM", () => {
  console.log(`stand-in ${queue}: received SIGTERM, exiting 0`);
  process.exit(0);
});
setInterval(() => {}, 60_000);
EOF
}

prepare_context() {
  work_dir="$(mktemp -d /tmp/dtest-compose-smoke.XXXXXX)"
  local file
  for file in "${COMPOSE_FILES[@]}"; do
    cp "$REPO_DIR/$file" "$work_dir/$file" || die "$REPO_DIR/$file is missing"
  done

  if [[ -n "$binary" ]]; then
    cp "$binary" "$work_dir/dtest"
    log "using $binary as dtest"
    return
  fi
  local bun
  bun="$(find_bun)"
  mkdir "$work_dir/stand-in"
  write_stand_in "$work_dir/stand-in/main.ts"
  "$bun" build --compile "$work_dir/stand-in/main.ts" --outfile "$work_dir/dtest" >/dev/null ||
    die "bun build --compile of the stand-in failed"
  log "compiled the stand-in worker ($(du -h "$work_dir/dtest" | cut -f1))"
}

service_containers() {
  podman ps -a -q --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1"
}

# Waits until every container of $1 (a service) has logged a line matching the ready pattern.
# It asks podman rather than docker-compose, whose start-up alone takes half a second.
wait_ready() {
  local service="$1" expected="$2" deadline=$((SECONDS + WAIT_SECONDS)) id ready
  while :; do
    ready=0
    for id in $(service_containers "$service"); do
      [[ "$(podman inspect --format '{{.State.Running}}' "$id")" == true ]] ||
        die "a $service container exited $(podman inspect --format '{{.State.ExitCode}}' "$id")" \
          "before it was ready; its last lines: $(podman logs "$id" 2>&1 | tail -3)"
      podman logs "$id" 2>&1 | grep -Eq -- "$ready_pattern" && ready=$((ready + 1))
    done
    ((ready == expected)) && return
    ((SECONDS < deadline)) ||
      die "$ready of $expected $service containers logged /$ready_pattern/ in ${WAIT_SECONDS}s"
    sleep 0.1
  done
}

# For each container started after $1 (an EPOCHREALTIME value), how long until the stand-in
# printed its first line: from the runtime starting the container, and from the compose
# command beginning. A real binary prints no started_ms, so it is left out.
report_process_start() {
  local since_ms id name started_ns logged_ms
  since_ms="$(awk -v t="$1" 'BEGIN { printf "%d", t * 1000 }')"
  for id in $(project_containers); do
    logged_ms="$(podman logs "$id" 2>&1 | sed -n 's/.*started_ms=\([0-9]*\).*/\1/p' | head -1)"
    if [[ -z "$logged_ms" ]] || ((logged_ms < since_ms)); then
      continue
    fi
    name="$(podman inspect --format '{{.Name}}' "$id")"
    started_ns="$(podman inspect --format '{{.State.StartedAt.UnixNano}}' "$id")"
    log "  $name: process running $((logged_ms - started_ns / 1000000)) ms after its" \
      "container started, $((logged_ms - since_ms)) ms after the command began"
  done
}

check_count() {
  local service="$1" expected="$2" running
  running="$(compose ps -q "$service" | wc -l)"
  ((running == expected)) || die "expected $expected $service containers, found $running"
}

check_stopped_cleanly() {
  local id name code
  for id in $(project_containers); do
    name="$(podman inspect --format '{{.Name}}' "$id")"
    code="$(podman inspect --format '{{.State.ExitCode}}' "$id")"
    # 137 is 128 + SIGKILL: the worker outlived stop_grace_period.
    ((code == 0)) || die "$name exited $code after SIGTERM; expected 0"
  done
  log "  every worker exited 0"
}

main() {
  parse_args "$@"
  trap cleanup EXIT
  check_engine
  check_broker
  prepare_context
  local t

  log "docker-compose build"
  t="$(now)"
  compose build >"$work_dir/build.log" 2>&1 || die "build failed: $(tail -20 "$work_dir/build.log")"
  log "  image built in $(since "$t")s"
  log "  image size $(podman image inspect --format '{{.Size}}' "$DTEST_IMAGE") bytes" \
    "(base debian:bookworm-slim $(podman image inspect --format '{{.Size}}' debian:bookworm-slim))"
  [[ "$(podman image inspect --format '{{.Config.User}}' "$DTEST_IMAGE")" == dtest ]] ||
    die "the image does not run as the dtest user; check USER in the Dockerfile"

  log "docker-compose up -d"
  t="$(now)"
  compose up -d >&2
  log "  up -d returned after $(since "$t")s"
  wait_ready worker-a 1
  wait_ready worker-b 1
  log "  both workers ready $(since "$t")s after up -d began"
  report_process_start "$t"

  log "docker-compose ps"
  compose ps >&2
  check_count worker-a 1
  check_count worker-b 1

  log "docker-compose up -d --scale worker-a=3"
  t="$(now)"
  compose up -d --scale worker-a=3 >&2
  wait_ready worker-a 3
  log "  3 worker-a containers ready $(since "$t")s after scaling began"
  report_process_start "$t"
  check_count worker-a 3
  check_count worker-b 1

  log "docker-compose logs"
  compose logs --no-color >&2

  log "docker-compose stop (SIGTERM first, SIGKILL only after stop_grace_period)"
  t="$(now)"
  compose stop >&2
  log "  stopped in $(since "$t")s"
  check_stopped_cleanly
  if [[ -z "$binary" ]]; then
    (($(compose logs --no-color | grep -c "received SIGTERM") == 4)) ||
      die "not all 4 stand-ins logged that they received SIGTERM"
  fi

  log "docker-compose down"
  t="$(now)"
  compose down --remove-orphans >&2
  log "  down in $(since "$t")s"
  [[ -z "$(project_containers)" ]] || die "containers of $PROJECT are left after down"
  podman network exists "${PROJECT}_default" && die "network ${PROJECT}_default is left after down"

  log "passed"
}

main "$@"
