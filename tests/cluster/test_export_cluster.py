"""Return files and replays in cluster mode, with real PostgreSQL, a real S3 server and
real `listferry` processes: ``export`` on any node, ``export_after_sync`` in the sync's
turn, the scheduled export as a worker's job, never beside a run of the tenant; and
``replay`` of a run whose archived file is in storage, from another node."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import psycopg

from listferry.cluster.lease import lock_key
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
    write_config,
)
from .test_queue import Cluster, cluster, queued_job  # noqa: F401  (cluster: the fixture)


def outbox(bucket) -> list[str]:
    return [key for key in keys(bucket, "homes/acme/") if key.startswith("outbox/")]


def set_tenant(database_url: str, **settings: object) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE listferry_tenants SET settings = settings || %s::jsonb WHERE name = 'acme'",
            (json.dumps(settings),),
        )


def test_export_on_another_node_delivers_to_the_outbox_and_is_recorded(nodes, tmp_path) -> None:
    upload(nodes.bucket, "list.csv", csv_text(people(30)))
    (run,) = sync_here(nodes("a"))
    assert run["status"] == "applied"

    done = listferry(nodes("b"), "export", "acme", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["records"] == 30
    assert (
        result["target"].startswith(nodes.bucket.url) and "/homes/acme/outbox" in result["target"]
    )
    assert outbox(nodes.bucket) == sorted(
        [f"outbox/{result['file']}", f"outbox/{result['count_file']}"]
    )
    store = current_store(nodes, tmp_path)  # the export is in the published version
    assert store.execute("SELECT file, records FROM exports").fetchall() == [(result["file"], 30)]
    ((last,),) = rows(nodes.database_url, "SELECT last_export FROM listferry_stores")
    assert last["file"] == result["file"]
    (status,) = json.loads(listferry(nodes("a"), "status", "--json").stdout)
    assert (status["last_export"], status["last_export_at"]) == (
        result["file"],
        last["finished_at"],
    )

    again = listferry(nodes("a"), "export", "acme", "--json")  # node a's copy is old now
    assert again.returncode == 0, again.stderr
    assert current_store(nodes, tmp_path).execute("SELECT count(*) FROM exports").fetchone() == (2,)


def test_export_after_sync_is_made_in_the_syncs_turn(nodes, tmp_path) -> None:
    set_tenant(nodes.database_url, export_after_sync=True)
    upload(nodes.bucket, "list.csv", csv_text(people(12)))
    (run,) = sync_here(nodes("a"))
    assert run["status"] == "applied"
    files = outbox(nodes.bucket)
    assert len(files) == 2 and any(name.endswith("_count.txt") for name in files), files
    store = current_store(nodes, tmp_path)
    assert store.execute("SELECT records FROM exports").fetchall() == [(12,)]
    assert store.execute("SELECT count(*) FROM runs WHERE status = 'applied'").fetchone() == (1,)


def test_export_while_a_run_holds_the_tenant_elsewhere_is_refused_and_delivers_nothing(
    nodes,
) -> None:
    upload(nodes.bucket, "list.csv", csv_text(people(5)))
    sync_here(nodes("a"))
    with psycopg.connect(nodes.database_url, autocommit=True) as other:  # another node's run
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key("acme"),))
        done = listferry(nodes("b"), "export", "acme")
    assert done.returncode == 75  # a worker's job is tried again later
    assert "in progress on another node" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert outbox(nodes.bucket) == []
    ((last,),) = rows(nodes.database_url, "SELECT last_export FROM listferry_stores")
    assert last is None


def test_a_scheduled_export_is_a_workers_job(cluster: Cluster) -> None:
    cluster.marker.with_suffix(".seen").touch()  # the slow plugin lets it through
    cluster.upload("acme", 8)
    cluster.worker()
    assert cluster.run("sync", "acme", "--wait").returncode == 0
    cluster.stop()  # no worker while the export is queued twice
    from listferry.cluster.queue import build_app, queue_export
    from listferry.config import load_config

    app = build_app(load_config(cluster.config))
    with app.open():
        job, new = queue_export(app, "acme")
        again, new_again = queue_export(app, "acme")
    assert new and (again, new_again) == (job, False)  # queued twice, waits once
    cluster.worker()
    wait_for(
        lambda: (
            cluster.sql("SELECT status::text FROM procrastinate_jobs WHERE id = %s", job)
            == [("succeeded",)]
        ),
        timeout=60,
        what="the export job",
    )
    delivered = sorted(p.name for p in (cluster.root / "homes" / "acme" / "outbox").iterdir())
    assert len(delivered) == 2, delivered
    ((last,),) = cluster.sql("SELECT last_export FROM listferry_stores WHERE tenant = 'acme'")
    assert last["records"] == 8


def test_export_exits_75_when_storage_is_away_before_anything_was_delivered(
    nodes, tmp_path
) -> None:
    upload(nodes.bucket, "list.csv", csv_text(people(5)))
    sync_here(nodes("a"))
    with socket.socket() as closed:  # a port nothing answers on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    away = SimpleNamespace(url=nodes.bucket.url, endpoint_url=f"http://127.0.0.1:{port}")
    config = write_config(tmp_path / "b", nodes.database_url, away)
    done = listferry(config, "export", "acme")
    assert done.returncode == 75, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert outbox(nodes.bucket) == []


def test_replay_on_another_node_applies_the_archived_file_from_storage(nodes, tmp_path) -> None:
    upload(nodes.bucket, "list.csv", csv_text(people(20)))
    (first,) = sync_here(nodes("a"))
    upload(nodes.bucket, "list.csv", csv_text(people(15)))
    (second,) = sync_here(nodes("a"))
    assert (first["status"], second["status"]) == ("applied", "applied")
    assert second["removed"] == 5

    done = listferry(nodes("b"), "replay", "acme", str(first["run_id"]), "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert (run["status"], run["added"], run["replay_of"]) == ("applied", 5, first["run_id"])
    assert run["archive"].startswith(nodes.bucket.url + "/archive/acme/")
    store = current_store(nodes, tmp_path)
    assert store.execute("SELECT count(*) FROM subscribers WHERE status = 'active'").fetchone() == (
        20,
    )
    indexed = rows(nodes.database_url, "SELECT record->>'replay_of' FROM listferry_runs")
    assert (str(first["run_id"]),) in indexed
    assert keys(nodes.bucket, "homes/acme/") == [
        name for name in keys(nodes.bucket, "homes/acme/") if name.endswith(".result.txt")
    ]  # the home holds reports only: the replayed file never went there

    missing = listferry(nodes("b"), "replay", "acme", "99")
    assert missing.returncode == 1 and missing.stderr.strip() == "Error: acme has no run 99"


def test_restore_lists_the_versions_and_brings_one_back_as_a_new_one(nodes, tmp_path) -> None:
    config = nodes("a")
    for count in (10, 9, 8):  # three applied runs: versions 1, 2, 3
        upload(nodes.bucket, "list.csv", csv_text(people(count)))
        (run,) = sync_here(config)
        assert run["status"] == "applied"

    listed = listferry(nodes("b"), "cluster", "restore", "acme")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["3", "2", "1"]
    assert lines[0].endswith("(current)") and "1 run(s)" in lines[0]

    done = listferry(nodes("b"), "cluster", "restore", "acme", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"tenant": "acme", "restored": 1, "was": 3, "version": 4}
    store = current_store(nodes, tmp_path)
    assert store.execute("SELECT count(*) FROM subscribers WHERE status = 'active'").fetchone() == (
        10,
    )
    listed = {
        run["run_id"]: run for run in json.loads(listferry(config, "runs", "acme", "--json").stdout)
    }
    assert listed[1]["hint"] is None
    assert all(
        listed[n]["hint"].startswith("undone: the tenant's store was restored") for n in (2, 3)
    )
    (status,) = json.loads(listferry(config, "status", "--json").stdout)
    assert (status["last_applied_run"], status["subscribers"]) == (1, 10)  # what it holds
    history = json.loads(listferry(config, "cluster", "restore", "acme", "--json").stdout)
    assert [(entry["version"], entry["restored_from"]) for entry in history] == [
        (4, 1),
        (3, None),
        (2, None),
        (1, None),
    ]

    upload(nodes.bucket, "list.csv", csv_text(people(11)))  # node a's copy is version 3
    (after,) = sync_here(config)
    assert (after["status"], after["added"], after["unchanged"]) == ("applied", 1, 10)

    with psycopg.connect(nodes.database_url, autocommit=True) as other:  # a run elsewhere
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key("acme"),))
        refused = listferry(nodes("b"), "cluster", "restore", "acme", "2")
    assert refused.returncode == 1 and "in progress on another node" in refused.stderr
    missing = listferry(nodes("b"), "cluster", "restore", "acme", "99")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: acme has no store version 99 in storage (kept: 1 to 5)"


def test_old_store_versions_and_archived_files_are_trimmed_in_storage(nodes) -> None:
    set_tenant(nodes.database_url, archive_keep_runs=1)
    config = nodes("a")
    config.write_text(config.read_text().replace("[storage]\n", "[storage]\nkeep_versions = 2\n"))
    for count in (10, 9, 8):
        upload(nodes.bucket, "list.csv", csv_text(people(count)))
        (run,) = sync_here(config)
        assert run["status"] == "applied"
    stores = keys(nodes.bucket, "stores/acme/")
    assert [key.split("-")[0] for key in stores] == ["000000000002", "000000000003"]
    assert rows(nodes.database_url, "SELECT version FROM listferry_store_versions") == [(2,), (3,)]
    archived = keys(nodes.bucket, "archive/acme/")
    assert archived and all(key.startswith(f"{run['run_id']:06d}-") for key in archived)
    gone = listferry(config, "cluster", "restore", "acme", "1")
    assert gone.returncode == 1
    assert gone.stderr.strip() == "Error: acme has no store version 1 in storage (kept: 2 to 3)"


def test_a_store_version_gone_from_storage_fails_for_good_and_a_restore_mends_it(nodes) -> None:
    for count in (10, 9):  # versions 1 and 2
        upload(nodes.bucket, "list.csv", csv_text(people(count)))
        assert sync_here(nodes("a"))[0]["status"] == "applied"
    ((key,),) = rows(nodes.database_url, "SELECT key FROM listferry_stores")
    prefix = nodes.bucket.url.split("/", 3)[3]
    nodes.bucket.server.client().delete_object(Bucket=nodes.bucket.name, Key=f"{prefix}/{key}")
    upload(nodes.bucket, "list.csv", csv_text(people(8)))
    done = listferry(nodes("b"), "sync", "--here", "acme", "--json")  # b has no copy of it
    assert done.returncode == 1, done.stderr  # not 75: trying again would not help
    (run,) = json.loads(done.stdout)
    assert run["status"] == "failed"
    assert "store version 2 is missing from storage; restore an earlier version" in run["reason"]
    restored = listferry(nodes("b"), "cluster", "restore", "acme", "1")
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.strip() == (
        "acme: store version 1 restored as version 3 (it was version 2)"
    )
    (again,) = sync_here(nodes("b"))
    assert (again["status"], again["removed"]) == ("applied", 2)


#: A plugin whose collect_events says it started (a marker file with its pid) and waits
#: until the marker is removed.
WAITING_PLUGIN = """
import os, time
from pathlib import Path
from listferry import hookimpl

