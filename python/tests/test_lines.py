"""kinesis_streaming's line helpers, on their own."""

import base64
import json

import pytest

from kinesis_streaming import ENCODINGS, KinesisProtocol, encode_line, records

EVERY_BYTE = bytes(range(256))


def test_every_byte_value_round_trips_alone_and_together():
    for b in range(256):
        data = bytes([b]) * 3 + b"x" + bytes([b])
        key = b"k" + bytes([b])
        assert list(records([encode_line(key, data)])) == [(key, data)], b
    line = encode_line(EVERY_BYTE, EVERY_BYTE)
    assert line.count(b"\n") == 1 and line.count(b"\t") == 1
    assert list(records([line])) == [(EVERY_BYTE, EVERY_BYTE)]


def test_backslashes_that_are_not_escapes_stay():
    # As kinesis-writer reads them: only \t \n \r \\ are escapes.
    assert list(records([b"C:\\path\\x\tend\\"])) == [(b"C:\\path\\x", b"end\\")]
    assert list(records([b"a\\\\t\tb"])) == [(b"a\\t", b"b")]


def test_each_data_encoding_of_the_reader():
    key, data = b"user-1", EVERY_BYTE
    lines = {
        "base64": base64.b64encode(key) + b"\t" + base64.b64encode(data) + b"\n",
        "hex": key.hex().encode() + b"\t" + data.hex().encode() + b"\n",
        "raw": b"user-1\tplain data\n",
    }
    assert list(records([lines["base64"]], "base64")) == [(key, data)]
    assert list(records([lines["hex"]], "hex")) == [(key, data)]
    assert list(records([lines["raw"]], "raw")) == [(key, b"plain data")]


def test_json_lines_with_text_and_with_binary_data():
    text = json.dumps({"partition_key": "k", "data": "caf\u00e9\ttab"}) + "\n"
    binary = json.dumps(
        {"partition_key": "k", "data_encoding": "base64", "data": base64.b64encode(EVERY_BYTE).decode()}
    )
    got = list(records([text.encode(), binary], "jsonl"))
    assert got == [(b"k", "caf\u00e9\ttab".encode()), (b"k", EVERY_BYTE)]


def test_bad_lines_say_which_line_and_what_to_do():
    with pytest.raises(ValueError, match=r"line 2 has 3 fields.*without --fields"):
        list(records([b"a\tb\n", b"shardId-0\t49\tdata\n"]))
    with pytest.raises(ValueError, match=r"line 1 is not base64-encoded"):
        list(records([b"k\tnot base64!\n"], "base64"))
    with pytest.raises(ValueError, match=r"line 1 is not one of the reader's JSON lines"):
        list(records([b"{}"], "jsonl"))
    with pytest.raises(ValueError, match=r"expected one of escape, base64, hex, raw, jsonl"):
        list(records([b"k\tv"], "utf-16"))
    assert ENCODINGS == ("escape", "base64", "hex", "raw", "jsonl")


def test_encode_line_takes_text_bytes_and_numbers():
    assert encode_line("caf\u00e9", b"a\nb", 3, 2.5) == "caf\u00e9\ta\\nb\t3\t2.5\n".encode()
    with pytest.raises(TypeError):
        encode_line(None)
    with pytest.raises(TypeError):
        encode_line()


def test_mrjob_protocol_reads_the_reader_and_writes_the_writer():
    p = KinesisProtocol()
    assert p.read(encode_line(b"k\t", b"v\n")) == (b"k\t", b"v\n")
    assert p.write(b"error", [b"42", "x\ty"]) == b"error\t42\tx\\ty"
    assert p.write("total", 7) == b"total\t7"
    assert KinesisProtocol("hex").read(b"6b\t00ff") == (b"k", b"\x00\xff")
