"""Cluster storage and the ``s3`` transport, against a real SeaweedFS S3 server on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from listferry.cluster import INSTALL
from listferry.cluster.storage import AlreadyExists, Storage
from listferry.errors import ListferryError
from listferry.ops.tenants import add_tenant
from listferry.plugins import load_host
from listferry.transport import Endpoint, RemoteFile

from .services import free_port

BINARY = bytes(range(256)) * 64 + b"\r\n\0\xff"


def storage_of(bucket) -> Storage:
    return Storage(bucket.url, endpoint_url=bucket.endpoint_url)


def plain_error(raised: pytest.ExceptionInfo[ListferryError]) -> str:
    """The message, after checking it is one line with nothing of boto's machinery."""
    message = str(raised.value)
    assert "\n" not in message
    assert "Traceback" not in message and "botocore" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    return message


# -- the storage layer ---------------------------------------------------------------------


def test_a_binary_object_goes_up_is_listed_comes_back_byte_for_byte_and_is_deleted(
    bucket, tmp_path: Path
) -> None:
    storage = storage_of(bucket)
    source = tmp_path / "store.sqlite"
    source.write_bytes(BINARY)

    put = storage.put(source, "stores/acme/1.sqlite")
    got = storage.get("stores/acme/1.sqlite", tmp_path / "back.sqlite")

    assert (tmp_path / "back.sqlite").read_bytes() == BINARY
    assert got == put == storage.head("stores/acme/1.sqlite")
    assert (put.key, put.size) == ("stores/acme/1.sqlite", len(BINARY))
    assert storage.list("stores") == [put]
    assert storage.url_of(put.key) == f"{bucket.url}/stores/acme/1.sqlite"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.sqlite", "store.sqlite"]

    storage.delete("stores/acme/1.sqlite")
    assert storage.head("stores/acme/1.sqlite") is None
    assert storage.list() == []


