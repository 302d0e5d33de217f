"""Attempts on cluster mode's guarantees, each expected to be refused (found by a red
team: a paused worker, a stale sweep, a tenant added again, a sweep that fails after a
publish, a password in a database URL's query)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from listferry.app import open_app
from listferry.cluster import sync as cluster_sync
from listferry.cluster.database import connect
from listferry.cluster.storage import Storage
from listferry.cluster.sync import ClusterSync, sync_in_cluster
from listferry.errors import ListferryError
from listferry.testing import wait_for

from .test_cluster_sync import (  # noqa: F401  (nodes: the fixture)
    csv_text,
    current_store,
    keys,
    listferry,
    nodes,
    people,
    rows,
    sync_here,
    upload,
)
from .test_queue import Cluster, cluster, queued_job  # noqa: F401  (cluster: the fixture)

SECRET = "hunter2-red-team"


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_a_paused_workers_tenant_is_not_run_twice_by_another(cluster: Cluster) -> None:
    """Worker A is paused (SIGSTOP) while its sync process runs on; worker B takes the
    job once A is silent: B's run of the tenant is skipped while A's process holds the
    tenant's lease, and A's run applies the file, once."""
    cluster.upload("acme", 5)
    a = cluster.worker()
    job = queued_job(cluster.run("sync", "acme", "--json"))
    child = int(wait_for(lambda: cluster.marker.exists() and cluster.marker.read_text(), "check"))
    a.send_signal(signal.SIGSTOP)
    try:
        other = cluster.root / "b.toml"  # another machine: a state folder of its own
        other.write_text(cluster.config.read_text().replace('state = "state"', 'state = "state-b"'))
        real, cluster.config = cluster.config, other
        try:
            cluster.worker()
        finally:
            cluster.config = real
        wait_for(
            lambda: (
                cluster.sql(
                    "SELECT count(*) FROM listferry_runs WHERE job_id = %s AND status = 'skipped'",
                    job,
                )
                != [(0,)]
            ),
            "B to try the job again",
            timeout=25,
        )
        assert alive(child)
    finally:
        cluster.marker.unlink(missing_ok=True)  # A's sync goes on
        a.send_signal(signal.SIGCONT)
    wait_for(lambda: not alive(child), "A's sync to end", timeout=60)
    wait_for(
        lambda: (
            cluster.sql("SELECT count(*) FROM listferry_runs WHERE status = 'applied'") == [(1,)]
        ),
        "A's run to be indexed",
        timeout=30,
    )
    (reason,) = cluster.sql("SELECT reason FROM listferry_runs WHERE status = 'skipped'")[0]
    assert reason == "another run of this tenant is in progress on another node"


def test_a_stale_worker_never_removes_a_newer_versions_archived_files(
    nodes, tmp_path: Path, monkeypatch
) -> None:
    """A publishes version 2, then loses its lease before it sweeps; B publishes version
    3; A's sweep then runs over its older view: B's archived files stay."""
    upload(nodes.bucket, "list.csv", csv_text(people(10)))
    assert sync_here(nodes("a"))[0]["status"] == "applied"
    upload(nodes.bucket, "list.csv", csv_text(people(20)))
    original = ClusterSync.sweep_archive
    fired = []

    def paused_then_sweep(self, base: int) -> None:
        if not fired:
            fired.append(True)
            self.lease.release()  # paused past its lease: B may run the tenant now
            upload(nodes.bucket, "other.csv", csv_text(people(30, segment="SILVER")))
            assert [r["status"] for r in sync_here(nodes("b"))][-1] == "applied"
        original(self, base)

    monkeypatch.setattr(ClusterSync, "sweep_archive", paused_then_sweep)
    monkeypatch.setenv("LISTFERRY_LOAD_PLUGINS", "")
    app = open_app(nodes("a"))
    sync_in_cluster(app, app.config.tenants["acme"])
    store = current_store(nodes, tmp_path)
    archived = [Path(a).name for (a,) in store.execute("SELECT archive FROM runs")]
    assert len(archived) == 4  # A's two runs, and B's: one superseded, one applied
    assert set(archived) <= set(keys(nodes.bucket, "archive/acme/"))


def test_a_tenant_removed_and_added_again_keeps_its_earlier_archive(nodes) -> None:
    config = nodes("a")
    upload(nodes.bucket, "list.csv", csv_text(people(10)))
    assert sync_here(config)[0]["status"] == "applied"
    upload(nodes.bucket, "list.csv", csv_text(people(12)))
    assert sync_here(config)[0]["status"] == "applied"
    before = keys(nodes.bucket, "archive/acme/")
    assert len(before) == 2
    assert listferry(config, "tenant", "remove", "acme").returncode == 0
    assert listferry(config, "tenant", "add", "acme").returncode == 0
    upload(nodes.bucket, "list.csv", csv_text(people(3)))
    assert sync_here(config)[0]["status"] == "applied"
    assert set(before) < set(keys(nodes.bucket, "archive/acme/"))


def orphan(nodes, name: str, base: int) -> str:
    """An archived file put by a run from version ``base`` that never published."""
    prefix = nodes.bucket.url.split("/", 3)[3]
    key = f"archive/acme/{name}"
    nodes.bucket.server.client().put_object(
        Bucket=nodes.bucket.name, Key=f"{prefix}/{key}", Body=b"x"
    )
    with connect(nodes.database_url) as conn:
        conn.execute(
            "INSERT INTO listferry_archive_puts (tenant, key, base) VALUES ('acme', %s, %s)",
            (key, base),
        )
    return name


def test_files_of_a_run_that_died_before_publishing_go_with_the_next_publish(nodes) -> None:
    upload(nodes.bucket, "list.csv", csv_text(people(10)))
    assert sync_here(nodes("a"))[0]["status"] == "applied"
    lost = orphan(nodes, "000002-0123456789ab-list.csv", base=1)
    upload(nodes.bucket, "list.csv", csv_text(people(11)))
    assert sync_here(nodes("b"))[0]["status"] == "applied"
    assert lost not in keys(nodes.bucket, "archive/acme/")
    assert rows(nodes.database_url, "SELECT count(*) FROM listferry_archive_puts") == [(0,)]


def test_a_sweep_that_fails_after_a_publish_leaves_the_run_applied(nodes, monkeypatch) -> None:
    lost = orphan(nodes, "000007-0123456789ab-x.csv", base=0)
    upload(nodes.bucket, "list.csv", csv_text(people(10)))

    def refused(self, keys):
        raise ListferryError("s3://bucket/archive/acme/...: not deleted: storage unavailable")

    monkeypatch.setattr(Storage, "delete_many", refused)
    monkeypatch.setenv("LISTFERRY_LOAD_PLUGINS", "")
    cluster_sync.RETRY.clear()
    app = open_app(nodes("a"))
    runs = sync_in_cluster(app, app.config.tenants["acme"])
    assert [str(run.status) for run in runs] == ["applied"]
    assert not cluster_sync.RETRY
    assert rows(nodes.database_url, "SELECT status, store_version FROM listferry_runs") == [
        ("applied", 1)
    ]
    assert lost in keys(nodes.bucket, "archive/acme/")  # for the next publish to remove
    assert keys(nodes.bucket, "homes/acme/") == ["list.result.txt"]


def run(config: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "listferry", "--config", str(config), *args]
    full = {**os.environ, "LISTFERRY_LOAD_PLUGINS": "", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=full, timeout=120)


def config_with(tmp_path: Path, database: str) -> Path:
    path = tmp_path / "listferry.toml"
    path.write_text(
        f'[listferry]\nstate = "state"\n\n[cluster]\ndatabase = "{database}"\n\n'
        '[storage]\nurl = "s3://bucket-x/p"\nendpoint_url = "http://127.0.0.1:9"\n'
    )
    return path


def test_a_password_in_the_configs_database_url_query_is_refused(tmp_path: Path) -> None:
    path = config_with(tmp_path, f"postgresql://lf@127.0.0.1:9/lf?password={SECRET}")
    done = run(path, "cluster", "status")
    assert done.returncode == 2
    assert "[cluster] database must not hold a password" in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_a_password_in_the_environments_database_url_is_never_printed(tmp_path: Path) -> None:
    path = config_with(tmp_path, "")
    url = f"postgresql://lf@127.0.0.1:9/lf?sslmode=disable&password={SECRET}"
    done = run(path, "cluster", "status", env={"LISTFERRY_DATABASE_URL": url})
    assert done.returncode == 1 and "could not connect" in done.stderr
    assert SECRET not in done.stdout + done.stderr
