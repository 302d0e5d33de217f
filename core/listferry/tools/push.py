"""``listferry push``: the customer's side, a list file and then its count file.

The list goes up under a hidden temporary name and takes its real name only when it is
complete; then its count file (``<stem>_count.txt``: the data records, as the reader
counts them) goes up the same way. So a half-done upload is never taken for a list, and
a list is never paired with a count file from an earlier upload: one left in the folder
is taken away first.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from listferry.errors import ListferryError, Void
from listferry.names import count_name, find_count
from listferry.plugins import Host
from listferry.reader import open_list
from listferry.transport import Endpoint, open_transport


def count_records(host: Host, path: Path, dialect_name: str) -> int:
    """The data records in ``path`` (header excluded), read as the sync reads it."""
    dialect = host.dialects.get(dialect_name)
    try:
        with open_list(host.readers, path, path.name, dialect) as source:
            for _batch in source.batches():
                pass
            return source.records_read
    except Void as exc:
        raise ListferryError(f"{path}: not uploaded: the file cannot be read: {exc}") from None


#: How push's messages name what to give: its options, not a tenant's keys.
PUSH_WORDS: Mapping[str, str] = MappingProxyType(
    {
        "password_in_url": "give it in $LISTFERRY_PASSWORD or with --password-stdin instead",
        "credentials": "give a password in $LISTFERRY_PASSWORD or with --password-stdin, "
        "or a key with --key",
        "password": "give a password in $LISTFERRY_PASSWORD or with --password-stdin",
        "key_file": "--key",
        "passphrase": "give its passphrase in $LISTFERRY_PASSWORD or with --password-stdin",
        "known_hosts": " (or to a file you give push with --known-hosts)",
        "ca_file": "the --ca-file",
        "untrusted": "pass --ca-file with the certificate of the CA that signed it (or the "
        "server's own, if self-signed), or --insecure to skip the check",
    }
)


def server(
    url: str,
    password: str | None = None,
    key_file: str | None = None,
    known_hosts: str | None = None,
    ca_file: str | None = None,
    tls_verify: bool = True,
) -> Endpoint:
    """The server (or folder) to push to, and how to reach it. SSH host keys are checked
    against ``known_hosts`` (default: ``~/.ssh/known_hosts``)."""
    return Endpoint(
        location=url if "://" in url else str(Path(url).resolve()),
        password=password,
        key_file=Path(key_file).expanduser() if key_file else None,
        known_hosts=Path(known_hosts or Path.home() / ".ssh" / "known_hosts").expanduser(),
        tls_verify=tls_verify,
        ca_file=Path(ca_file).expanduser() if ca_file else None,
        words=PUSH_WORDS,
    )


def push(
    host: Host,
    path: Path,
    target: Endpoint,
    dialect: str = "default",
    count_file: bool = True,
    say: Callable[[str], None] = print,
    progress: Callable[[int], Callable[[int], None]] | None = None,
) -> None:
    """Upload ``path`` into the ``target`` folder, then (unless not wanted) its count file."""
    records = count_records(host, path, dialect) if count_file else None
    transport = open_transport(host.transports, target)
    counted = count_name(path.name)
    try:
        listed = {f.name: f for f in transport.list()}
        stale = find_count(path.name, listed)  # its name in any case: the sync's is too
        if stale is not None:
            transport.remove(stale, listed[stale])
            say(f"removed the count file {stale} an earlier upload left")
        if progress is not None and "progress" in inspect.signature(transport.put).parameters:
            transport.put(path, path.name, progress=progress(path.stat().st_size))
        else:
            transport.put(path, path.name)
        say(f"uploaded {path.name}")
        if records is not None:
            with tempfile.TemporaryDirectory(prefix="listferry-push-") as folder:
                count = Path(folder) / counted
                count.write_text(f"{records}\n", encoding="ascii")
                transport.put(count, counted)
            say(f"uploaded {counted}: {records} records")
    finally:
        transport.close()
