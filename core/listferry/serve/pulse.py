"""What a running ``serve`` tells the console: the sessions open now, by protocol and
tenant, and today's refusals (the limits hit). Written to ``STATE/server/live.json``
every :data:`PULSE_SECONDS` (atomically, so a reader never sees half of it) and removed
when serve stops; a file left by a serve that was killed is known by its process."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from listferry.config.edit import write_atomically
from listferry.serve.limits import Limits
from listferry.serve.live import is_running, process_start
from listferry.serve.log import REFUSALS
from listferry.times import utcnow

PULSE_SECONDS = 5.0


def pulse_path(state_dir: Path) -> Path:
    return state_dir / "server" / "live.json"


def beat(limits: Limits, state_dir: Path, protocols: list[str]) -> None:
    """Write what this serve has open now, and today's refusals."""
    pid = os.getpid()
    facts = {
        "pid": pid,
        "process_start": process_start(pid),
        "at": utcnow(),
        "protocols": protocols,
        "sessions": limits.open_sessions(),
        "refusals": REFUSALS.today(),
    }
    write_atomically(pulse_path(state_dir), json.dumps(facts, indent=1))


def keep_beating(
    limits: Limits,
    state_dir: Path,
    protocols: list[str],
    stop: threading.Event,
    every: float = PULSE_SECONDS,
) -> None:
    """:func:`beat` until ``stop``, then remove the file."""
    try:
        while True:
            with contextlib.suppress(OSError):
                beat(limits, state_dir, protocols)
            if stop.wait(every):
                return
    finally:
        with contextlib.suppress(OSError):
            pulse_path(state_dir).unlink()


def read_pulse(state_dir: Path) -> dict[str, Any] | None:
    """The running serve's last beat; None when no serve runs (or it was killed)."""
    try:
        facts = json.loads(pulse_path(state_dir).read_text())
        pid, started = int(facts["pid"]), facts.get("process_start")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return facts if is_running(pid, started) else None
