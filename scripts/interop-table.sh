#!/usr/bin/env bash
# Puts the interop matrix written by the last test run (target/interop-matrix.md, made by
# tests/interop_clients.rs and tests/interop_upstreams.rs) into README.md, between
#   <!-- interop-matrix:begin --> and <!-- interop-matrix:end -->
# The table is never typed by hand: run the two tests, then this script.
# usage: scripts/interop-table.sh [MATRIX.md [README.md]]
set -euo pipefail
cd "$(dirname "$0")/.."
matrix=${1:-target/interop-matrix.md}
readme=${2:-README.md}
[ -s "$matrix" ] || {
    echo "interop-table: $matrix is missing; run cargo test --test interop_clients --test interop_upstreams" >&2
    exit 1
}
grep -q '^<!-- interop-matrix:begin -->$' "$readme" && grep -q '^<!-- interop-matrix:end -->$' "$readme" || {
    echo "interop-table: $readme lacks the interop-matrix:begin/end markers" >&2
    exit 1
}
stamp="Written by the test run of $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
tmp=$(mktemp)
awk -v matrix="$matrix" -v stamp="$stamp" '
    $0 == "<!-- interop-matrix:begin -->" {
        print; print ""; print stamp; print ""
        while ((getline line < matrix) > 0) print line
        print ""; skipping = 1; next
    }
    $0 == "<!-- interop-matrix:end -->" { skipping = 0 }
    !skipping { print }
' "$readme" > "$tmp"
cat "$tmp" > "$readme"
rm -f "$tmp"
echo "interop-table: $readme updated from $matrix"
