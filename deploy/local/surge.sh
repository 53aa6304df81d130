#!/usr/bin/env bash
# make surge: the Cyber Monday recipe of docs/loadtesting.md, scaled to one
# small machine (about 4 minutes), against a fresh Levee on SQLite.
#
#   deploy/local/surge.sh          one `levee serve` process (the default)
#   deploy/local/surge.sh split    `levee smtpd`, `levee worker` and `levee web`
#                                  as separate processes on a nats-server of
#                                  their own; with two or more cores the receiver
#                                  and nats-server get CPU 0 and the worker and
#                                  web the rest (taskset), as separate machines
#                                  would
#
# It writes cm.json and cm.html in $SURGE_DIR (default ./levee-surge) and
# prints the load test's summary: accepted against offered, arrival -> 250,
# the queue's and the senders' peaks, the catch-up time, lost and
# duplicated, the readers' p99 per phase and the bottleneck it names.
# Settings (environment): SURGE_BASELINE (100/s), SURGE_FACTOR (10x),
# SURGE_FOR (60s), SURGE_CONNECTIONS (50), SURGE_READERS (4), and
# SURGE_STORE: the mailbox store, a postgres:// URL, or "postgres" for a
# fresh database on the local server (127.0.0.1:5432, user postgres, made
# with createdb and dropped at the end); default SQLite in SURGE_DIR.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
MODE="${1:-serve}"
GO="${GO:-go}"
DIR="${SURGE_DIR:-$ROOT/levee-surge}"
case "$DIR" in /*) ;; *) DIR="$ROOT/$DIR" ;; esac
HOST=127.0.0.1
SMTP_PORT=12625 HTTP_PORT=18625 WORKER_HTTP_PORT=18626 SMTPD_HTTP_PORT=18627 NATS_PORT=14625

die() { echo "surge: $*" >&2; exit 1; }
case "$MODE" in serve | split) ;; *) die "usage: $0 [serve|split]" ;; esac
for p in $SMTP_PORT $HTTP_PORT $WORKER_HTTP_PORT $SMTPD_HTTP_PORT $NATS_PORT; do
  (exec 3<>"/dev/tcp/$HOST/$p") 2>/dev/null && die "port $p is in use"
done

# SURGE_DIR is emptied: never the checkout or a top-level directory.
[[ "$DIR" == "$ROOT" || "$(dirname "$DIR")" == / ]] && die "SURGE_DIR=$DIR: give a directory of its own (it is emptied)"
rm -rf "$DIR"
mkdir -p "$DIR"
echo '*' >"$DIR/.gitignore" # run output, not source
echo "surge: building bin/levee"
"$GO" build -o bin/levee ./cmd/levee

pids=()
dropdb_name=""
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -n "$dropdb_name" ]]; then
    dropdb -h 127.0.0.1 -U postgres --if-exists "$dropdb_name" || true
  fi
}
trap cleanup EXIT

STORE="${SURGE_STORE:-}"
if [[ "$STORE" == postgres ]]; then
  dropdb_name="levee_surge_$$"
  createdb -h 127.0.0.1 -U postgres "$dropdb_name" || die "createdb $dropdb_name on 127.0.0.1:5432 failed: is PostgreSQL up?"
  STORE="postgres://postgres@127.0.0.1:5432/$dropdb_name?sslmode=disable"
fi

# pin CPUS COMMAND...: with taskset and more than one core, run COMMAND on
# those cores only. It execs, so that `pin ... &` leaves $! the command's
# pid (the cleanup signals it).
pin() {
  local cpus="$1"
  shift
  if command -v taskset >/dev/null && (($(nproc) > 1)); then
    exec taskset -c "$cpus" "$@"
  else
    exec "$@"
  fi
}

wait_ready() { # URL NAME
  for _ in $(seq 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$2 did not become ready ($1); its log is in $DIR"
}

COMMON=(--domains example.com --queue-max-msgs 200000)
if [[ "$MODE" == serve ]]; then
  STORE_FLAG=()
  [[ -n "$STORE" ]] && STORE_FLAG=(--store "$STORE")
  bin/levee serve --data-dir "$DIR/data" --smtp-addr "$HOST:$SMTP_PORT" --http-addr "$HOST:$HTTP_PORT" \
    "${STORE_FLAG[@]}" "${COMMON[@]}" >"$DIR/levee.log" 2>&1 &
  pids+=($!)
  wait_ready "http://$HOST:$HTTP_PORT/readyz" "levee serve"
else
  echo "surge: building bin/nats-server"
  "$GO" build -o bin/nats-server github.com/nats-io/nats-server/v2
  mkdir -p "$DIR/nats"
  cat >"$DIR/nats.conf" <<CONF
listen: $HOST:$NATS_PORT
max_payload: 17MB
jetstream { store_dir: "$DIR/nats", sync_interval: always }
CONF
  last=$(($(nproc) - 1))
  pin 0 bin/nats-server -c "$DIR/nats.conf" >"$DIR/nats.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/$HOST/$NATS_PORT") 2>/dev/null && break; sleep 0.1; done
  NATS=(--nats-url "nats://$HOST:$NATS_PORT" --store "${STORE:-$DIR/levee.db}")
  pin 0 bin/levee smtpd --data-dir "$DIR/smtpd" "${NATS[@]}" --smtp-addr "$HOST:$SMTP_PORT" \
    --http-addr "$HOST:$SMTPD_HTTP_PORT" "${COMMON[@]}" >"$DIR/smtpd.log" 2>&1 &
  pids+=($!)
  pin "1-$((last > 0 ? last : 0))" bin/levee worker --data-dir "$DIR/worker" "${NATS[@]}" \
    --http-addr "$HOST:$WORKER_HTTP_PORT" "${COMMON[@]}" >"$DIR/worker.log" 2>&1 &
  pids+=($!)
  pin "1-$((last > 0 ? last : 0))" bin/levee web --data-dir "$DIR/web" "${NATS[@]}" \
    --http-addr "$HOST:$HTTP_PORT" "${COMMON[@]}" >"$DIR/web.log" 2>&1 &
  pids+=($!)
  for port in $SMTPD_HTTP_PORT $WORKER_HTTP_PORT $HTTP_PORT; do
    wait_ready "http://$HOST:$port/readyz" "the process on port $port"
  done
fi

echo "surge: running the recipe ($MODE, store ${STORE:-SQLite}); about 4 minutes"
status=0
bin/levee loadtest --target "$HOST:$SMTP_PORT" --api "http://$HOST:$HTTP_PORT" \
  --to 'customer{n}@example.com' --mailboxes 500 \
  --baseline "${SURGE_BASELINE:-100/s}" --surge "${SURGE_FACTOR:-10x}" --surge-for "${SURGE_FOR:-60s}" --surge-ramp 10s \
  --size lognormal:8KiB,1.0 --attachments 0.1 --connections "${SURGE_CONNECTIONS:-50}" --readers "${SURGE_READERS:-4}" \
  --progress never --json "$DIR/cm.json" --report "$DIR/cm.html" --max-lost 0 --max-duplicates 0 || status=$?
echo "surge: report $DIR/cm.html, result $DIR/cm.json"
exit "$status"
