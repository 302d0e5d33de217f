"""SFTP throughput: the OpenSSH ``sftp`` client against ``listferry serve`` and sshd.

    python bench/sftp_upload.py [--size-mb 200] [--rounds 3]

Both servers run on 127.0.0.1 in this run; the client puts then gets the same file
from each, alternating, and the table shows the medians in MB/s and the ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import Figure, alternate, free_port, table, timed

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def make_file(path: Path, size_mb: int) -> None:
    rng = random.Random(20261130)
    with path.open("wb") as f:
        for _ in range(size_mb):
            f.write(rng.randbytes(1 << 20))


def wait_for_port(port: int, proc: subprocess.Popen, deadline: float = 30) -> None:
    import socket

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.communicate()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"no server on port {port}")


def start_sshd(work: Path, client_pub: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    host_key = work / "sshd_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    (work / "authorized_keys").write_text(client_pub.read_text())
    config = work / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {work / 'authorized_keys'}\nPidFile {work / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    return proc, port


def start_listferry(work: Path, client_pub: Path) -> tuple[subprocess.Popen, int, Path]:
    config = work / "listferry.toml"
    base = [sys.executable, "-m", "listferry", "--config", str(config)]
    subprocess.run([*base, "init"], check=True, capture_output=True)
    subprocess.run(
        [*base, "tenant", "add", "bench", "--ssh-key", str(client_pub), "--allow-ip", "127.0.0.1"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = subprocess.Popen(
        [*base, "serve", "--protocols", "sftp", "--sftp-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc)
    return proc, port, work / "homes" / "bench"


def sftp(port: int, user: str, key: Path, commands: str, work: Path) -> None:
    batch = work / "batch"
    batch.write_text(commands)
    subprocess.run(
        [
            "sftp",
            "-q",
            "-b",
            str(batch),
            "-P",
            str(port),
            "-i",
            str(key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            f"{user}@127.0.0.1",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def missing_tools() -> list[str]:
    """The reference tools this benchmark needs that this machine lacks."""
    tools = {
        "sshd": Path(SSHD).is_file(),
        "sftp": shutil.which("sftp"),
        "ssh-keygen": shutil.which("ssh-keygen"),
    }
    return [name for name, found in tools.items() if not found]


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        raise SystemExit(f"skipped: no {', '.join(missing)} on this machine")
    work = Path(tempfile.mkdtemp(prefix="listferry-bench-sftp-"))
    procs: list[subprocess.Popen] = []
    try:
        data = work / "data.bin"
        make_file(data, args.size_mb)
        key = work / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        sshd, sshd_port = start_sshd(work, key.with_suffix(".pub"))
        ours, our_port, home = start_listferry(work, key.with_suffix(".pub"))
        procs += [sshd, ours]
        sshd_dir = work / "sshd_home"
        sshd_dir.mkdir()
        got = work / "got.bin"

        def run(port: int, user: str, commands: str) -> Callable[[], float]:
            return lambda: timed(lambda: sftp(port, user, key, commands, work))

        put_ours = run(our_port, "bench", f"put {data} /data.bin\n")
        put_sshd = run(sshd_port, "root", f"put {data} {sshd_dir}/data.bin\n")
        get_ours = run(our_port, "bench", f"get /data.bin {got}\n")
        get_sshd = run(sshd_port, "root", f"get {sshd_dir}/data.bin {got}\n")

        mb = args.size_mb
        put = alternate(put_ours, put_sshd, args.rounds)
        get = alternate(get_ours, get_sshd, args.rounds)
        assert (home / "data.bin").stat().st_size == data.stat().st_size
        return [
            Figure(
                f"SFTP put {mb} MB (OpenSSH sftp)",
                mb / put[0],
                mb / put[1],
                "sshd",
                "≥ 0.8x",
                unit="MB/s",
            ),
            Figure(
                f"SFTP get {mb} MB (OpenSSH sftp)",
                mb / get[0],
                mb / get[1],
                "sshd",
                "≥ 0.95x",
                unit="MB/s",
            ),
        ]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(table(main(sys.argv[1:])))
