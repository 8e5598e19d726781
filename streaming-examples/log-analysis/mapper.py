#!/usr/bin/env python3
"""Mapper: access-log records -> "<status> <region><TAB>1" for every error (status >= 400).

Input is kinesis-reader's default output, `partition_key<TAB>data`, with tab, newline,
carriage return and backslash in the data escaped as \\t \\n \\r \\\\. Standard library only;
works as a hadoop-streaming mapper or in a Unix pipeline.
"""
import re
import sys

LOG = re.compile(r'"[A-Z]+ [^"]*" (\d{3}) .* region=(\S+)')
UNESCAPE = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: UNESCAPE.get(m.group(1), m.group(0)), s)


for raw in sys.stdin:
    _key, _, data = raw.rstrip("\n").partition("\t")
    m = LOG.search(unescape(data))
    if m and int(m.group(1)) >= 400:
        print(f"{m.group(1)} {m.group(2)}\t1")
