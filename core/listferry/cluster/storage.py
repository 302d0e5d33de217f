"""S3-compatible storage, as cluster mode uses it: one bucket and a prefix below it.

A :class:`Storage` is a boto3 client for ``s3://bucket/prefix`` on AWS or on any
S3-compatible server (``endpoint_url``). Keys given to it are relative to the prefix.
Credentials come from the usual AWS chain (environment, shared files, instance or
container roles), never from listferry's config.

Every fault of botocore or boto3 becomes one :class:`listferry.ListferryError` line that
names the place (``s3://bucket/key``, or the server when it cannot be reached) and the
reason in plain words, so no traceback ever reaches a user.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from listferry.cluster import INSTALL
from listferry.errors import ListferryError

#: Files past this size go up in parts, several at a time.
MULTIPART_THRESHOLD = 16 << 20
#: The size of one part (S3 wants at least 5 MiB, and at most 10,000 parts).
PART_SIZE = 8 << 20
MAX_PARTS = 10_000
#: Keys one DeleteObjects request may name.
DELETE_BATCH = 1000
#: Connections one client keeps open to the storage: each download a server streams
#: holds one while it lasts (beyond this many, extra ones are made and not kept).
MAX_CONNECTIONS = 64

#: What an AWS error code means, in words a user can act on.
REASONS = {
    "NoSuchBucket": "no such bucket",
    "NoSuchKey": "no such object",
    "404": "not found",
    "NotFound": "not found",
    "AccessDenied": "access denied (check AWS_ACCESS_KEY_ID and what its user may do "
    "in this bucket)",
    "403": "access denied (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and what "
    "their user may do in this bucket)",
    "AllAccessDisabled": "access denied: all access to this bucket is disabled",
    "InvalidAccessKeyId": "unknown access key: check AWS_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "signature does not match: wrong secret key (check "
    "AWS_SECRET_ACCESS_KEY)",
    "ExpiredToken": "the session token has expired: renew AWS_SESSION_TOKEN",
    "InvalidToken": "the session token is not valid: check AWS_SESSION_TOKEN",
    "RequestTimeTooSkewed": "this machine's clock is too far from the storage's: "
    "set the clock right",
    "InvalidBucketName": "not a valid bucket name",
    "PreconditionFailed": "already exists",
    "SlowDown": "the storage asks to slow down; try again later",
    "ServiceUnavailable": "the storage is unavailable; try again later",
    "InternalError": "the storage failed (internal error); try again later",
}
NO_CREDENTIALS = (
    "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "(or another AWS credential source)"
)


class AlreadyExists(ListferryError):
    """A write with ``if_absent`` found the key taken: the first object stays."""


class StoredObject(NamedTuple):
    """An object in storage: its key (relative to the storage's prefix), size in bytes,
    mtime (epoch seconds, as the server keeps it: often whole seconds) and ETag (as the
    server gives it, quotes and all)."""

    key: str
    size: int
    mtime: float
    etag: str


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> ``("bucket", "some/prefix")``; the prefix may be empty."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ListferryError(f"{url}: not an s3://bucket/prefix URL")
    return parts.netloc, parts.path.strip("/")


#: The environment that decides a client's credentials: a client is shared while it holds.
_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_DEFAULT_REGION",
)
_clients: dict[tuple[str | None, ...], Any] = {}


def _client(endpoint_url: str | None, region: str | None) -> Any:
    """The process's boto3 S3 client for this server, region and credentials: making one
    costs a tenth of a second or more, and one is safe to share between threads."""
    key = (endpoint_url, region, *(os.environ.get(name) for name in _CREDENTIAL_VARIABLES))
    if key not in _clients:
        _clients[key] = _new_client(endpoint_url, region)
    return _clients[key]


def _new_client(endpoint_url: str | None, region: str | None) -> Any:
    """One boto3 S3 client: short connect timeout, a few standard retries, and path-style
    addresses on an S3-compatible server (``bucket.host`` rarely resolves there)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ListferryError(INSTALL) from None
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=MAX_CONNECTIONS,
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    from botocore.exceptions import BotoCoreError

    try:
        session = boto3.session.Session(botocore_session=_botocore_session())
        return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
    except (BotoCoreError, ValueError) as exc:  # ValueError: a malformed endpoint URL
        raise ListferryError(f"storage {endpoint_url or 'AWS'}: {_one_line(str(exc))}") from None


#: The process's one loader of botocore's data (S3's models, the endpoint rules).
_loader: Any = None


def _botocore_session() -> Any:
    """A new botocore session that reads S3's models through the process's one loader:
    reading and parsing them (the API, the endpoint rules) is most of what a new client
    costs, and a loader keeps what it has read."""
    global _loader
    import botocore.loaders
    import botocore.session

    session = botocore.session.get_session()
    if _loader is None:
        _loader = botocore.loaders.create_loader(session.get_config_variable("data_path"))
    session.register_component("data_loader", _loader)
    return session


def warm_up() -> None:
    """Have the process's loader read what every S3 client reads, by making a client
    that is never used (no request, no credentials looked up): the worker's fork server
    does this once, for every job's process it forks."""
    try:
        _botocore_session().create_client(
            "s3", region_name="us-east-1", aws_access_key_id="-", aws_secret_access_key="-"
        )
    except Exception:  # a client made later says what is wrong, in its own words
        return


class Storage:
    """A bucket and a prefix in S3-compatible storage; keys are relative to the prefix.

    ``endpoint_url`` is the server's URL (``None``: AWS's own); ``region`` defaults to
    the AWS chain's (``AWS_DEFAULT_REGION``, the config file).
    """

    def __init__(
        self, url: str, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        self.bucket, self.prefix = split_url(url)
        self.client = _client(endpoint_url, region)
        self.endpoint_url: str = self.client.meta.endpoint_url

    # -- names ----------------------------------------------------------------------------

    def key(self, *parts: str) -> str:
        """The full key of ``parts`` joined below the prefix (``homes``, ``acme``, ``x.csv``
        -> ``prefix/homes/acme/x.csv``)."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def url_of(self, key: str) -> str:
        """``s3://bucket/prefix/key``: where the relative ``key`` is, for messages."""
        return f"s3://{self.bucket}/{self.key(key)}"

    def _relative(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _folder(self, prefix: str) -> str:
        """The full key prefix of the folder ``prefix`` (empty: the whole prefix)."""
        full = self.key(prefix)
        return full + "/" if full else ""

    # -- reading --------------------------------------------------------------------------

    def list(self, prefix: str = "", top_level: bool = False) -> list[StoredObject]:
        """Every object in the folder ``prefix`` (relative; empty for all), page after
        page; with ``top_level``, only those directly in it, not in its subfolders."""
        folder = self._folder(prefix)
        request = {"Bucket": self.bucket, "Prefix": folder}
        if top_level:
            request["Delimiter"] = "/"
        found = []
        with self._plain(prefix):
            for page in self._pages(request):
                found += [self._listed(item) for item in page.get("Contents", ())]
        return found

    def folder(self, prefix: str) -> tuple[list[StoredObject], list[str]]:
        """What the folder ``prefix`` holds directly: its objects, and its subfolders as
        relative keys without the trailing ``/`` (a subfolder is there while any object
        is below it), page after page."""
        request = {"Bucket": self.bucket, "Prefix": self._folder(prefix), "Delimiter": "/"}
        objects, folders = [], []
        with self._plain(prefix):
            for page in self._pages(request):
                objects += [self._listed(item) for item in page.get("Contents", ())]
                folders += [
                    self._relative(item["Prefix"]).removesuffix("/")
                    for item in page.get("CommonPrefixes", ())
                ]
        return objects, folders

    def holds(self, prefix: str) -> bool:
        """Whether any object is below the folder ``prefix``."""
        request = {"Bucket": self.bucket, "Prefix": self._folder(prefix), "MaxKeys": 1}
        with self._plain(prefix):
            return bool(self.client.list_objects_v2(**request).get("Contents"))

    def _pages(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while True:
            page = self.client.list_objects_v2(**request)
            yield page
            if not page.get("IsTruncated"):
                return
            request = {**request, "ContinuationToken": page["NextContinuationToken"]}

    def _listed(self, item: dict[str, Any]) -> StoredObject:
        return StoredObject(
            self._relative(item["Key"]),
            item["Size"],
            item["LastModified"].timestamp(),
            item.get("ETag", ""),
        )

    def head(self, key: str) -> StoredObject | None:
        """What is stored under ``key``, or ``None`` when nothing is."""
        from botocore.exceptions import ClientError

        with self._plain(key):
            try:
                answer = self.client.head_object(Bucket=self.bucket, Key=self.key(key))
            except ClientError as exc:
                if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
        return _stored(key, answer)

    def get(self, key: str, dest: Path) -> StoredObject:
        """Download ``key`` whole to ``dest``, and say what was downloaded.

        The bytes go to a hidden temporary file beside ``dest`` that replaces it only once
        every byte the object holds has arrived; a short read raises and leaves ``dest``
        as it was.
        """
        fd, temp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, self._plain(key):
                answer = self.client.get_object(Bucket=self.bucket, Key=self.key(key))
                got = 0
                for chunk in answer["Body"].iter_chunks(1 << 20):
                    out.write(chunk)
                    got += len(chunk)
                if got != answer["ContentLength"]:
                    raise ListferryError(
                        f"{self.url_of(key)}: the download was cut short "
                        f"({got} of {answer['ContentLength']} bytes)"
                    )
            os.replace(temp, dest)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return _stored(key, answer)

    def stream(self, key: str, start: int = 0, etag: str | None = None) -> Any:
        """The bytes of ``key`` from ``start`` on, as a body to read in parts (botocore's
        ``StreamingBody``: ``read(n)``, ``close()``); nothing is read before it is asked
        for. With ``etag``, only that version of the object: one replaced since raises,
        saying so, rather than give part of another file."""
        from botocore.exceptions import ClientError

        request = {"Bucket": self.bucket, "Key": self.key(key), "Range": f"bytes={start}-"}
        if etag:
            request["IfMatch"] = etag
        with self._plain(key):
            try:
                return self.client.get_object(**request)["Body"]
            except ClientError as exc:
                if etag and _code(exc) in ("PreconditionFailed", "412"):
                    raise ListferryError(
                        f"{self.url_of(key)}: replaced while it was read; read it again"
                    ) from None
                raise

    # -- writing --------------------------------------------------------------------------

    def put(
        self,
        source: Path,
        key: str,
        if_absent: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> StoredObject:
        """Upload the file ``source`` as ``key``, and say what storage then holds there.

        An object becomes visible only whole, so a reader never sees part of it. A file
        past :data:`MULTIPART_THRESHOLD` goes up in parts. With ``if_absent`` the write
        is conditional (``If-None-Match: *``, on the single PUT or on the completion of a
        multipart upload) and a key already taken raises :class:`AlreadyExists`.
        ``progress`` is given the bytes sent so far, as they go (not with ``if_absent``).
        """
        self.write(source, key, if_absent, progress)
        return self._written(key)

    def write(
        self,
        source: Path,
        key: str,
        if_absent: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Upload ``source`` as ``key`` as :meth:`put` does, without asking storage what it
        then holds: a request fewer, where only the write matters (a run's files)."""
        with self._plain(key, if_absent):
            small = source.stat().st_size <= MULTIPART_THRESHOLD
            if if_absent and not small:
                self._upload_parts_if_absent(source, key)
            elif if_absent or (small and progress is None):
                with source.open("rb") as body:  # one request, no transfer threads
                    self._put_object(key, body, if_absent)
            else:
                self._upload(source, key, progress)

    def put_bytes(self, data: bytes, key: str, if_absent: bool = False) -> StoredObject:
        """Store ``data`` as ``key``; ``if_absent`` as for :meth:`put`."""
        with self._plain(key, if_absent):
            self._put_object(key, data, if_absent)
        return self._written(key)

    def _put_object(self, key: str, body: Any, if_absent: bool = True) -> None:
        condition = {"IfNoneMatch": "*"} if if_absent else {}
        self.client.put_object(Bucket=self.bucket, Key=self.key(key), Body=body, **condition)

    def _upload(self, source: Path, key: str, progress: Callable[[int], None] | None) -> None:
        from boto3.s3.transfer import TransferConfig

        sent = 0

        def count(amount: int) -> None:
            nonlocal sent
            sent += amount
            if progress:
                progress(sent)

        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=_part_size(source.stat().st_size),
            max_concurrency=4,
        )
        self.client.upload_file(
            str(source), self.bucket, self.key(key), Config=config, Callback=count
        )

    def _upload_parts_if_absent(self, source: Path, key: str) -> None:
        """A multipart upload whose completion is conditional: boto3's ``upload_file``
        cannot send ``If-None-Match``, so the parts go up one after the other here."""
        full = self.key(key)
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=full)["UploadId"]
        part_size = _part_size(source.stat().st_size)
        try:
            parts = []
            with source.open("rb") as data:
                while chunk := data.read(part_size):
                    number = len(parts) + 1
                    answer = self.client.upload_part(
                        Bucket=self.bucket, Key=full, UploadId=upload, PartNumber=number, Body=chunk
                    )
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except BaseException:
            self._abort(full, upload)
            raise

    def _abort(self, full: str, upload: str) -> None:
        """Drop the parts of a failed upload; failing that, the bucket's lifecycle rule
        for incomplete uploads (if any) does."""
        from botocore.exceptions import BotoCoreError, ClientError

        with suppress(BotoCoreError, ClientError):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload)

    def _written(self, key: str) -> StoredObject:
        found = self.head(key)
        if found is None:
            raise ListferryError(f"{self.url_of(key)}: the object was gone just after its upload")
        return found

    def copy(self, key: str, new_key: str, etag: str | None = None) -> StoredObject:
        """Copy ``key`` to ``new_key`` within the storage (a large object in parts, none
        of it through this machine), and say what storage then holds there. With
        ``etag``, only that version of ``key``: one replaced since raises, saying so.
        The copy becomes visible only whole, as an upload does."""
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import ClientError

        source = {"Bucket": self.bucket, "Key": self.key(key)}
        extra = {"CopySourceIfMatch": etag} if etag else {}
        config = TransferConfig(multipart_threshold=1 << 30, multipart_chunksize=1 << 30)
        with self._plain(key):
            try:
                self.client.copy(source, self.bucket, self.key(new_key), extra, Config=config)
            except ClientError as exc:
                if etag and _code(exc) in ("PreconditionFailed", "412"):
                    raise ListferryError(
                        f"{self.url_of(key)}: replaced while it was copied; copy it again"
                    ) from None
                raise
        return self._written(new_key)

    # -- deleting -------------------------------------------------------------------------

    def delete(self, key: str, if_match: str | None = None) -> bool:
        """Delete ``key`` (nothing there is no error); true unless ``if_match`` is given and
        the object's ETag is no longer that one (or it is gone).

        ``if_match`` makes the delete conditional where the server supports it (AWS since
        2025, SeaweedFS, Ceph); a server that ignores ``If-Match`` deletes regardless.
        """
        from botocore.exceptions import ClientError

        condition = {"IfMatch": if_match} if if_match else {}
        with self._plain(key):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self.key(key), **condition)
            except ClientError as exc:
                if if_match and _code(exc) in (
                    "PreconditionFailed",
                    "ConditionalRequestConflict",
                    "NoSuchKey",
                    "404",
                ):
                    return False
                raise
        return True

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete every key of ``keys``, :data:`DELETE_BATCH` to a request."""
        keys = list(keys)
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            with self._plain(batch[0]):
                answer = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self.key(k)} for k in batch], "Quiet": True},
                )
            if errors := answer.get("Errors"):
                first = errors[0]
                reason = REASONS.get(first.get("Code", ""), first.get("Message", "refused"))
                raise ListferryError(
                    f"s3://{self.bucket}/{first.get('Key', '')}: not deleted: {reason}"
                    + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
                )

    # -- checking -------------------------------------------------------------------------

    def check(self) -> None:
        """Prove the bucket is there and that we may list, write, read and delete below the
        prefix, with a probe object that is deleted again; raise in plain words otherwise.

        The listing comes first: some servers (SeaweedFS) make a missing bucket on the
        first write instead of refusing it.
        """
        with self._plain(""):
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._folder(""), MaxKeys=1)
        probe = f".listferry-check-{secrets.token_hex(6)}"
        data = secrets.token_bytes(32)
        self.put_bytes(data, probe)
        try:
            with self._plain(probe):
                answer = self.client.get_object(Bucket=self.bucket, Key=self.key(probe))
                read = answer["Body"].read()
            if read != data:
                raise ListferryError(f"{self.url_of(probe)}: read back other bytes than written")
        finally:
            self.delete(probe)

    # -- errors ---------------------------------------------------------------------------

    @contextmanager
    def _plain(self, key: str, if_absent: bool = False) -> Iterator[None]:
        """Turn any fault of botocore or boto3 while working on ``key`` into one plain
        :class:`ListferryError` line that names the place."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise self._error(_unwrapped(exc), key, if_absent) from None

    def _error(self, exc: BaseException, key: str, if_absent: bool) -> ListferryError:
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            IncompleteReadError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        place = self.url_of(key)
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code == "PreconditionFailed" and if_absent:
                return AlreadyExists(f"{place}: already exists")
            reason = REASONS.get(code) or f"{code}: {_message(exc)}"
            return ListferryError(f"{place}: {reason}")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return ListferryError(f"{place}: {NO_CREDENTIALS}")
        if isinstance(exc, IncompleteReadError):
            return ListferryError(f"{place}: the download was cut short ({exc})")
        if isinstance(exc, ReadTimeoutError):
            return ListferryError(
                f"{place}: storage {self.endpoint_url} did not answer within 60 s"
            )
        if isinstance(exc, ConnectionError):
            return ListferryError(f"storage {self.endpoint_url} unreachable: {_why(exc)}")
        return ListferryError(f"{place}: {_one_line(str(exc))}")


def _stored(key: str, answer: dict[str, Any]) -> StoredObject:
    return StoredObject(
        key, answer["ContentLength"], answer["LastModified"].timestamp(), answer.get("ETag", "")
    )


def _part_size(size: int) -> int:
    """:data:`PART_SIZE`, or more where a file would need more than :data:`MAX_PARTS`."""
    return max(PART_SIZE, -(-size // MAX_PARTS))


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: Any) -> str:
    return _one_line(exc.response.get("Error", {}).get("Message", "") or "refused")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _unwrapped(exc: BaseException) -> BaseException:
    """The fault behind boto3's wrappers: ``upload_file`` raises ``S3UploadFailedError``
    over the ``ClientError`` (as its context), and ``RetriesExceededError`` over the last
    fault."""
    last = getattr(exc, "last_exception", None)
    if last is not None:
        return last
    if type(exc).__name__ == "S3UploadFailedError" and exc.__context__ is not None:
        return exc.__context__
    return exc


def _why(exc: BaseException) -> str:
    """Why a connection failed, in plain words (refused, timed out, a name not found)."""
    from botocore.exceptions import ConnectTimeoutError

    if isinstance(exc, ConnectTimeoutError):
        return "no answer within 5 s"
    cause = getattr(exc, "kwargs", {}).get("error")
    text = str(cause or exc).lower()
    for words, reason in (
        ("refused", "connection refused"),
        ("name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("temporary failure in name resolution", "host name not found"),
        ("timed out", "no answer within 5 s"),
        ("certificate", "its TLS certificate is not trusted"),
    ):
        if words in text:
            return reason
    return _one_line(str(cause or exc))
