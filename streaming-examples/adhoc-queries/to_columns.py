#!/usr/bin/env python3
"""Mapper: access-log records -> one tab-separated row per request, in the column order of
tables.hql: ip, request_time (UTC, "YYYY-MM-DD HH:MM:SS"), method, path, status, bytes,
browser, region. Lines that are not access-log lines are skipped (counted on stderr).
Input is kinesis-reader's default output (`partition_key<TAB>data`). Standard library only.
"""
import re
import sys
from datetime import datetime

LOG = re.compile(
    r'^(\S+) \S+ \S+ \[([^\]]+)\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+) "[^"]*" "([^"]*)" region=(\S+)'
)
UNESCAPE = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: UNESCAPE.get(m.group(1), m.group(0)), s)


skipped = 0
for raw in sys.stdin:
    _key, _, data = raw.rstrip("\n").partition("\t")
    m = LOG.match(unescape(data))
    if not m:
        skipped += 1
        continue
    ip, when, method, path, status, size, agent, region = m.groups()
    t = datetime.strptime(when, "%d/%b/%Y:%H:%M:%S %z").strftime("%Y-%m-%d %H:%M:%S")
    browser = agent.split()[-1].split("/")[0]
    print("\t".join([ip, t, method, path.replace("\t", " "), status, size, browser, region]))
if skipped:
    print(f"reporter:counter:AccessLogs,skipped,{skipped}", file=sys.stderr)
