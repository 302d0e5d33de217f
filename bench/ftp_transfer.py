"""FTP and FTPS throughput: Python's ftplib against ``listferry serve`` and bare pyftpdlib.

    python bench/ftp_transfer.py [--size-mb 200] [--rounds 3]

Both servers run on 127.0.0.1 in this run: ``listferry serve --protocols ftp,ftps`` and a
bare pyftpdlib ``FTPServer`` (``FTPHandler`` + ``DummyAuthorizer``) in a process of its
own, serving a temporary folder. The same ftplib client puts then gets the same file
from each, alternating; FTPS (explicit TLS, protected data) to ``listferry serve`` is
measured against plain FTP to ``listferry serve`` and only printed.
"""

from __future__ import annotations

import argparse
import ftplib
import importlib.util
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import Figure, alternate, free_port, table
from sftp_upload import make_file, wait_for_port

from listferry_plugins.ftp.transport import TlsFtp

USER, PASSWORD = "bench", "bench-password-1234"
BLOCK = 1 << 20  # ftplib's default of 8 KiB would measure the client's loop

BARE_SERVER = """
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
import logging
logging.getLogger("pyftpdlib").setLevel(logging.ERROR)
authorizer = DummyAuthorizer()
authorizer.add_user(sys.argv[3], sys.argv[4], sys.argv[2], perm="elradfmw")
FTPHandler.authorizer = authorizer
FTPServer(("127.0.0.1", int(sys.argv[1])), FTPHandler).serve_forever()
"""


def start_bare(work: Path) -> tuple[subprocess.Popen, int, Path]:
    root = work / "bare_home"
    root.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER, str(port), str(root), USER, PASSWORD],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc)
    return proc, port, root


def start_listferry(work: Path) -> tuple[subprocess.Popen, int, int, Path]:
    config = work / "listferry.toml"
    base = [sys.executable, "-m", "listferry", "--config", str(config)]
    subprocess.run([*base, "init"], check=True, capture_output=True)
    subprocess.run(
        [*base, "tenant", "add", USER, "--password-stdin", "--allow-ip", "127.0.0.1"],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    ftp_port, ftps_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            *base,
            "serve",
            "--protocols",
            "ftp,ftps",
            "--ftp-port",
            str(ftp_port),
            "--ftps-port",
            str(ftps_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(ftp_port, proc)
    wait_for_port(ftps_port, proc)
    return proc, ftp_port, ftps_port, work / "homes" / USER


def connect(port: int, tls: bool) -> ftplib.FTP:
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # listferry's self-signed certificate
        ftp: ftplib.FTP = TlsFtp(context=context)  # resumes its TLS session for data
    else:
        ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=60)
    ftp.login(USER, PASSWORD)
    if isinstance(ftp, ftplib.FTP_TLS):
        ftp.prot_p()
    return ftp


def put(port: int, data: Path, tls: bool = False) -> Callable[[], float]:
    def run() -> float:
        ftp = connect(port, tls)
        start = time.perf_counter()
        with data.open("rb") as f:
            ftp.storbinary("STOR data.bin", f, blocksize=BLOCK)
        took = time.perf_counter() - start
        ftp.quit()
        return took

    return run


def get(port: int, dest: Path, tls: bool = False) -> Callable[[], float]:
    def run() -> float:
        ftp = connect(port, tls)
        start = time.perf_counter()
        with dest.open("wb") as f:
            ftp.retrbinary("RETR data.bin", f.write, blocksize=BLOCK)
        took = time.perf_counter() - start
        ftp.quit()
        return took

    return run


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    for module in ("pyftpdlib", "OpenSSL"):
        if importlib.util.find_spec(module) is None:
            raise SystemExit(f"skipped: no {module} (Python package) on this machine")
    work = Path(tempfile.mkdtemp(prefix="listferry-bench-ftp-"))
    procs: list[subprocess.Popen] = []
    try:
        data = work / "data.bin"
        make_file(data, args.size_mb)
        got = work / "got.bin"
        bare, bare_port, bare_root = start_bare(work)
        procs.append(bare)
        ours, ftp_port, ftps_port, home = start_listferry(work)
        procs.append(ours)

        mb = args.size_mb
        ftp_put = alternate(put(ftp_port, data), put(bare_port, data), args.rounds)
        ftp_get = alternate(get(ftp_port, got), get(bare_port, got), args.rounds)
        tls_put = alternate(put(ftps_port, data, tls=True), put(ftp_port, data), args.rounds)
        tls_get = alternate(get(ftps_port, got, tls=True), get(ftp_port, got), args.rounds)
        for where in (home, bare_root):
            assert (where / "data.bin").stat().st_size == data.stat().st_size
        assert got.stat().st_size == data.stat().st_size
        return [
            Figure(
                f"FTP put {mb} MB (ftplib)",
                mb / ftp_put[0],
                mb / ftp_put[1],
                "bare pyftpdlib",
                "≥ 0.8x",
                unit="MB/s",
            ),
            Figure(
                f"FTP get {mb} MB (ftplib)",
                mb / ftp_get[0],
                mb / ftp_get[1],
                "bare pyftpdlib",
                "≥ 0.8x",
                unit="MB/s",
            ),
            Figure(
                f"FTPS put {mb} MB (ftplib)",
                mb / tls_put[0],
                mb / tls_put[1],
                "plain FTP",
                "printed",
                unit="MB/s",
            ),
            Figure(
                f"FTPS get {mb} MB (ftplib)",
                mb / tls_get[0],
                mb / tls_get[1],
                "plain FTP",
                "printed",
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
