#!/usr/bin/env python3
"""Lists unwrap()/expect() calls under src/ outside test code (#[cfg(test)] modules and
#[test] functions), each with the comment above it that says why it cannot fail.
Run from the repository root: scripts/unwrap-audit.py  (exit 1 if one has no comment)."""
import glob
import re
import sys

found = missing = 0
for path in sorted(glob.glob("src/**/*.rs", recursive=True)):
    lines = open(path, encoding="utf-8").read().split("\n")
    depth, test_depth, pending = 0, None, False
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("#[cfg(test)]") or s.startswith("#[test]"):
            pending = True
        if pending and "{" in line and test_depth is None:
            test_depth, pending = depth, False
        depth += line.count("{") - line.count("}")
        if test_depth is not None:
            if depth <= test_depth:
                test_depth = None
            continue
        if re.search(r"\.(unwrap|expect)\(", line) and not s.startswith("//"):
            found += 1
            why = [x.strip() for x in lines[max(0, i - 4):i + 1] if "//" in x]
            if not why:
                missing += 1
            print(f"{path}:{i + 1}: {s[:80]}  -- {why[-1] if why else 'NO REASON GIVEN'}")
print(f"{found} outside tests, {missing} without a reason")
sys.exit(1 if missing else 0)
