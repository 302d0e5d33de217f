"""SFTP client throughput: paramiko, as listferry's sftp transport uses it, against OpenSSH.

    python bench/sftp_client.py [--size-mb 200] [--rounds 3]

One sshd runs on 127.0.0.1 in this run. paramiko puts and gets the same file the way
``plugins/sftp/client.py`` does (``putfo(..., confirm=False)``; gets through the
transport's own ``download``: reads of 32 KiB, 64 in flight, sent from the calling thread),
alternating with the OpenSSH ``sftp`` client doing the same against the same sshd; a get
with paramiko's prefetch (its own thread) is printed for information.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import Figure, alternate, table
from sftp_upload import make_file, missing_tools, sftp, start_sshd

from listferry_plugins.sftp.client import REQUEST, WINDOW, download


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        raise SystemExit(f"skipped: no {', '.join(missing)} on this machine")
    try:
        import paramiko
    except ImportError:
        raise SystemExit("skipped: no paramiko (Python package) on this machine") from None
    work = Path(tempfile.mkdtemp(prefix="listferry-bench-sftp-client-"))
    procs: list[subprocess.Popen] = []
    try:
        data = work / "data.bin"
        make_file(data, args.size_mb)
        key = work / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        sshd, port = start_sshd(work, key.with_suffix(".pub"))
        procs.append(sshd)
        user = getpass.getuser()
        pkey = paramiko.Ed25519Key.from_private_key_file(str(key))
        remote = work / "remote"
        remote.mkdir()
        got = work / "got.bin"

        def paramiko_session(action: Callable[[paramiko.SFTPClient], None]) -> float:
            """Connect as the transport does and transfer; timed whole, like ``sftp``."""
            start = time.perf_counter()
            ssh = paramiko.Transport(socket.create_connection(("127.0.0.1", port), 60))
            try:
                ssh.start_client(timeout=60)
                ssh.auth_publickey(user, pkey)
                client = paramiko.SFTPClient.from_transport(ssh)
                assert client is not None
                action(client)
                client.close()
            finally:
                ssh.close()
            return time.perf_counter() - start

        def put_paramiko() -> float:
            def action(client: paramiko.SFTPClient) -> None:
                with data.open("rb") as f:
                    client.putfo(
                        f, str(remote / "p.bin"), file_size=args.size_mb << 20, confirm=False
                    )

            return paramiko_session(action)

        def get_paramiko(prefetch: bool) -> Callable[[], float]:
            def action(client: paramiko.SFTPClient) -> None:
                size = client.stat(str(remote / "o.bin")).st_size or 0
                with got.open("wb") as out:
                    source = client.open(str(remote / "o.bin"), "rb")
                    if prefetch:
                        source.prefetch(size)
                        while chunk := source.read(REQUEST):
                            out.write(chunk)
                    else:
                        download(client, source.handle, size, out)
                    source.close()
                assert got.stat().st_size == size

            return lambda: paramiko_session(action)

        def openssh(commands: str) -> Callable[[], float]:
            def run() -> float:
                start = time.perf_counter()
                sftp(port, user, key, commands, work)
                return time.perf_counter() - start

            return run

        mb = args.size_mb
        put_openssh = openssh(f"put {data} {remote}/o.bin\n")
        get_openssh = openssh(f"get {remote}/o.bin {got}\n")
        put = alternate(put_paramiko, put_openssh, args.rounds)
        get = alternate(get_paramiko(prefetch=False), get_openssh, args.rounds)
        get_pre = alternate(get_paramiko(prefetch=True), get_openssh, args.rounds)
        assert (remote / "p.bin").stat().st_size == data.stat().st_size
        assert got.stat().st_size == data.stat().st_size
        return [
            Figure(
                f"SFTP client put {mb} MB (paramiko)",
                mb / put[0],
                mb / put[1],
                "OpenSSH sftp",
                "≥ 0.6x",
                unit="MB/s",
            ),
            Figure(
                f"SFTP client get {mb} MB (paramiko, {WINDOW} x {REQUEST >> 10} KiB reads)",
                mb / get[0],
                mb / get[1],
                "OpenSSH sftp",
                "≥ 0.6x",
                unit="MB/s",
            ),
            Figure(
                f"SFTP client get {mb} MB (paramiko, prefetch)",
                mb / get_pre[0],
                mb / get_pre[1],
                "OpenSSH sftp",
                "information",
                unit="MB/s",
            ),
        ]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(table(main(sys.argv[1:])))