def test_a_listing_of_more_than_a_thousand_objects_takes_every_page(bucket) -> None:
    client = bucket.server.client()
    prefix = bucket.url.split("/", 3)[3]
    keys = [f"{prefix}/many/{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket.name, Key=k, Body=b"x"), keys))
    storage = storage_of(bucket)

    listed = storage.list("many")

    assert sorted(o.key for o in listed) == [k.removeprefix(prefix + "/") for k in keys]
    storage.delete_many(o.key for o in listed)
    assert storage.list("many") == []


def test_top_level_lists_only_the_objects_directly_in_the_folder(bucket) -> None:
    storage = storage_of(bucket)
    for key in ("homes/acme/a.csv", "homes/acme/sub/b.csv", "homes/acme2/c.csv", "x.csv"):
        storage.put_bytes(b"1", key)

    assert [o.key for o in storage.list("homes/acme", top_level=True)] == ["homes/acme/a.csv"]
    assert [o.key for o in storage.list("homes/acme/")] == [
        "homes/acme/a.csv",
        "homes/acme/sub/b.csv",
    ]
    assert [o.key for o in storage.list(top_level=True)] == ["x.csv"]


def test_a_20_mb_file_goes_up_in_parts_and_comes_back_identical(bucket, tmp_path: Path) -> None:
    storage = storage_of(bucket)
    source = tmp_path / "big.sqlite"
    source.write_bytes(os.urandom(20 << 20))
    sent: list[int] = []

    put = storage.put(source, "stores/big/1.sqlite", progress=sent.append)
    storage.get("stores/big/1.sqlite", tmp_path / "back.sqlite")

    assert put.etag.strip('"').endswith("-3")  # three parts of 8 MiB and less
    assert sent[-1] == 20 << 20
    assert (tmp_path / "back.sqlite").read_bytes() == source.read_bytes()


def test_if_absent_refuses_a_taken_key_and_keeps_the_first_content(bucket, tmp_path: Path) -> None:
    storage = storage_of(bucket)
    storage.put_bytes(b"first", "stores/acme/7.sqlite", if_absent=True)
    second = tmp_path / "second"
    second.write_bytes(b"second, longer")

    with pytest.raises(AlreadyExists) as raised:
        storage.put_bytes(b"other", "stores/acme/7.sqlite", if_absent=True)
    with pytest.raises(AlreadyExists):
        storage.put(second, "stores/acme/7.sqlite", if_absent=True)

    assert plain_error(raised) == f"{storage.url_of('stores/acme/7.sqlite')}: already exists"
    storage.get("stores/acme/7.sqlite", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b"first"


def test_if_absent_holds_for_a_file_that_goes_up_in_parts(bucket, tmp_path: Path) -> None:
    storage = storage_of(bucket)
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"1" * (17 << 20))
    second.write_bytes(b"2" * (18 << 20))

    put = storage.put(first, "stores/acme/8.sqlite", if_absent=True)
    with pytest.raises(AlreadyExists):
        storage.put(second, "stores/acme/8.sqlite", if_absent=True)

    assert put.etag.strip('"').endswith("-3")
    assert storage.head("stores/acme/8.sqlite") == put
    uploads = bucket.server.client().list_multipart_uploads(Bucket=bucket.name)
    assert uploads.get("Uploads", []) == []  # the refused upload's parts were dropped


def test_check_passes_where_we_may_write_read_and_delete_and_leaves_nothing(bucket) -> None:
    storage = storage_of(bucket)
    storage.check()
    assert storage.list() == []


def test_a_delete_on_condition_leaves_an_object_whose_etag_changed(bucket) -> None:
    storage = storage_of(bucket)
    first = storage.put_bytes(b"first", "homes/acme/list.csv")
    second = storage.put_bytes(b"other", "homes/acme/list.csv")  # same size, maybe same second

    assert storage.delete("homes/acme/list.csv", if_match=first.etag) is False
    assert storage.head("homes/acme/list.csv") == second
    assert storage.delete("homes/acme/list.csv", if_match=second.etag) is True
    assert storage.head("homes/acme/list.csv") is None


def test_a_folder_shows_its_objects_and_subfolders_and_holds_says_whether_it_is_there(
    bucket,
) -> None:
    storage = storage_of(bucket)
    for key in ("homes/acme/a.csv", "homes/acme/outbox/r.csv", "homes/acme/x/y/z", "homes/acme2/c"):
        storage.put_bytes(b"1", key)

    objects, folders = storage.folder("homes/acme")

    assert [o.key for o in objects] == ["homes/acme/a.csv"]
    assert folders == ["homes/acme/outbox", "homes/acme/x"]
    assert storage.holds("homes/acme/x") and storage.holds("homes/acme/outbox")
    assert not storage.holds("homes/acme/a.csv") and not storage.holds("homes/acme/out")
    assert storage.folder("homes/nobody") == ([], [])


def test_a_stream_reads_from_an_offset_and_never_from_a_replaced_object(bucket) -> None:
    storage = storage_of(bucket)
    first = storage.put_bytes(BINARY, "homes/acme/outbox/r.bin")

    body = storage.stream("homes/acme/outbox/r.bin", 1000, first.etag)
    assert body.read(10) == BINARY[1000:1010]
    assert body.read() == BINARY[1010:]
    storage.put_bytes(b"replaced", "homes/acme/outbox/r.bin")
    with pytest.raises(ListferryError) as raised:
        storage.stream("homes/acme/outbox/r.bin", 0, first.etag)

    where = storage.url_of("homes/acme/outbox/r.bin")
    assert plain_error(raised) == f"{where}: replaced while it was read; read it again"
    assert storage.stream("homes/acme/outbox/r.bin").read() == b"replaced"


def test_a_copy_is_whole_and_refused_when_its_source_was_replaced(bucket) -> None:
    storage = storage_of(bucket)
    first = storage.put_bytes(BINARY, "homes/acme/a.bin")

    copied = storage.copy("homes/acme/a.bin", "homes/acme/done/a.bin", etag=first.etag)
    storage.put_bytes(b"replaced", "homes/acme/a.bin")
    with pytest.raises(ListferryError) as raised:
        storage.copy("homes/acme/a.bin", "homes/acme/done/b.bin", etag=first.etag)

    assert (copied.key, copied.size) == ("homes/acme/done/a.bin", len(BINARY))
    assert storage.stream("homes/acme/done/a.bin").read() == BINARY
    assert plain_error(raised).endswith(": replaced while it was copied; copy it again")
    assert storage.head("homes/acme/done/b.bin") is None


# -- faults, each one plain line -----------------------------------------------------------


def test_a_missing_bucket_is_named(bucket) -> None:
    storage = Storage("s3://no-such-bucket-here/listferry", endpoint_url=bucket.endpoint_url)
    with pytest.raises(ListferryError) as raised:
        storage.check()
    assert plain_error(raised) == "s3://no-such-bucket-here/listferry: no such bucket"
    with pytest.raises(ListferryError, match=r"^s3://no-such-bucket-here/listferry/x: no such b"):
        storage.list("x")


def test_a_wrong_secret_key_is_named_as_such(bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(ListferryError) as raised:
        storage_of(bucket).put_bytes(b"x", "a.csv")
    assert plain_error(raised) == (
        f"{bucket.url}/a.csv: signature does not match: wrong secret key "
        "(check AWS_SECRET_ACCESS_KEY)"
    )


def test_an_unknown_access_key_is_named(bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(ListferryError) as raised:
        storage_of(bucket).list()
    assert plain_error(raised).endswith(": unknown access key: check AWS_ACCESS_KEY_ID")


def test_an_unreachable_endpoint_is_named(bucket, tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    storage = Storage(bucket.url, endpoint_url=nowhere)
    with pytest.raises(ListferryError) as raised:
        storage.get("a.csv", tmp_path / "a.csv")
    assert plain_error(raised) == f"storage {nowhere} unreachable: connection refused"
    assert list(tmp_path.iterdir()) == []


def test_no_credentials_says_what_to_set(
    bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    (tmp_path / "empty").write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    with pytest.raises(ListferryError) as raised:
        storage_of(bucket).head("a.csv")

    assert plain_error(raised) == (
        f"{bucket.url}/a.csv: no credentials: set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (or another AWS credential source)"
    )


def test_a_malformed_endpoint_is_named() -> None:
    with pytest.raises(ListferryError, match=r"^storage 127\.0\.0\.1:1: Invalid endpoint"):
        Storage("s3://bucket/prefix", endpoint_url="127.0.0.1:1")


def test_without_boto3_the_message_says_what_to_install() -> None:
    probe = (
        "import sys; sys.modules['boto3'] = None\n"
        "from listferry.cluster.storage import Storage\n"
        "Storage('s3://bucket/prefix')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    last = done.stderr.strip().splitlines()[-1]
    assert last == (f"listferry.errors.ListferryError: {INSTALL}")


def test_a_url_that_is_not_s3_is_refused() -> None:
    with pytest.raises(ListferryError, match="not an s3://bucket/prefix URL"):
        Storage("https://bucket/prefix")


# -- the s3 transport ----------------------------------------------------------------------


def home_of(bucket, name: str = "acme"):
    """The ``s3`` transport the plugin registers, on tenant ``name``'s home."""
    url = f"{bucket.url}/homes/{name}/"
    return load_host().transports.get("s3")(Endpoint(url, endpoint_url=bucket.endpoint_url))


def test_the_home_lists_complete_files_only_not_hidden_temporary_or_in_subfolders(
    bucket,
) -> None:
    storage = storage_of(bucket)
    for key in (
        "homes/acme/subscriber_list.csv",
        "homes/acme/.subscriber_list.csv.1a2b.part",
        "homes/acme/subscriber_list.csv.filepart",
        "homes/acme/outbox/list.result.txt",
        "homes/acme2/other.csv",
    ):
        storage.put_bytes(b"email\r\n", key)
    prefix = bucket.url.split("/", 3)[3]
    for marker in (f"{prefix}/homes/acme/", f"{prefix}/homes/acme/outbox/"):  # folder markers
        bucket.server.client().put_object(Bucket=bucket.name, Key=marker, Body=b"")

    home = home_of(bucket)

    assert [f.name for f in home.list()] == ["subscriber_list.csv"]
    home.close()


def test_the_home_puts_fetches_and_removes_a_file(bucket, tmp_path: Path) -> None:
    home = home_of(bucket)
    source = tmp_path / "subscriber_list.csv"
    source.write_bytes(BINARY)
    sent: list[int] = []

    home.put(source, "subscriber_list.csv", progress=sent.append)
    [listed] = home.list()
    fetched = home.fetch("subscriber_list.csv", tmp_path / "work.csv")

    assert sent[-1] == len(BINARY)
    assert listed == fetched == RemoteFile("subscriber_list.csv", len(BINARY), listed.mtime)
    assert (tmp_path / "work.csv").read_bytes() == BINARY
    assert home.remove("subscriber_list.csv", listed) is True
    assert home.list() == []
    assert home.remove("subscriber_list.csv", listed) is False


def test_remove_leaves_a_file_replaced_since_it_was_listed(bucket, tmp_path: Path) -> None:
    home = home_of(bucket)
    source = tmp_path / "subscriber_list.csv"
    source.write_text("email\r\nada@example.org\r\n")
    home.put(source, "subscriber_list.csv")
    [listed] = home.list()
    source.write_text("email\r\nada@example.org\r\nbob@example.org\r\n")
    home.put(source, "subscriber_list.csv")  # the CRM's newer upload

    assert home.remove("subscriber_list.csv", listed) is False
    assert [f.size for f in home.list()] == [source.stat().st_size]


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", ""])
def test_a_name_that_is_not_plain_is_refused(bucket, tmp_path: Path, name: str) -> None:
    home = home_of(bucket)
    source = tmp_path / "x"
    source.write_text("x")
    with pytest.raises(ListferryError, match="is not a plain file name"):
        home.put(source, name)
    with pytest.raises(ListferryError, match="is not a plain file name"):
        home.fetch(name, tmp_path / "y")
    with pytest.raises(ListferryError, match="is not a plain file name"):
        home.remove(name, RemoteFile(name, 1, 0.0))
    assert storage_of(bucket).list() == []


def test_a_list_in_an_s3_home_is_applied_removed_and_reported_by_a_sync(
    bucket, ws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole sync through the transport; the server comes from boto3's own
    ``AWS_ENDPOINT_URL_S3`` until the tenant settings name one."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", bucket.endpoint_url)
    home = f"{bucket.url}/homes/acme/"
    add_tenant(ws.app(), "acme", {"home": home, "stable_seconds": 0.1})
    storage = storage_of(bucket)
    rows = "".join(f"p{i}@example.org\r\n" for i in range(30))
    storage.put_bytes(f"email\r\n{rows}".encode(), "homes/acme/subscriber_list.csv")

    [run] = ws.sync_all()

    assert (run.status, run.added, run.reason) == ("applied", 30, None)
    assert [o.key for o in storage.list("homes/acme")] == ["homes/acme/subscriber_list.result.txt"]
