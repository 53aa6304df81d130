#!/usr/bin/env bash
# Stop what deploy/local/up.sh started, gracefully: the Levee processes
# first (SIGTERM: the receivers finish their sessions, the workers their
# deliveries), then the NATS servers. Queued mail, JetStream data and the
# database stay; --purge also deletes the run directory (not the database).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
case "${1:-}" in
  "") ;;
  --purge) purge=1 ;;
  *) die "usage: $0 [--purge]" ;;
esac

# Levee's own drain deadline (--shutdown-timeout, 30s) plus a margin.
LEVEE_STOP_TIMEOUT="${LEVEE_CLUSTER_STOP_TIMEOUT:-40}"

# Receivers before workers: mail they accept while stopping is queued,
# and a worker stopping meanwhile would only leave it for the next start.
stop_all "$LEVEE_STOP_TIMEOUT" smtpd-1 smtpd-2
stop_all "$LEVEE_STOP_TIMEOUT" worker-1 worker-2 web
stop_all 30 "${NATS_PROCS[@]}"

if ((purge)); then
  # Only a directory up.sh made: LEVEE_CLUSTER_DIR could point anywhere.
  [[ -f "$CLUSTER_DIR/.gitignore" && -d "$CLUSTER_DIR/nats" ]] || die "$CLUSTER_DIR does not look like a cluster run directory; not removing it"
  rm -rf "$CLUSTER_DIR"
  say "removed $CLUSTER_DIR (the database $PG_DATABASE stays: dropdb it for a clean slate)"
else
  say "stopped; logs and data stay in $CLUSTER_DIR"
fi
