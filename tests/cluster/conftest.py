"""Fixtures of the cluster tests: a fresh PostgreSQL database and S3 bucket per test.

The servers are found or started once per session (tests/cluster/services.py). Where
one is not installed the tests skip and say what to install, except under
``LISTFERRY_REQUIRE_CLUSTER=1`` (.ci/run sets it), where a missing part fails them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from listferry.cluster import INSTALL

from .services import ACCESS_KEY, REGION, SECRET_KEY, Missing, Postgres, Seaweed

pytest.importorskip("psycopg", reason=INSTALL)
pytest.importorskip("boto3", reason=INSTALL)


def _missing(exc: Missing) -> None:
    if os.environ.get("LISTFERRY_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"LISTFERRY_REQUIRE_CLUSTER=1 but {exc}")
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    from .services import find_postgres

    try:
        server = find_postgres(tmp_path_factory.mktemp("postgres"))
    except Missing as exc:
        _missing(exc)
    yield server
    server.stop(remove=True)


@pytest.fixture
def database_url(postgres: Postgres) -> Iterator[str]:
    """The URL of a new, empty database of its own."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    from .services import start_seaweed

    try:
        server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    except Missing as exc:
        _missing(exc)
    yield server
    server.stop()


@dataclass(frozen=True)
class Bucket:
    """An empty place in a bucket: ``url`` (``s3://NAME/prefix``), its server's endpoint."""

    name: str
    url: str
    endpoint_url: str
    server: Seaweed


@pytest.fixture(scope="session")
def shared_bucket(seaweed: Seaweed) -> str:
    """One bucket for the session: each test has a prefix of its own in it (a bucket
    each would cost SeaweedFS volumes of their own)."""
    return seaweed.create_bucket()


@pytest.fixture
def bucket(seaweed: Seaweed, shared_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A prefix of its own in the session's bucket, with the credentials in the usual
    AWS variables."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    prefix = "t-" + secrets.token_hex(6)
    return Bucket(shared_bucket, f"s3://{shared_bucket}/{prefix}", seaweed.endpoint_url, seaweed)
