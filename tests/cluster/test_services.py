"""The cluster tests' own parts answer: a database and a bucket of each test's own."""

from __future__ import annotations


def test_database_is_new_and_writable(database_url: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        conn.execute("CREATE TABLE t (x int)")
    assert tables == (0,)


def test_bucket_checks_credentials(bucket) -> None:
    import boto3
    import botocore.exceptions
    import pytest

    client = bucket.server.client()
    client.put_object(Bucket=bucket.name, Key="listferry/a.txt", Body=b"a")
    assert client.get_object(Bucket=bucket.name, Key="listferry/a.txt")["Body"].read() == b"a"
    wrong = boto3.client(
        "s3",
        endpoint_url=bucket.endpoint_url,
        aws_access_key_id="listferry-test",
        aws_secret_access_key="not-the-secret",
        region_name="us-east-1",
    )
    with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
        wrong.list_objects_v2(Bucket=bucket.name)
