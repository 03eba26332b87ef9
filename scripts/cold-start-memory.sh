#!/bin/bash
# Resident memory of `cronwerk serve` after a cold start (empty compile
# cache) and after a warm one (the cache that start filled), with every
# example component in the plugins folder. For BENCHMARKS.md.
#
#   cargo build --release -p cronwerk && cargo xtask build-examples --out /tmp/components
#   scripts/cold-start-memory.sh target/release/cronwerk /tmp/components
set -euo pipefail
B=$(realpath "${1:?the cronwerk binary}")
C=$(realpath "${2:?a folder of built components}")
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/plugins"
cp "$C"/*.wasm "$W/plugins/"
want=$(ls "$W/plugins"/*.wasm | wc -l)
"$B" --data-dir "$W/data" task add tick --implementation Acme.HelloScheduledTask --every 1s >/dev/null
for start in cold warm; do
  t0=$(date +%s%N)
  "$B" --data-dir "$W/data" serve --plugins "$W/plugins" --cache-dir "$W/cache" --listen none 2>"$W/err-$start" &
  pid=$!
  until [ "$("$B" --data-dir "$W/data" plugins --json | grep -c '"status": "ok"')" -ge "$want" ]; do
    kill -0 $pid
    sleep 0.1
  done
  t1=$(date +%s%N)
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  sleep 5
  rss5=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  echo "$start: all $want loaded after $(( (t1 - t0) / 1000000 )) ms; RSS then $((rss / 1024)) MiB, 5 s later $((rss5 / 1024)) MiB"
  kill -TERM $pid
  wait $pid
done
