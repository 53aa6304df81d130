#!/usr/bin/env bash
# Start Levee as it runs in production, on one machine: a three-node NATS
# JetStream cluster with replicated (R3) streams, two `levee smtpd`, two
# `levee worker` and one `levee web`, storing mail in PostgreSQL.
# deploy/local/down.sh (make cluster-down) stops it. See README.md.
#
# Processes already running are left alone, so running it again restarts
# only what is missing (a node killed to watch a failover, say).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ports_of NAME: the ports the process listens on.
ports_of() {
  local i
  case "$1" in
    nats-*) i=$((${1#nats-} - 1)); echo "${NATS_PORTS[$i]} ${ROUTE_PORTS[$i]} ${MONITOR_PORTS[$i]}" ;;
    smtpd-*) i=$((${1#smtpd-} - 1)); echo "${SMTP_PORTS[$i]} ${SMTPD_HTTP_PORTS[$i]}" ;;
    worker-*) i=$((${1#worker-} - 1)); echo "${WORKER_HTTP_PORTS[$i]}" ;;
    web) echo "$WEB_PORT" ;;
  esac
}

# Check everything before starting anything.
((${#NATS_PORTS[@]} == 3 && ${#ROUTE_PORTS[@]} == 3 && ${#MONITOR_PORTS[@]} == 3)) ||
  die "LEVEE_CLUSTER_NATS_PORTS, _ROUTE_PORTS and _MONITOR_PORTS need three ports each"
((${#SMTP_PORTS[@]} == 2 && ${#SMTPD_HTTP_PORTS[@]} == 2 && ${#WORKER_HTTP_PORTS[@]} == 2)) ||
  die "LEVEE_CLUSTER_SMTP_PORTS, _SMTPD_HTTP_PORTS and _WORKER_HTTP_PORTS need two ports each"
declare -A up=()
for name in "${NATS_PROCS[@]}" "${LEVEE_PROCS[@]}"; do
  if pid="$(running "$name")"; then
    up[$name]=$pid
    continue
  fi
  for p in $(ports_of "$name"); do
    port_busy "$p" && die "port $p on $HOST (for $name) is in use (README.md lists the LEVEE_CLUSTER_* port settings)"
  done
done
command -v curl >/dev/null || die "curl is needed to wait for the processes to become ready"
command -v psql >/dev/null || die "psql is needed to create the database $PG_DATABASE (Debian: apt-get install postgresql-client)"
[[ "$PG_DATABASE" =~ ^[a-z_][a-z0-9_]*$ ]] || die "LEVEE_CLUSTER_PG_DATABASE must be a plain lower-case name, got $PG_DATABASE"

# Both binaries come from this module: nats-server at the version go.mod
# pins (the one Levee's tests run against), never a system package's.
say "building $(basename "$LEVEE_BIN") and $(basename "$NATS_BIN")"
"$GO" build -o "$LEVEE_BIN" ./cmd/levee
"$GO" build -o "$NATS_BIN" github.com/nats-io/nats-server/v2

if [[ "$(psql "$PG_SERVER" -XtAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'")" != 1 ]]; then
  say "creating database $PG_DATABASE"
  psql "$PG_SERVER" -Xqc "CREATE DATABASE $PG_DATABASE" >/dev/null
fi

# From here on, a failure stops whatever this run started, and only that.
started=()
ready=0
on_exit() {
  ((ready)) && return
  echo "deploy/local: start failed; stopping what this run started" >&2
  local name levee=() nats=()
  for name in "${started[@]}"; do
    case "$name" in nats-*) nats+=("$name") ;; *) levee+=("$name") ;; esac
  done
  ((${#levee[@]})) && stop_all 10 "${levee[@]}"
  ((${#nats[@]})) && stop_all 10 "${nats[@]}"
}
trap on_exit EXIT

mkdir -p "$CLUSTER_DIR"/{nats,logs,run,data}
# The run directory is data, not source: keep it out of git wherever it is.
[[ -f "$CLUSTER_DIR/.gitignore" ]] || echo '*' >"$CLUSTER_DIR/.gitignore"

# start NAME COMMAND...: run in the background, immune to the terminal's
# hang-up, with its output in the log file and its pid in the pid file.
start() {
  local name="$1"
  shift
  if [[ -n "${up[$name]:-}" ]]; then
    say "$name already running (pid ${up[$name]})"
    return
  fi
  echo "--- started $(date -Is)" >>"$(log_file "$name")"
  nohup "$@" </dev/null >>"$(log_file "$name")" 2>&1 &
  echo $! >"$(pid_file "$name")"
  started+=("$name")
}

routes=""
for p in "${ROUTE_PORTS[@]}"; do routes+="    nats-route://$HOST:$p"$'\n'; done
for i in 0 1 2; do
  name="nats-$((i + 1))"
  conf="$CLUSTER_DIR/nats/$name.conf"
  cat >"$conf" <<EOF
# Written by deploy/local/up.sh; rewritten at every start.
server_name: $name
listen: $HOST:${NATS_PORTS[$i]}
# /healthz (up.sh waits on it), /jsz, /varz.
http: $HOST:${MONITOR_PORTS[$i]}

# Whole mail messages go through JetStream. Levee refuses to start unless
# max_payload >= queue.max_msg_size (16448KiB by default), and a
# dead-lettered copy carries up to 64KiB more headers. 17MB is 17 MiB.
max_payload: 17MB

jetstream {
  store_dir: "$CLUSTER_DIR/nats/$name"
  # All three nodes share this machine's disk and power: without an fsync
  # before each acknowledgement, one power cut could lose mail already
  # answered 250 on all replicas at once.
  sync_interval: always
  # JetStream reserves each stream's max_bytes on every replica.
  max_file_store: 8GB
}

cluster {
  name: levee-local
  listen: $HOST:${ROUTE_PORTS[$i]}
  # Every node lists every route (its own is skipped): JetStream clustering
  # needs them configured, not only discovered.
  routes: [
$routes  ]
}
EOF
  start "$name" "$NATS_BIN" -c "$conf"
done
for i in 0 1 2; do
  # /healthz answers 200 once JetStream is up and current with the cluster.
  wait_http "http://$HOST:${MONITOR_PORTS[$i]}/healthz" 60 "nats-$((i + 1))"
done
say "JetStream cluster up"

NATS_URL="$(nats_urls)"
STORE_URL="$(store_url)"
levee_start() {
  local name="$1" role="$2" http_port="$3"
  shift 3
  mkdir -p "$CLUSTER_DIR/data/$name"
  # shellcheck disable=SC2086 # EXTRA_FLAGS is a list of flags
  start "$name" "$LEVEE_BIN" "$role" \
    --nats-url "$NATS_URL" --queue-replicas 3 --store "$STORE_URL" \
    --http-addr "$HOST:$http_port" --data-dir "$CLUSTER_DIR/data/$name" "$@" $EXTRA_FLAGS
}

# The web process first: it creates the R3 streams, so the others find
# them instead of racing to create them.
levee_start web web "$WEB_PORT"
wait_http "http://$HOST:$WEB_PORT/readyz" 60 web
for i in 0 1; do
  levee_start "worker-$((i + 1))" worker "${WORKER_HTTP_PORTS[$i]}"
  levee_start "smtpd-$((i + 1))" smtpd "${SMTPD_HTTP_PORTS[$i]}" --smtp-addr "$HOST:${SMTP_PORTS[$i]}"
done
for i in 0 1; do
  wait_http "http://$HOST:${WORKER_HTTP_PORTS[$i]}/readyz" 60 "worker-$((i + 1))"
  wait_http "http://$HOST:${SMTPD_HTTP_PORTS[$i]}/readyz" 60 "smtpd-$((i + 1))"
done
ready=1

cat <<EOF

Levee is running (stop it with: make cluster-down)

  SMTP        $HOST:${SMTP_PORTS[0]}  $HOST:${SMTP_PORTS[1]}   (levee smtpd x2; mail for example.com, localhost)
  HTTP API    http://$HOST:$WEB_PORT   (levee web: mailboxes, /api/v1/queue)
  metrics     smtpd http://$HOST:${SMTPD_HTTP_PORTS[0]} http://$HOST:${SMTPD_HTTP_PORTS[1]}, worker http://$HOST:${WORKER_HTTP_PORTS[0]} http://$HOST:${WORKER_HTTP_PORTS[1]} (/metrics, /readyz)
  NATS        $NATS_URL
  monitoring  http://$HOST:${MONITOR_PORTS[0]}/jsz  http://$HOST:${MONITOR_PORTS[1]}/jsz  http://$HOST:${MONITOR_PORTS[2]}/jsz
  PostgreSQL  $STORE_URL
  logs        $CLUSTER_DIR/logs/
  data        $CLUSTER_DIR/

Try it:
  $LEVEE_BIN loadtest --target $HOST:${SMTP_PORTS[0]} --api http://$HOST:$WEB_PORT --rate 50/s --duration 10s --max-lost 0 --max-duplicates 0
EOF
