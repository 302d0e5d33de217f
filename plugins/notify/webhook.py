"""The ``webhook`` notifier: each run whose outcome ``[notify] on`` names, POSTed as JSON.

The body is the run exactly as ``sync --json`` prints it. With ``secret_env`` set, the
request carries ``X-Listferry-Timestamp`` (Unix seconds) and ``X-Listferry-Signature:
sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>.<body>"`` under the secret: the
receiver recomputes it and refuses old timestamps (``listferry.ops.notify.verify``).
Connection errors, timeouts, 408, 429 and 5xx answers are retried ``attempts`` times,
waiting ``backoff`` seconds, then twice as long each time.
"""

from __future__ import annotations

from typing import Any

from listferry import hookimpl
from listferry.ops.notify import post_json


@hookimpl
def run_finished(run: Any, tenant: Any, config: Any) -> None:
    settings = config.notify
    if settings.webhook is None or run.status not in settings.on:
        return
    post_json(settings.webhook, run.to_json())
