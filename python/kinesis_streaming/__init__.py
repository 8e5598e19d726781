"""Helpers for the mappers and reducers that sit between ``kinesis-reader`` and
``kinesis-writer``.

- ``records(lines, data_encoding="escape")`` reads the reader's lines (its
  default fields, ``partition_key<TAB>data``) back into ``(key, data)`` bytes.
- ``encode_line(*fields)`` writes one line the way ``kinesis-writer`` reads it.
- ``KinesisProtocol`` is the same format as an mrjob protocol.

The binaries themselves are installed beside this module (``pip install``
puts ``kinesis-reader`` and ``kinesis-writer`` on the environment's PATH).
"""

import base64
import binascii
import json
import re

__all__ = ["records", "encode_line", "KinesisProtocol", "ENCODINGS"]

#: The values of ``kinesis-reader --data-encoding``, and ``"jsonl"`` for
#: ``--format jsonl``.
ENCODINGS = ("escape", "base64", "hex", "raw", "jsonl")

_UNESCAPES = {b"t": b"\t", b"n": b"\n", b"r": b"\r", b"\\": b"\\"}
_ESCAPED = re.compile(rb"\\([tnr\\])")


def _unescape(field):
    # As kinesis-writer reads it: \t \n \r \\ become their bytes, and any
    # other backslash stays as it is.
    return _ESCAPED.sub(lambda m: _UNESCAPES[m.group(1)], field)


def _decoder(data_encoding):
    if data_encoding == "escape":
        return _unescape
    if data_encoding == "base64":
        return lambda f: base64.b64decode(f, validate=True)
    if data_encoding == "hex":
        return binascii.unhexlify
    if data_encoding == "raw":
        return lambda f: f
    raise ValueError(
        "data_encoding %r: expected one of %s" % (data_encoding, ", ".join(ENCODINGS))
    )


def _as_bytes(line):
    if isinstance(line, str):
        return line.encode("utf-8")
    return bytes(line)


def records(lines, data_encoding="escape"):
    """Yields ``(key, data)`` as bytes for each of the reader's output lines.

    ``lines`` is any iterable of lines (bytes, or str as UTF-8), with or
    without their newline: ``sys.stdin.buffer``, a file, a list.
    ``data_encoding`` is the reader's ``--data-encoding`` (``escape``,
    ``base64``, ``hex``, ``raw``), or ``jsonl`` for ``--format jsonl``. The
    lines must carry the reader's default fields, ``partition_key,data``.
    """
    if data_encoding == "jsonl":
        for number, line in enumerate(lines, 1):
            yield _json_record(_as_bytes(line), number)
        return
    decode = _decoder(data_encoding)
    for number, line in enumerate(lines, 1):
        line = _as_bytes(line)
        if line.endswith(b"\n"):
            line = line[:-1]
        fields = line.split(b"\t")
        if len(fields) != 2:
            raise ValueError(
                "line %d has %d fields: records() reads the reader's default fields, "
                "partition_key<TAB>data (run kinesis-reader without --fields)"
                % (number, len(fields))
            )
        try:
            yield decode(fields[0]), decode(fields[1])
        except (binascii.Error, ValueError) as e:
            raise ValueError(
                "line %d is not %s-encoded (%s): pass the data_encoding the reader "
                "wrote with (its --data-encoding)" % (number, data_encoding, e)
            ) from None


def _json_record(line, number):
    try:
        obj = json.loads(line)
        key = obj["partition_key"].encode("utf-8")
        data = obj["data"]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            "line %d is not one of the reader's JSON lines with partition_key and data (%s)"
            % (number, e)
        ) from None
    if obj.get("data_encoding") == "base64":
        return key, base64.b64decode(data)
    return key, data.encode("utf-8")


def _field_bytes(field):
    if isinstance(field, (bytes, bytearray, memoryview)):
        return bytes(field)
    if isinstance(field, str):
        return field.encode("utf-8")
    if isinstance(field, bool) or field is None:
        raise TypeError(
            "encode_line: %r is not bytes, str or a number; give the text you want "
            "in the field" % (field,)
        )
    if isinstance(field, (int, float)):
        return str(field).encode("ascii")
    raise TypeError("encode_line: %r is not bytes, str or a number" % (field,))


def _escape(b):
    return (
        b.replace(b"\\", b"\\\\")
        .replace(b"\t", b"\\t")
        .replace(b"\n", b"\\n")
        .replace(b"\r", b"\\r")
    )


def encode_line(*fields):
    """One line (bytes, newline included) of ``fields``, escaped as
    ``kinesis-writer`` reads them: tab, newline, carriage return and
    backslash become ``\\t``, ``\\n``, ``\\r`` and ``\\\\``. Fields are bytes,
    str (written as UTF-8) or numbers."""
    if not fields:
        raise TypeError("encode_line needs at least one field")
    return b"\t".join(_escape(_field_bytes(f)) for f in fields) + b"\n"


class KinesisProtocol(object):
    """An mrjob protocol for the same lines: ``read`` gives ``(key, data)``
    bytes from a ``kinesis-reader`` line, ``write`` makes a ``kinesis-writer``
    line from a key and a value (a value that is a list or tuple becomes one
    field each). Use it as ``INPUT_PROTOCOL`` or ``OUTPUT_PROTOCOL``."""

    def __init__(self, data_encoding="escape"):
        self.data_encoding = data_encoding

    def read(self, line):
        ((key, data),) = records([line], self.data_encoding)
        return key, data

    def write(self, key, value):
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        # mrjob adds the newline itself.
        return encode_line(key, *values)[:-1]
