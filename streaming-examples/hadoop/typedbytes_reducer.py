#!/usr/bin/env python3
"""Reducer for a typed-bytes job (binary-records-job.sh): reads Hadoop typed-bytes key/value
pairs on stdin, as `kinesis-reader --format typedbytes --fields partition_key,data` wrote them
and Hadoop sorted them, and prints one `<partition key><TAB><base64 of the data>` line per
record, so binary records can go into a text store with kinesis-writer.

Typed bytes: a type code, then the value; this reads the codes a Streaming job passes on:
0 bytes and 7 string (4-byte big-endian length, then the bytes), 1 byte, 2 bool, 3 int,
4 long, 5 float, 6 double. Standard library only.
"""
import base64
import struct
import sys

FIXED = {1: 1, 2: 1, 3: 4, 4: 8, 5: 4, 6: 8}


def read_exact(f, n):
    b = f.read(n)
    if len(b) != n:
        raise EOFError("typed bytes end in the middle of an item")
    return b


def items(f):
    while True:
        code = f.read(1)
        if not code:
            return
        code = code[0]
        if code in (0, 7):
            (length,) = struct.unpack(">i", read_exact(f, 4))
            value = read_exact(f, length)
            yield value.decode("utf-8") if code == 7 else value
        elif code in FIXED:
            yield read_exact(f, FIXED[code])
        else:
            raise ValueError(f"typed bytes type code {code} is not handled here")


def main():
    it = items(sys.stdin.buffer)
    out = sys.stdout
    for key in it:
        value = next(it)
        out.write(f"{key}\t{base64.b64encode(value).decode('ascii')}\n")


if __name__ == "__main__":
    main()
