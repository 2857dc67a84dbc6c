#!/bin/bash
# Before/after `cargo bench` in one script, alternating, so both sides meet the same load:
#   git worktree add /tmp/before <commit>; bench/ab.sh /tmp/before . [rounds]
# Prints the policy bench (criterion medians and its own p50s) and the S/MIME bench ratios.
set -u
before=$1 after=$2 rounds=${3:-2}
for side in "$before" "$after"; do
    (cd "$side" && cargo bench --bench policy --no-run >/dev/null 2>&1 && cargo bench --bench smime --no-run >/dev/null 2>&1)
done
for round in $(seq "$rounds"); do
    for side in "$before" "$after"; do
        echo "=== round $round $side $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
        (cd "$side" && cargo bench --bench policy 2>&1 | grep -E 'p50|time:|^[a-z_]+ .*(rules|entries)')
        (cd "$side" && cargo bench --bench smime 2>&1 | grep -E 'RATIO|median of 5')
    done
done
