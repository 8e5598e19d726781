"""The installed package against the emulator: the wheel's own kinesis-reader
and kinesis-writer, read and written through kinesis_streaming."""

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

import kinesis_streaming
from kinesis_streaming import encode_line, records

ENDPOINT = os.environ.get("KINESIS_STREAMING_TEST_ENDPOINT")
if not ENDPOINT:
    pytest.fail(
        "KINESIS_STREAMING_TEST_ENDPOINT is not set: run these tests through scripts/test, "
        "which starts the emulator",
        pytrace=False,
    )

ENV = dict(
    os.environ,
    AWS_ACCESS_KEY_ID="test",
    AWS_SECRET_ACCESS_KEY="test",
    AWS_REGION="us-east-1",
    AWS_ENDPOINT_URL=ENDPOINT,
    AWS_EC2_METADATA_DISABLED="true",
)


def installed(name):
    """The binary the wheel put beside this environment's python."""
    path = shutil.which(name, path=os.path.dirname(sys.executable))
    assert path, "%s is not installed in %s" % (name, os.path.dirname(sys.executable))
    return path


def client(service):
    import boto3

    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture(scope="module")
def stream():
    """A one-shard stream holding records with every byte value."""
    k = client("kinesis")
    name = "wheel-" + uuid.uuid4().hex[:8]
    k.create_stream(StreamName=name, ShardCount=1)
    for _ in range(100):
        if k.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            break
        time.sleep(0.1)
    sent = [
        (b"key\t%d" % i, bytes([i]) * 5 + bytes(range(256)) + bytes([i]))
        for i in range(0, 256, 17)
    ]
    for key, data in sent:
        # Partition keys are Unicode text; the tab in them is what matters here.
        k.put_record(StreamName=name, PartitionKey=key.decode(), Data=data)
    return name, sent


def test_the_module_is_the_installed_one():
    assert not kinesis_streaming.__file__.startswith(os.path.dirname(os.path.dirname(__file__)))


@pytest.mark.parametrize("encoding", ["escape", "base64", "hex", "jsonl"])
def test_records_read_by_the_installed_reader_come_back_whole(stream, encoding):
    name, sent = stream
    args = [installed("kinesis-reader"), "--stream", name, "-q"]
    if encoding == "jsonl":
        args += ["--format", "jsonl"]
    else:
        args += ["--data-encoding", encoding]
    out = subprocess.run(args, env=ENV, capture_output=True, check=True).stdout
    assert list(records(out.splitlines(keepends=True), encoding)) == sent


def test_lines_made_by_encode_line_are_stored_as_given_by_the_installed_writer():
    s3 = client("s3")
    bucket = "wheel-" + uuid.uuid4().hex[:8]
    s3.create_bucket(Bucket=bucket)
    lines = [encode_line(b"k%d" % i, bytes(range(256)), i) for i in range(50)]
    target = "s3://%s/out/part.tsv" % bucket
    subprocess.run(
        [installed("kinesis-writer"), target, "-q"],
        input=b"".join(lines),
        env=ENV,
        check=True,
    )
    body = s3.get_object(Bucket=bucket, Key="out/part.tsv")["Body"].read()
    assert body == b"".join(lines)


def test_both_binaries_say_their_version_and_commit():
    for name in ["kinesis-reader", "kinesis-writer"]:
        out = subprocess.run([installed(name), "--version"], capture_output=True, check=True)
        text = out.stdout.decode()
        assert text.startswith(name + " 0."), text
        assert "(" in text and "unknown" not in text, text
