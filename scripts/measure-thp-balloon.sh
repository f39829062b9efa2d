#!/usr/bin/env bash
# Host residency of a ballooned guest with transparent huge pages.
#
# Boots a 256 MiB guest (full initramfs, RAM prefaulted) whose init churns
# the page cache so free memory is scattered, inflates the balloon to
# $TARGET MiB, waits for actual == target and $SETTLE s for khugepaged, and
# prints Rss / AnonHugePages of the memtide process before and after.
# Run under `flock /tmp/memtide-kvm.lock`. Usage: measure-thp-balloon.sh [TARGET_MIB]
set -euo pipefail
BIN=${BIN:-target/release/memtide}
TARGET=${1:-200}
SETTLE=${SETTLE:-20}
DIR=$(mktemp -d)
SOCK=$DIR/api.sock
# Fill and drop 96 MiB of tmpfs twice so free pages end up interleaved.
CMD='for i in 1 2; do dd if=/dev/zero of=/tmp/f$i bs=1M count=48 2>/dev/null; done; rm /tmp/f1; dd if=/dev/zero of=/tmp/f3 bs=1M count=24 2>/dev/null; rm /tmp/f2; echo churned; sleep 600'
"$BIN" run --memory-mib 256 --balloon --balloon-stats-ms 0 --api-sock "$SOCK" --prefault --cmd "$CMD" >"$DIR/console" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
roll() { awk '/^Rss:|^AnonHugePages:/ {printf "%s %d MiB  ", $1, $2/1024}' /proc/$PID/smaps_rollup; echo; }
for _ in $(seq 120); do grep -q churned "$DIR/console" && break; sleep 1; done
grep -q churned "$DIR/console" || { echo "guest did not get ready"; tail "$DIR/console"; exit 1; }
sleep 2
echo "before:  $(roll)"
"$BIN" ctl --api-sock "$SOCK" balloon set "$TARGET" >/dev/null
for _ in $(seq 180); do
  "$BIN" ctl --api-sock "$SOCK" balloon get | grep -q "\"actual_mib\": *$TARGET\b" && break
  sleep 1
done
"$BIN" ctl --api-sock "$SOCK" balloon get | tr -d '\n'; echo
echo "inflated: $(roll)"
sleep "$SETTLE"
echo "after ${SETTLE}s: $(roll)"
"$BIN" ctl --api-sock "$SOCK" balloon stats | tr -d '\n' | grep -o '"counters".*' || true
echo
