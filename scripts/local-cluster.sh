#!/usr/bin/env bash
# Starts an N-member Ordo cluster on loopback (client ports 2379, 22379, 32379, 42379, 52379;
# peer ports one above) with data in a temporary directory, prints the client endpoints and
# stays in the foreground until interrupted; every member stops with it.
# Usage: scripts/local-cluster.sh [1|3|5] [extra ordo flags...]
set -euo pipefail
n=${1:-3}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait; rm -rf "$work"' EXIT
go build -o "$work/ordo" "$root/cmd/ordo"
ports=(2379 22379 32379 42379 52379)
cluster=""
for ((i = 0; i < n; i++)); do
  p=${ports[$i]}
  cluster+="${cluster:+,}m$i=http://127.0.0.1:$((p + 1))"
done
endpoints=""
for ((i = 0; i < n; i++)); do
  p=${ports[$i]}
  "$work/ordo" --name "m$i" --data-dir "$work/m$i.ordo" \
    --listen-client-urls "http://127.0.0.1:$p" --advertise-client-urls "http://127.0.0.1:$p" \
    --listen-peer-urls "http://127.0.0.1:$((p + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((p + 1))" \
    --initial-cluster "$cluster" --initial-cluster-state new "$@" 2>"$work/m$i.log" &
  endpoints+="${endpoints:+,}127.0.0.1:$p"
done
for ((i = 0; i < n; i++)); do
  for _ in $(seq 1 300); do
    grep -q "ready to serve client requests" "$work/m$i.log" && break
    sleep 0.1
  done
done
echo "endpoints: $endpoints (logs in $work)"
wait
