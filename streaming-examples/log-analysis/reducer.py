#!/usr/bin/env python3
"""Reducer: sums "<key><TAB><count>" lines (sorted by key) and prints the 10 largest.

Standard library only; works as a hadoop-streaming reducer or after `sort` in a pipeline.
Output: "<key><TAB><count>", largest first, ties by key.
"""
import sys

totals = {}
for line in sys.stdin:
    key, _, count = line.rstrip("\n").rpartition("\t")
    if key:
        totals[key] = totals.get(key, 0) + int(count)
for key, count in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:10]:
    print(f"{key}\t{count}")