@hookimpl
def collect_events(tenant, since):
    marker = Path(os.environ["WAIT_MARKER"])
    marker.write_text(str(os.getpid()))
    while marker.exists():
        time.sleep(0.05)
    return []
"""


def waiting_exports(nodes, tmp_path) -> tuple:
    """Node a, its tenant run once, with the waiting plugin: (config, marker, env)."""
    upload(nodes.bucket, "list.csv", csv_text(people(5)))
    config = nodes("a")
    sync_here(config)
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "waiting_export.py").write_text(WAITING_PLUGIN)
    config.write_text(
        config.read_text().replace("[listferry]\n", '[listferry]\nplugins = ["waiting_export"]\n')
    )
    marker = tmp_path / "export.marker"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "plugin"), "WAIT_MARKER": str(marker)}
    return config, marker, env


def test_an_export_paused_past_its_lease_delivers_nothing(nodes, tmp_path) -> None:
    config, marker, env = waiting_exports(nodes, tmp_path)
    command = [sys.executable, "-m", "listferry", "--config", str(config), "export", "acme"]
    export = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    pid = int(wait_for(lambda: marker.exists() and marker.read_text(), timeout=60, what="it"))
    os.kill(pid, signal.SIGSTOP)  # a GC pause, a frozen VM: past the lease of 3 s
    time.sleep(5)
    (run,) = sync_here(nodes("b"))  # another node may run the tenant meanwhile
    assert run["status"] in ("idle", "applied")
    marker.unlink()
    os.kill(pid, signal.SIGCONT)
    _, err = export.communicate(timeout=60)
    assert export.returncode == 75  # a worker's job is tried again later
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("Error: acme: nothing was delivered: the lease went"), err
    assert outbox(nodes.bucket) == []
    ((last,),) = rows(nodes.database_url, "SELECT last_export FROM listferry_stores")
    assert last is None


def test_a_sync_while_an_export_holds_the_tenant_here_is_skipped_indexed_and_tried_again(
    nodes, tmp_path
) -> None:
    config, marker, env = waiting_exports(nodes, tmp_path)
    command = [sys.executable, "-m", "listferry", "--config", str(config)]
    export = subprocess.Popen([*command, "export", "acme"], env=env)
    try:
        wait_for(marker.exists, timeout=60, what="the export to hold the tenant")
        upload(nodes.bucket, "list.csv", csv_text(people(6)))
        tried = subprocess.run(
            [*command, "sync", "--here", "acme", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        marker.unlink(missing_ok=True)
        export.wait(timeout=60)
    assert tried.returncode == 75, tried.stderr  # a worker's job is tried again
    (run,) = json.loads(tried.stdout)
    assert (run["status"], run["reason"]) == (
        "skipped",
        "another run of this tenant is in progress on this node",
    )
    assert ("skipped",) in rows(nodes.database_url, "SELECT status FROM listferry_runs")
    assert export.returncode == 0
    (again,) = sync_here(nodes("a"))
    assert (again["status"], again["added"]) == ("applied", 1)


def test_export_to_elsewhere_in_the_clusters_bucket_is_refused(nodes) -> None:
    upload(nodes.bucket, "list.csv", csv_text(people(3)))
    config = nodes("a")
    sync_here(config)
    bucket_root = f"s3://{nodes.bucket.name}/"
    for place in (
        f"{nodes.bucket.url}/homes/other/",
        f"{nodes.bucket.url}/stores/acme",
        f"{nodes.bucket.url}/homes/acme/../other",
        bucket_root,
    ):
        done = listferry(config, "export", "acme", "--to", place)
        assert done.returncode == 1, (place, done.stderr)
        assert "a return file goes only into acme's own home" in done.stderr, done.stderr
    assert [key for key in keys(nodes.bucket, "") if not key.startswith("stores/")] == [
        key for key in keys(nodes.bucket, "") if key.startswith(("homes/acme/", "archive/"))
    ]
    inside = listferry(config, "export", "acme", "--to", f"{nodes.bucket.url}/homes/acme/sent")
    assert inside.returncode == 0, inside.stderr


def test_a_dead_workers_export_job_runs_on_another(cluster: Cluster) -> None:
    from listferry.cluster.queue import build_app, queue_export
    from listferry.config import load_config

    cluster.marker.with_suffix(".seen").touch()  # the slow plugin lets syncs through
    marker = cluster.root / "export.marker"
    app = build_app(load_config(cluster.config))
    with app.open():
        job, _ = queue_export(app, "acme")
    cluster.env["EXPORT_MARKER"] = str(marker)
    a = cluster.worker()
    del cluster.env["EXPORT_MARKER"]
    wait_for(marker.exists, timeout=60, what="the export to start on worker A")
    a.kill()  # its export dies with it
    a.wait()
    cluster.worker()  # B finds A silent after stalled_after, and runs the job again
    wait_for(
        lambda: (
            time.sleep(0.2)
            or cluster.sql("SELECT status::text FROM procrastinate_jobs WHERE id = %s", job)
            == [("succeeded",)]
        ),
        timeout=90,
        what="the export job on worker B",
    )
    assert len(list((cluster.root / "homes" / "acme" / "outbox").iterdir())) == 2


def test_an_export_job_to_try_again_gives_way_to_one_queued_since(cluster: Cluster) -> None:
    """Procrastinate cannot put a job back while another of its queueing lock waits
    (procrastinate#1446): the job that would be tried again ends, the waiting one runs."""
    from listferry.cluster.queue import build_app, queue_export
    from listferry.config import load_config

    marker = cluster.root / "export.marker"
    app = build_app(load_config(cluster.config))
    cluster.env["EXPORT_MARKER"] = str(marker)
    cluster.worker()
    del cluster.env["EXPORT_MARKER"]
    with app.open():
        first, _ = queue_export(app, "acme")
        child = int(wait_for(lambda: marker.exists() and marker.read_text(), timeout=60))
        second, new = queue_export(app, "acme")  # the first is running: this one waits
    assert new and second != first
    os.kill(child, signal.SIGSTOP)  # past its lease of 3 s: the first must try again
    time.sleep(5)
    marker.unlink()
    os.kill(child, signal.SIGCONT)
    status = "SELECT status::text FROM procrastinate_jobs WHERE id = %s"
    wait_for(
        lambda: (
            time.sleep(0.2)
            or marker.unlink(missing_ok=True)  # the second says so too: let it go on
            or cluster.sql(status, second) == [("succeeded",)]
        ),
        timeout=90,
        what="the second export",
    )
    assert cluster.sql(status, first) == [("failed",)]
    assert "Traceback" not in cluster.worker_logs()
    assert f"job {second} makes it" in cluster.worker_logs()
