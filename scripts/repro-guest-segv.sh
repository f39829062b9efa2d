#!/bin/sh
# Boots N guests one after another, each running one shell command through
# `memtide run --cmd`, and counts the boots in which a guest process died:
# a kernel fault line (`sh[26]: segfault at 0 ...`, `traps: ...`), the
# init's `command exited with status N` with N != 0, a process the init
# reaped `killed by signal`, a dead init, or memtide exiting non-zero.
# Reproducer for the random SIGSEGV of guest processes on the nested
# kvm_pvm host (docs/nested-host.md, "Guest system calls").
#
# Usage: scripts/repro-guest-segv.sh N COMMAND [memtide run options...]
#   scripts/repro-guest-segv.sh 20 'true'
#   scripts/repro-guest-segv.sh 10 'sleep 15; echo SLEPT-OK'
#   scripts/repro-guest-segv.sh 10 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done' -m 512
#
# Environment:
#   MEMTIDE            the binary (default: target/release/memtide, else memtide on PATH)
#   MEMTIDE_LOCK       a lock file each round takes with flock (the shared
#                      /tmp/memtide-kvm.lock on the CI hosts), so that other
#                      users get turns between rounds; do not also wrap the
#                      script in flock on the same file, or it waits forever
#   MEMTIDE_REPRO_KEEP a directory that receives the console of every failed boot
#   MEMTIDE_REPRO_TIMEOUT  seconds one boot may take (default 600)
#   MEMTIDE_REPRO_PARALLEL guests booted at the same time in each round (default 1)
#   MEMTIDE_REPRO_APPEND   extra guest kernel arguments (default
#                      print-fatal-signals=1, so a dying process's registers
#                      are on the console)
# Exit status: 0 when no boot failed, 1 otherwise.
set -u
if [ "$#" -lt 2 ]; then
    sed -n '2,/^set -u/p' "$0" | sed '$d'
    exit 2
fi
runs=$1
cmd=$2
shift 2
if [ -z "${MEMTIDE:-}" ]; then
    if [ -x target/release/memtide ]; then
        MEMTIDE=target/release/memtide
    else
        MEMTIDE=memtide
    fi
fi
timeout=${MEMTIDE_REPRO_TIMEOUT:-600}
parallel=${MEMTIDE_REPRO_PARALLEL:-1}
append=${MEMTIDE_REPRO_APPEND-print-fatal-signals=1}
dir=$(mktemp -d "${TMPDIR:-/tmp}/memtide-segv.XXXXXX")
trap 'rm -rf "$dir"' EXIT
# Boots guest $1 of round $2 (console in $dir/r$2-g$1.console, exit code
# in $dir/r$2-g$1.code).
boot() {
    bout=$dir/r$2-g$1.console
    bcode=$dir/r$2-g$1.code
    shift 2
    timeout "$timeout" "$MEMTIDE" run --append "$append" --cmd "$cmd" "$@" > "$bout" 2>&1
    echo $? > "$bcode"
}
[ -n "${MEMTIDE_LOCK:-}" ] && exec 9>>"$MEMTIDE_LOCK"
bad=0
total=0
i=1
while [ "$i" -le "$runs" ]; do
    [ -n "${MEMTIDE_LOCK:-}" ] && flock 9
    start=$(date +%s)
    g=1
    while [ "$g" -lt "$parallel" ]; do
        boot "$g" "$i" "$@" &
        g=$((g + 1))
    done
    boot "$parallel" "$i" "$@"
    wait
    secs=$(($(date +%s) - start))
    [ -n "${MEMTIDE_LOCK:-}" ] && flock -u 9
    g=1
    while [ "$g" -le "$parallel" ]; do
        total=$((total + 1))
        out=$dir/r$i-g$g.console
        code=$(cat "$dir/r$i-g$g.code")
        name="boot $i"
        [ "$parallel" -gt 1 ] && name="round $i guest $g"
        faults=$(grep -E ']: segfault at |^\[ *[0-9.]+\] traps: |potentially unexpected fatal signal|killed by signal|command exited with status [1-9]|Attempted to kill init|Kernel panic' "$out")
        if [ "$code" -ne 0 ] || [ -n "$faults" ]; then
            bad=$((bad + 1))
            echo "$name: FAILED (memtide exit $code, ${secs}s)"
            [ -n "$faults" ] && echo "$faults" | sed 's/^/    /'
            grep -E '^memtide: ' "$out" | sed 's/^/    /'
            if [ -n "${MEMTIDE_REPRO_KEEP:-}" ]; then
                mkdir -p "$MEMTIDE_REPRO_KEEP"
                cp "$out" "$MEMTIDE_REPRO_KEEP/segv-$$-r$i-g$g.console"
            fi
        else
            echo "$name: ok (${secs}s)"
        fi
        g=$((g + 1))
    done
    i=$((i + 1))
done
echo "guest segfault repro: $bad of $total guests failed ($runs rounds of $parallel; command: $cmd; options: $*)"
[ "$bad" -eq 0 ]
