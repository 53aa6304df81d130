# shellcheck shell=bash disable=SC2034 # the settings are used by up.sh and down.sh
# Shared by up.sh and down.sh (sourced, not run): the cluster's layout,
# its ports, and small process helpers. Every setting is an environment
# variable with a default; see README.md.

# Run from the repository root, wherever the script was started.
LEVEE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$LEVEE_ROOT" || exit 1

GO="${GO:-go}"
# The run directory holds every process's config, data, log and pid file.
CLUSTER_DIR="${LEVEE_CLUSTER_DIR:-$LEVEE_ROOT/levee-cluster}"
case "$CLUSTER_DIR" in /*) ;; *) CLUSTER_DIR="$LEVEE_ROOT/$CLUSTER_DIR" ;; esac
LEVEE_BIN="${LEVEE_CLUSTER_LEVEE_BIN:-$LEVEE_ROOT/bin/levee}"
NATS_BIN="${LEVEE_CLUSTER_NATS_BIN:-$LEVEE_ROOT/bin/nats-server}"

# Three nats-server nodes. Never 4222: that is the default of any other
# NATS on the machine, and this cluster must not be mistaken for it.
read -r -a NATS_PORTS <<<"${LEVEE_CLUSTER_NATS_PORTS:-14222 14223 14224}"
read -r -a ROUTE_PORTS <<<"${LEVEE_CLUSTER_ROUTE_PORTS:-16222 16223 16224}"
read -r -a MONITOR_PORTS <<<"${LEVEE_CLUSTER_MONITOR_PORTS:-18222 18223 18224}"

# Levee: two SMTP receivers, two workers, one web. Every process serves
# /metrics, /healthz and /readyz on its own HTTP port.
read -r -a SMTP_PORTS <<<"${LEVEE_CLUSTER_SMTP_PORTS:-2525 2526}"
read -r -a SMTPD_HTTP_PORTS <<<"${LEVEE_CLUSTER_SMTPD_HTTP_PORTS:-8031 8032}"
read -r -a WORKER_HTTP_PORTS <<<"${LEVEE_CLUSTER_WORKER_HTTP_PORTS:-8041 8042}"
WEB_PORT="${LEVEE_CLUSTER_WEB_PORT:-8025}"
HOST=127.0.0.1

# PostgreSQL: the server (any database on it, a user allowed to create
# databases) and the database Levee stores mail in, created if missing.
PG_SERVER="${LEVEE_CLUSTER_PG_SERVER:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}"
PG_DATABASE="${LEVEE_CLUSTER_PG_DATABASE:-levee_local}"
# Extra flags for every levee process, e.g. "--queue-max-msgs 200000".
EXTRA_FLAGS="${LEVEE_CLUSTER_FLAGS:-}"

# The stop order of the Levee processes: receivers first (no new mail),
# then the workers finish their deliveries, then the read side.
LEVEE_PROCS=(smtpd-1 smtpd-2 worker-1 worker-2 web)
NATS_PROCS=(nats-1 nats-2 nats-3)

die() { echo "deploy/local: $*" >&2; exit 1; }
say() { echo "deploy/local: $*"; }

# The database URL: the server's URL with the database path replaced.
store_url() {
  local base="${PG_SERVER%%\?*}" query=""
  [[ "$PG_SERVER" == *\?* ]] && query="?${PG_SERVER#*\?}"
  echo "${base%/*}/$PG_DATABASE$query"
}

nats_urls() {
  local urls=() p
  for p in "${NATS_PORTS[@]}"; do urls+=("nats://$HOST:$p"); done
  (IFS=,; echo "${urls[*]}")
}

# alive PID: the process exists and has not exited. An exited child of a
# parent that is slow to reap it stays a zombie (state Z), which kill -0
# still finds.
alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z ]]
}

pid_file() { echo "$CLUSTER_DIR/run/$1.pid"; }
log_file() { echo "$CLUSTER_DIR/logs/$1.log"; }

# running NAME prints the pid of NAME if it is alive and still the program
# we started (a pid file can outlive its process, and pids are reused).
running() {
  local f pid
  f="$(pid_file "$1")"
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  grep -qaF -- "$CLUSTER_DIR" "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

# port_busy PORT: something already listens on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# wait_http URL SECONDS NAME: wait until URL answers 2xx, or fail showing
# the end of NAME's log.
wait_http() {
  local url="$1" secs="$2" name="$3" i
  for ((i = 0; i < secs * 5; i++)); do
    if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then return 0; fi
    if ! running "$name" >/dev/null; then
      echo "deploy/local: $name exited; the end of $(log_file "$name"):" >&2
      tail -n 20 "$(log_file "$name")" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "deploy/local: $name not ready at $url after ${secs}s; the end of $(log_file "$name"):" >&2
  tail -n 20 "$(log_file "$name")" >&2
  return 1
}

# stop_all SIGNAL_TIMEOUT NAME...: SIGTERM every named process, wait for
# them to exit, and SIGKILL those still running after the timeout.
stop_all() {
  local timeout="$1" name pid i left
  shift
  local -a pids=() names=()
  for name in "$@"; do
    if pid="$(running "$name")"; then
      kill -TERM "$pid" && pids+=("$pid") && names+=("$name")
    fi
    rm -f "$(pid_file "$name")"
  done
  ((${#pids[@]})) || return 0
  say "stopping ${names[*]} (SIGTERM)"
  for ((i = 0; i < timeout * 5; i++)); do
    left=0
    for pid in "${pids[@]}"; do alive "$pid" && left=1; done
    ((left)) || return 0
    sleep 0.2
  done
  for i in "${!pids[@]}"; do
    if alive "${pids[$i]}"; then
      echo "deploy/local: ${names[$i]} still running ${timeout}s after SIGTERM: SIGKILL" >&2
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
  done
}
