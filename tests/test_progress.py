"""Progress bars appear on a terminal and stay out of cron's mail."""

from __future__ import annotations

import subprocess

from conftest import on_a_terminal, people
from test_crash import listferry_command

from listferry.testing import Sandbox


def sync_with_stderr(ws: Sandbox, tty: bool) -> tuple[int, str]:
    command = [*listferry_command(), "--config", str(ws.config_path), "sync", "acme"]
    if not tty:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        return done.returncode, done.stderr
    return on_a_terminal(command)


def test_a_big_file_shows_a_progress_bar_on_a_terminal(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(people(20_000))
    code, err = sync_with_stderr(ws, tty=True)
    assert code == 0
    assert "acme: reading" in err and "100%" in err


def test_no_progress_bar_when_stderr_is_not_a_terminal(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(people(20_000))
    code, err = sync_with_stderr(ws, tty=False)
    assert code == 0
    assert err == ""
