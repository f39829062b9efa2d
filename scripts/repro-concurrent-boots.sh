#!/bin/sh
# Boots pairs of guests at the same time, N rounds (default 15), and counts
# the guests that did not end cleanly. Reproducer for the triple fault seen
# when two guests boot together in the standard-KVM lane:
#   cargo xtask lane svm -- sh scripts/repro-concurrent-boots.sh 15
# Needs memtide on PATH and the guest images (cargo xtask images). A guest
# that has not ended after 120 s counts as failed (exit 124).
rounds=${1:-15}
dir=${TMPDIR:-/tmp}/memtide-repro-$$
mkdir -p "$dir"
bad=0
i=1
while [ "$i" -le "$rounds" ]; do
    timeout 120 memtide run --cmd true > "$dir/a.out" 2> "$dir/a.err" &
    a=$!
    timeout 120 memtide run --cmd true > "$dir/b.out" 2> "$dir/b.err"
    b=$?
    wait "$a"
    a=$?
    for g in a b; do
        eval "code=\$$g"
        if [ "$code" -ne 0 ]; then
            bad=$((bad + 1))
            echo "round $i guest $g: exit $code"
            cat "$dir/$g.err"
            tail -5 "$dir/$g.out"
            if [ -n "$MEMTIDE_TEST_CONSOLE_DIR" ]; then
                cp "$dir/$g.out" "$MEMTIDE_TEST_CONSOLE_DIR/repro-round$i-$g.console"
            fi
        fi
    done
    i=$((i + 1))
done
echo "concurrent boots: $bad of $((2 * rounds)) guests failed"
rm -rf "$dir"
[ "$bad" -eq 0 ]
