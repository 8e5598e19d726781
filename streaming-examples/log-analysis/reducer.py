#!/usr/bin/env python3
"""Reducer: sums "<key><TAB><count>" lines (sorted by key).

    reducer.py           the 10 largest totals, largest first (ties by key)
    reducer.py --all     every key's total, in key order (sorted, as kinesis-writer's add mode wants)

Standard library only; works as a hadoop-streaming reducer or after `sort` in a pipeline.
"""
import sys

totals = {}
for line in sys.stdin:
    key, _, count = line.rstrip("\n").rpartition("\t")
    if key:
        totals[key] = totals.get(key, 0) + int(count)
if "--all" in sys.argv[1:]:
    for key in sorted(totals):
        print(f"{key}\t{totals[key]}")
else:
    for key, count in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:10]:
        print(f"{key}\t{count}")
