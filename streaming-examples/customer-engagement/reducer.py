#!/usr/bin/env python3
"""Reducer: "<site><TAB><category><TAB><clicks><TAB><impressions>" lines (sorted by site) ->
the ad categories of each site ranked by click-through rate:
"<site><TAB><rank><TAB><category><TAB><ctr><TAB><clicks><TAB><impressions>".

Categories with fewer than MIN_IMPRESSIONS impressions are left out (too few to rank).
Standard library only.
"""
import sys

MIN_IMPRESSIONS = 30


def flush(site, totals):
    ranked = sorted(
        ((c / v, cat, c, v) for cat, (c, v) in totals.items() if v >= MIN_IMPRESSIONS),
        key=lambda t: (-t[0], t[1]),
    )
    for rank, (ctr, cat, c, v) in enumerate(ranked, 1):
        print(f"{site}\t{rank}\t{cat}\t{ctr:.4f}\t{c}\t{v}")


site, totals = None, {}
for line in sys.stdin:
    s, category, clicks, views = line.rstrip("\n").split("\t")
    if s != site:
        if site is not None:
            flush(site, totals)
        site, totals = s, {}
    c, v = totals.get(category, (0, 0))
    totals[category] = (c + int(clicks), v + int(views))
if site is not None:
    flush(site, totals)
