"""What happens when a file arrives: plugins are told, and ``on-upload`` syncs run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from listferry.app import App
from listferry.config import Tenant
from listferry.serve.log import event, log
from listferry.sync.select import select


class UploadDispatcher:
    """Tells plugins that a file arrived, and runs ``on-upload`` syncs.

    A tenant with ``process = "on-upload"`` is synced once its files are in: the list
    file and, when the tenant requires one, its count file. Uploads that follow each
    other within ``upload_grace`` seconds are taken together (a list, then its count
    file). One worker thread runs the syncs, one tenant at a time, each as its own
    ``listferry sync`` process.
    """

    def __init__(
        self, app: App, grace: float, tenants: Callable[[], dict[str, Tenant]] | None = None
    ) -> None:
        self.app = app
        self.grace = grace
        self.tenants = tenants or (lambda: app.config.tenants)
        self._due: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="on-upload", daemon=True)
        self._worker.start()

    def received(self, tenant: Tenant, name: str) -> None:
        """A completed upload of ``name`` (relative to the home) for ``tenant``."""
        event("received", tenant=tenant.name, file=name)
        try:
            self.app.host.hook.file_received(tenant=tenant, path=name)
        except Exception as exc:
            log.error("a file_received plugin failed for %s: %s: %s",
                      tenant.name, type(exc).__name__, exc)  # fmt: skip
        if tenant.process == "on-upload":
            with self._cond:
                self._due[tenant.name] = time.monotonic() + self.grace
                self._cond.notify()

    def _ready(self, tenant: Tenant) -> bool:
        transport = self.app.transport(tenant)
        try:
            selection = select(transport.list(), tenant)
        finally:
            transport.close()
        if not selection.runs:
            return False
        return tenant.count_file != "required" or all(p.count_file for p in selection.runs)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._next_due():
                    timeout = min(self._due.values(), default=time.monotonic() + 60)
                    self._cond.wait(max(0.0, timeout - time.monotonic()))
                if self._stopping:
                    return
                name = self._next_due()
                del self._due[name]
            tenant = self.tenants().get(name)
            if tenant is None or not self._ready(tenant):
                continue
            for run in self._sync(tenant):
                event("run", tenant=run["tenant"], file=run.get("file"), status=run["status"],
                      reason=run.get("reason"))  # fmt: skip

    def _sync(self, tenant: Tenant) -> list[dict]:
        """``listferry sync NAME`` in a process of its own: a crash or a memory blow-up in
        one tenant's run never reaches the servers, and the run reads the config as it is
        now."""
        import json
        import subprocess
        import sys

        from listferry.runs import utcnow

        argv = [sys.executable, "-m", "listferry", "--config", str(self.app.config.path),
                "sync", tenant.name, "--json"]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        try:
            runs = json.loads(done.stdout)
        except ValueError:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            reason = f"the on-upload sync exited with code {done.returncode}: {last}"
            log.error("%s: %s", tenant.name, reason)
            return [{"tenant": tenant.name, "status": "failed", "reason": reason,
                     "finished_at": utcnow()}]  # fmt: skip
        return runs

    def _next_due(self) -> str | None:
        now = time.monotonic()
        return next((name for name, at in self._due.items() if at <= now), None)

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._worker.join(timeout)
