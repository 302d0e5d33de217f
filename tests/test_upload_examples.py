"""The upload examples of README.md and docs/operator.md, run as written with real curl,
lftp and OpenSSH sftp against a real ``listferry serve`` after a fresh ``listferry init``.

The commands are read from the pages, so the pages cannot drift. Only what cannot be
kept is changed: the ports (2121, 2990, 2222 may be taken; the servers listen on free
ones, which the config then names) and the operator guide's ``files.example.net``, which
becomes 127.0.0.1. Nothing but 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue

import pytest
from conftest import csv_text, people

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
OPERATOR = ROOT / "docs" / "operator.md"
DEFAULT_PORTS = {"ftp": 2121, "ftps": 2990, "sftp": 2222}
PUBLIC_NAME = "files.example.net"
LIST = csv_text(people(3)).encode()

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("curl", "lftp", "sftp", "ssh-keygen")),
    reason="needs curl, lftp, OpenSSH sftp and ssh-keygen (.ci/run installs them)",
)


def section(markdown: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of its level or above."""
    level = heading.split(" ", 1)[0]
    rest = markdown.split(f"\n{heading}\n", 1)[1]
    return re.split(rf"^#{{1,{len(level)}}} ", rest, maxsplit=1, flags=re.M)[0]


def command_blocks(text: str) -> list[list[str]]:
    """The indented code blocks (four spaces), each as its lines."""
    blocks = re.findall(r"(?:^ {4}\S.*\n)+", text, re.M)
    return [[line[4:] for line in block.splitlines()] for block in blocks]


def text_blocks(text: str) -> list[str]:
    return re.findall(r"^```text\n(.*?)^```$", text, re.S | re.M)


@dataclass
class Site:
    """A folder after ``listferry init``, the README's tenants and a running serve."""

    work: Path
    env: dict[str, str]
    ports: dict[str, int]

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        for name, port in DEFAULT_PORTS.items():
            command = re.sub(rf"\b{port}\b", str(self.ports[name]), command)
        command = command.replace(PUBLIC_NAME, "127.0.0.1")
        assert "example" not in command, command  # never contact anything but 127.0.0.1
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def home(self, tenant: str) -> Path:
        return self.work / "homes" / tenant

    def uploads(self, command: str) -> None:
        """Run an upload example; its file must land whole in its tenant's home."""
        tenant = "beta" if "beta@" in command else "acme"
        landed = self.home(tenant) / "subscriber_list.csv"
        landed.unlink(missing_ok=True)
        done = self.run(command)
        assert done.returncode == 0, f"$ {command}\n{done.stdout}\n{done.stderr}"
        assert landed.read_bytes() == LIST, f"$ {command}\n{done.stderr}"


def environment(folder: Path) -> dict[str, str]:
    """``listferry`` on the PATH, and a HOME of the test's own (lftp keeps files there)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "listferry"
    shim.write_text(f"#!{sys.executable}\nfrom listferry.cli import main\nmain()\n")
    shim.chmod(0o755)
    home = folder / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "LISTFERRY_CONFIG"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", HOME=str(home))
    return env


def listening_ports(serve: subprocess.Popen[str], timeout: float = 60) -> dict[str, int]:
    """The ports of serve's ``listening PROTOCOL 127.0.0.1:PORT`` lines."""
    lines: Queue[str] = Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in serve.stdout], daemon=True).start()
    ports: dict[str, int] = {}
    while len(ports) < 3:
        try:
            line = lines.get(timeout=timeout)
        except Empty:
            raise AssertionError("listferry serve said nothing of listening") from None
        if found := re.fullmatch(r"listening (ftps?|sftp) 127\.0\.0\.1:(\d+)\n", line):
            ports[found[1]] = int(found[2])
    return ports


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("examples")
    work = folder / "work"
    work.mkdir()
    env = environment(folder)
    (work / "subscriber_list.csv").write_bytes(LIST)  # the customer's export
    (work / "export.csv").write_bytes(LIST)  # what "Use it" checks and puts in the home
    (work / "opens_clicks.csv").write_text("email,type,at\np0@example.org,open,2026-12-01\n")
    [walk_through] = command_blocks(section(README.read_text(), "## Use it"))
    setup, _clients = command_blocks(
        section(README.read_text(), "## Take uploads: the built-in servers")
    )
    assert setup[-1].startswith("listferry serve ")
    first = Site(work, env, DEFAULT_PORTS)
    done = first.run("listferry init")
    assert done.returncode == 0, done.stderr
    config = work / "listferry.toml"
    # Any free ports: the ones the servers got are written into the config below.
    config.write_text(
        config.read_text() + "\n[server]\nftp_port = 0\nftps_port = 0\nsftp_port = 0\n"
    )
    for command in [*walk_through, *setup[:-1]]:  # the README from the top, as a reader
        done = first.run(command)  # follows it
        assert done.returncode == 0, f"$ {command}\n{done.stdout}\n{done.stderr}"
    log = folder / "serve.log"
    with log.open("w") as stderr:
        serve = subprocess.Popen(
            ["bash", "-c", f"exec {setup[-1]}"],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        ports = listening_ports(serve)
        text = config.read_text()
        for name, port in ports.items():
            text = re.sub(rf"^{name}_port = 0$", f"{name}_port = {port}", text, flags=re.M)
        config.write_text(text)
        yield Site(work, env, ports)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
    assert serve.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_the_readme_walk_through_applies_the_export_and_keeps_acme_for_its_uploads(
    site: Site,
) -> None:
    runs = site.run("listferry runs acme --json")
    shown = site.run("listferry tenant show acme --json")

    assert [run["status"] for run in json.loads(runs.stdout)] == ["applied"]
    settings = json.loads(shown.stdout)
    assert settings["password"] is True
    assert settings["allow_ips"] == ["203.0.113.0/24", "127.0.0.1"]


def test_the_readme_upload_examples_work_as_written(site: Site) -> None:
    _setup, clients = command_blocks(
        section(README.read_text(), "## Take uploads: the built-in servers")
    )
    tools = [command.split()[0] for command in clients]
    assert tools == ["listferry", "curl", "lftp", "echo"]
    for command in clients:
        if "subscriber_list.csv" in command:
            site.uploads(command)
        else:
            done = site.run(command)
            assert done.returncode == 0, f"$ {command}\n{done.stderr}"


def test_what_the_operator_guide_says_to_hand_a_customer_works(site: Site) -> None:
    text = section(OPERATOR.read_text(), "## What to hand a customer")
    [show], operator, customer = command_blocks(text)
    [sample] = text_blocks(text)
    shown = site.run(show)
    assert shown.returncode == 0, shown.stderr
    # The sample output has the labels the command prints, line for line.
    labels = [line.split(": ", 1)[0] for line in sample.splitlines()]
    assert [line.split(": ", 1)[0] for line in shown.stdout.splitlines()] == labels
    for command in operator:
        done = site.run(command)
        assert done.returncode == 0, f"$ {command}\n{done.stderr}"
    assert [command.split()[0] for command in customer] == ["curl", "lftp", "echo"]
    for command in customer:
        site.uploads(command)
