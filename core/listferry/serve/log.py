"""The servers' log: one structured line per event, on the ``listferry.server`` logger."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from listferry.text import visible

log = logging.getLogger("listferry.server")


#: The most characters of one field a log line shows.
MAX_FIELD = 300


def shown(value: object) -> str:
    """A field's value in a log line: control characters escaped (once: a reason that
    holds an escaped name is not escaped again), quoted when it has a space, ``=`` or a
    quote, or is empty."""
    text = visible(value)
    if len(text) > MAX_FIELD:  # a client's path may be 200 KB; the log line is not
        text = f"{text[:MAX_FIELD]}...({len(text) - MAX_FIELD} more characters)"
    if text and text.isprintable() and not any(c in text for c in " =\"'"):
        return text
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "'" + text.replace("'", "\\'") + "'"


def event(kind: str, *, level: int = logging.INFO, **fields: object) -> None:
    """One structured log line: ``event=login protocol=sftp tenant=acme ip=… result=ok``.
    Refusals and blocks are also counted for the day (:data:`REFUSALS`)."""
    parts = [f"event={kind}"] + [f"{k}={shown(v)}" for k, v in fields.items() if v is not None]
    log.log(level, " ".join(parts))
    times = 1 + int(fields.get("suppressed") or 0)  # type: ignore[call-overload]
    if kind == "refused":
        who = fields.get("tenant") or fields.get("ip") or "-"
        REFUSALS.add(str(who), str(fields.get("reason") or fields.get("operation") or kind), times)
    elif kind == "blocked":
        why = f"blocked after {fields.get('failures')} failed logins"
        REFUSALS.add(str(fields.get("ip") or "-"), why, times)
    elif kind == "login" and fields.get("result") == "refused":
        why = f"login refused: {fields.get('reason') or 'wrong credentials'}"
        REFUSALS.add(f"{fields.get('user') or '-'} from {fields.get('ip') or '-'}", why, times)


class Tally:
    """How often each tenant (or address) was refused for each reason today, UTC: what
    the console shows as the limits hit. At most :attr:`MOST` pairs a day are kept (the
    rest add to one ``(others)`` line), so a flood cannot grow it without bound."""

    MOST = 1000

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._day = ""
        self._counts: dict[tuple[str, str], int] = {}

    def add(self, who: str, why: str, times: int = 1) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime(self.clock()))
        key = (visible(who)[:100], visible(why)[:200])
        with self._lock:
            if day != self._day:
                self._day, self._counts = day, {}
            if key not in self._counts and len(self._counts) >= self.MOST:
                key = ("(others)", "(more kinds than are kept)")
            self._counts[key] = self._counts.get(key, 0) + times

    def today(self) -> list[dict[str, object]]:
        """``{"who", "why", "times"}`` for today, most first."""
        day = time.strftime("%Y-%m-%d", time.gmtime(self.clock()))
        with self._lock:
            counts = dict(self._counts) if day == self._day else {}
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return [{"who": who, "why": why, "times": n} for (who, why), n in ranked]


#: The refusals of this process's servers today.
REFUSALS = Tally()


class Budget:
    """At most ``lines`` log lines of one kind per ``seconds`` for each key; the rest are
    counted, and told in one line when the key next logs (``suppressed=N``).

    A client that opens connections as fast as it can, only to be refused, would
    otherwise write a line for each: tens of thousands a minute, on the operator's disk.
    Thread-safe; keys not seen for a whole window are forgotten.
    """

    def __init__(
        self, lines: int = 20, seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lines, self.seconds, self.clock = lines, seconds, clock
        self._lock = threading.Lock()
        #: key -> [window start, lines logged in it, lines suppressed since the last one]
        self._windows: dict[tuple[str, ...], list[float]] = {}

    def allow(self, key: tuple[str, ...]) -> int | None:
        """The lines suppressed before this one (to be told with it), or None to
        suppress this one too."""
        with self._lock:
            now = self.clock()
            if len(self._windows) > 10_000:
                self._windows = {
                    k: w for k, w in self._windows.items() if now - w[0] < self.seconds
                }
            window = self._windows.setdefault(key, [now, 0, 0])
            if now - window[0] >= self.seconds:
                window[0], window[1] = now, 0
            if window[1] >= self.lines:
                window[2] += 1
                return None
            window[1] += 1
            suppressed, window[2] = int(window[2]), 0
            return suppressed
