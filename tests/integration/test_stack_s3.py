"""The local S3 server (s3proxy on disk), over the S3 protocol with boto3.

Assumes `covidflow stack up s3` ran; a server that does not answer is a failure, not a skip.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from covidflow import settings
from covidflow.stack.home import StackHome
from covidflow.stack.runner import Runner
from covidflow.stack.services.s3 import S3Service, s3_client

pytestmark = pytest.mark.integration

BUCKET = settings.LANDING_BUCKET
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def home() -> StackHome:
    return StackHome.from_env()


@pytest.fixture(scope="module")
def s3(home: StackHome) -> Any:
    client = s3_client(home, timeout=5.0, retries=1)
    try:
        client.list_buckets()
    except (BotoCoreError, ClientError) as exc:
        pytest.fail(f"S3 is not reachable at {settings.S3_ENDPOINT} ({exc}); start it with `covidflow stack up s3`")
    return client


@pytest.fixture
def prefix(s3: Any) -> Iterator[str]:
    """A fresh key prefix per test, emptied afterwards."""
    name = f"it-s3/{uuid.uuid4().hex[:12]}/"
    yield name
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=name).get("Contents", [])
    for obj in listed:
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])


def test_landing_bucket_is_listed(s3: Any) -> None:
    names = [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
    assert BUCKET in names


def test_put_get_exact_bytes_and_md5_etag(s3: Any, prefix: str) -> None:
    body = b"date,country,cases\n2020-03-01,DEU,130\n" + bytes(range(256))
    key = prefix + "owid/2020-03-01.csv"
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType="text/csv", Metadata={"source": "owid"})
    md5 = hashlib.md5(body).hexdigest()
    assert put["ETag"] == f'"{md5}"'

    got = s3.get_object(Bucket=BUCKET, Key=key)
    assert got["Body"].read() == body
    assert got["ETag"] == f'"{md5}"'
    assert got["ContentLength"] == len(body)
    assert got["ContentType"] == "text/csv"
    assert got["Metadata"] == {"source": "owid"}


def test_list_objects_v2_pages_and_delimits(s3: Any, prefix: str) -> None:
    keys = [prefix + name for name in ("a/1.csv", "a/2.csv", "b/3.csv", "top.csv")]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())

    first = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix, MaxKeys=2)
    assert first["IsTruncated"] is True
    assert [o["Key"] for o in first["Contents"]] == keys[:2]
    second = s3.list_objects_v2(
        Bucket=BUCKET, Prefix=prefix, MaxKeys=2, ContinuationToken=first["NextContinuationToken"]
    )
    assert second["IsTruncated"] is False
    assert [o["Key"] for o in second["Contents"]] == keys[2:]

    delimited = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix, Delimiter="/")
    assert [p["Prefix"] for p in delimited["CommonPrefixes"]] == [prefix + "a/", prefix + "b/"]
    assert [o["Key"] for o in delimited["Contents"]] == [prefix + "top.csv"]


def test_multipart_upload(s3: Any, prefix: str) -> None:
    key = prefix + "big.bin"
    parts = [os.urandom(5 * MIB), os.urandom(MIB + 123)]  # every part but the last must be >= 5 MiB
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    done = []
    for number, part in enumerate(parts, start=1):
        answer = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=part)
        assert answer["ETag"] == f'"{hashlib.md5(part).hexdigest()}"'
        done.append({"PartNumber": number, "ETag": answer["ETag"]})
    completed = s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
    )

    # S3's multipart ETag: MD5 of the concatenated binary part MD5s, then "-<number of parts>".
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"
    assert completed["ETag"] == f'"{expected}"'
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentLength"] == sum(map(len, parts))
    assert head["ETag"] == f'"{expected}"'
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"".join(parts)


def test_object_survives_restart(s3: Any, home: StackHome, prefix: str) -> None:
    key = prefix + "persisted.json"
    body = b'{"survives": "restart"}'
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    runner = Runner([S3Service()], home)
    runner.down()
    assert not runner.status()[0].up, "s3 still answers after `stack down s3`"
    runner.up()
    assert runner.status()[0].up

    got = s3.get_object(Bucket=BUCKET, Key=key)
    assert got["Body"].read() == body
    assert got["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert BUCKET in [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
