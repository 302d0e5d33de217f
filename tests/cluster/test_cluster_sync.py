"""A tenant's sync in cluster mode, with real PostgreSQL and a real S3 server.

Each node is its own state folder (its own local store copies) over the same database
and bucket, as two machines would be; ``listferry sync --here`` is what a worker's job
runs, started here as its own process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from listferry.cluster.database import connect, create_schema


def people(n: int, segment: str = "GOLD") -> list[tuple[str, ...]]:
    return [(f"p{i}@example.org", f"First{i}", f"Last{i}", segment) for i in range(n)]


def csv_text(rows: list[tuple[str, ...]]) -> str:
    lines = ["email,first_name,last_name,segment_code", *(",".join(row) for row in rows)]
    return "\r\n".join(lines) + "\r\n"


def write_config(root: Path, database_url: str, bucket, extra: str = "", lease: float = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "listferry.toml"
    path.write_text(
        f"""\
[listferry]
state = "state"
workers = 1

[cluster]
database = "{database_url}"
stalled_after = {lease}

[storage]
url = "{bucket.url}"
endpoint_url = "{bucket.endpoint_url}"

[defaults]
count_file = "optional"
strategy = "full"
{extra}"""
    )
    return path


@pytest.fixture
def nodes(tmp_path: Path, database_url: str, bucket):
    """``nodes(name)``: the config of a node of its own over the shared database and bucket."""
    with connect(database_url) as conn:
        create_schema(conn)
        conn.execute("INSERT INTO listferry_tenants (name, settings) VALUES ('acme', '{}')")

    def node(name: str, extra: str = "", lease: float = 3) -> Path:
        return write_config(tmp_path / name, database_url, bucket, extra, lease)

    node.bucket = bucket
    node.database_url = database_url
    return node


def listferry(config: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "listferry", "--config", str(config), *args]
    env = {**os.environ, "LISTFERRY_LOAD_PLUGINS": ""}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, **kwargs)


def sync_here(config: Path) -> list[dict]:
    done = listferry(config, "sync", "--here", "acme", "--json")
    assert done.returncode in (0, 1), done.stderr
    runs = json.loads(done.stdout)
    for run in runs:
        print(run["status"], run["reason"], done.stderr)
    return runs


def upload(bucket, name: str, text: str) -> None:
    key = bucket.url.split("/", 3)[3] + f"/homes/acme/{name}"
    bucket.server.client().put_object(Bucket=bucket.name, Key=key, Body=text.encode())


def keys(bucket, below: str) -> list[str]:
    prefix = bucket.url.split("/", 3)[3] + "/" + below
    pages = bucket.server.client().get_paginator("list_objects_v2")
    found = []
    for page in pages.paginate(Bucket=bucket.name, Prefix=prefix):
        found += [item["Key"][len(prefix) :] for item in page.get("Contents", [])]
    return sorted(found)


def rows(database_url: str, sql: str, *args) -> list[tuple]:
    with connect(database_url) as conn:
        return conn.execute(sql, args).fetchall()


def current_store(nodes, tmp_path: Path) -> sqlite3.Connection:
    """The tenant's current version, downloaded by hand."""
    ((key,),) = rows(nodes.database_url, "SELECT key FROM listferry_stores WHERE tenant = 'acme'")
    full = nodes.bucket.url.split("/", 3)[3] + "/" + key
    dest = tmp_path / f"current-{time.monotonic_ns()}.db"
    nodes.bucket.server.client().download_file(nodes.bucket.name, full, str(dest))
    return sqlite3.connect(dest)


def test_an_upload_in_storage_is_applied_published_archived_and_reported(
    nodes, tmp_path: Path
) -> None:
    config = nodes("a")
    upload(nodes.bucket, "list.csv", csv_text(people(50)))
    (run,) = sync_here(config)
    assert run["status"] == "applied" and run["added"] == 50
    assert rows(nodes.database_url, "SELECT version FROM listferry_stores") == [(1,)]
    assert rows(nodes.database_url, "SELECT run_id, status, store_version FROM listferry_runs") == [
        (run["run_id"], "applied", 1)
    ]
    assert keys(nodes.bucket, "homes/acme/") == ["list.result.txt"]
    (archived,) = keys(nodes.bucket, "archive/acme/")
    assert archived.endswith("-list.csv") and run["archive"].endswith(archived)
    store = current_store(nodes, tmp_path)
    assert store.execute("SELECT count(*) FROM subscribers").fetchone() == (50,)


def test_a_second_node_takes_the_newest_version_and_builds_on_it(nodes, tmp_path: Path) -> None:
    upload(nodes.bucket, "list.csv", csv_text(people(50)))
    assert sync_here(nodes("a"))[0]["status"] == "applied"
    upload(nodes.bucket, "list.csv", csv_text(people(60)))
    (run,) = sync_here(nodes("b"))
    assert (run["status"], run["added"], run["unchanged"]) == ("applied", 10, 50)
    upload(nodes.bucket, "list.csv", csv_text(people(40)))
    (run,) = sync_here(nodes("a"))  # its own copy is version 1: it must take version 2
    assert (run["status"], run["removed"], run["run_id"]) == ("applied", 20, 3)
    assert rows(nodes.database_url, "SELECT version FROM listferry_stores") == [(3,)]
    store = current_store(nodes, tmp_path)
    assert store.execute("SELECT count(*) FROM runs WHERE status = 'applied'").fetchone() == (3,)
    # a node that never ran the tenant answers `runs` from the runs index
    done = listferry(nodes("c"), "runs", "acme", "--json")
    assert [(r["run_id"], r["status"]) for r in json.loads(done.stdout)] == [
        (3, "applied"),
        (2, "applied"),
        (1, "applied"),
    ]
    report = listferry(nodes("c"), "runs", "acme", "2")
    assert report.returncode == 0, report.stderr
    assert "Tenant: acme   Run: 2" in report.stdout and "Outcome: applied" in report.stdout


def test_an_idle_sync_publishes_nothing(nodes) -> None:
    config = nodes("a")
    upload(nodes.bucket, "list.csv", csv_text(people(5)))
    sync_here(config)
    (run,) = sync_here(config)
    assert run["status"] == "idle"
    assert rows(nodes.database_url, "SELECT version FROM listferry_stores") == [(1,)]
    assert len(keys(nodes.bucket, "stores/acme/")) == 1


def test_a_stale_worker_is_fenced_and_its_run_recorded_failed(nodes, tmp_path: Path) -> None:
    """Node a is paused (SIGSTOP) after it fetched the file, past its lease; node b applies
    the same file; a continues: it keeps nothing, and its run is indexed failed."""
    upload(nodes.bucket, "list.csv", csv_text(people(10)))
    assert sync_here(nodes("a"))[0]["status"] == "applied"  # version 1 on both nodes' reach
    big = csv_text(people(60_000, segment="SILVER"))
    upload(nodes.bucket, "list.csv", big)
    stale = nodes("a")
    work = stale.parent / "state" / "acme" / "work"
    command = [sys.executable, "-m", "listferry", "--config", str(stale), "sync", "--here"]
    env = {**os.environ, "LISTFERRY_LOAD_PLUGINS": ""}
    proc = subprocess.Popen(
        [*command, "acme", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not any(work.glob("run-*/list.csv")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(4.5)  # past its 3 s lease: the database ends its session
        (run,) = sync_here(nodes("b"))
        assert run["status"] == "applied" and run["updated"] == 10
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    (stale_run,) = json.loads(out)
    assert stale_run["status"] == "failed", err
    assert stale_run["reason"] == (
        "the run could not be saved to the cluster: the run lost its lease, held while it "
        "answers at least every 3 s (the database ended its session: terminating "
        "connection due to idle-session timeout); nothing of it was kept"
    )
    assert rows(nodes.database_url, "SELECT version FROM listferry_stores") == [(2,)]
    indexed = rows(
        nodes.database_url, "SELECT status, store_version FROM listferry_runs ORDER BY id"
    )
    assert indexed == [("applied", 1), ("applied", 2), ("failed", None)]
    assert len(keys(nodes.bucket, "stores/acme/")) == 2  # the refused version was removed
    store = current_store(nodes, tmp_path)
    assert store.execute(
        "SELECT count(*) FROM subscribers WHERE segment_code = 'SILVER'"
    ).fetchone() == (60_000,)


def test_the_database_down_fails_the_run_with_a_clear_reason_and_keeps_the_file(
    nodes, tmp_path: Path
) -> None:
    from .services import free_port

    config = nodes("a")
    text = config.read_text().replace(
        nodes.database_url, f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    )
    config.write_text(text)
    upload(nodes.bucket, "list.csv", csv_text(people(5)))
    done = listferry(config, "sync", "--here", "acme", "--json")
    (run,) = json.loads(done.stdout)
    assert run["status"] == "failed" and "could not connect" in run["reason"]
    assert "Traceback" not in done.stderr
    assert keys(nodes.bucket, "homes/acme/") == ["list.csv"]


def test_sigkills_spread_across_runs_lose_nothing_and_apply_each_file_once(
    nodes, tmp_path: Path
) -> None:
    """Each list is synced by a process SIGKILLed at a point spread across an
    uninterrupted run's time (start-up, checkout, reading, applying, publishing, taking
    the file out), then by the other node to the end: each file is applied exactly once,
    no run is left running, every archived file belongs to a run."""
    import hashlib

    node = {"a": nodes("a"), "b": nodes("b")}
    lists = [csv_text(people(10_000, segment=f"S{k}")) for k in range(7)]
    upload(nodes.bucket, "list.csv", lists[0])
    started = time.monotonic()
    assert sync_here(node["a"])[0]["status"] == "applied"
    took = time.monotonic() - started
    env = {**os.environ, "LISTFERRY_LOAD_PLUGINS": ""}
    for k, text in enumerate(lists[1:], start=1):
        killed, finisher = ("a", "b") if k % 2 else ("b", "a")
        upload(nodes.bucket, "list.csv", text)
        command = [sys.executable, "-m", "listferry", "--config", str(node[killed])]
        proc = subprocess.Popen(
            [*command, "sync", "--here", "acme"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        time.sleep(took * k / len(lists))
        proc.kill()
        proc.wait()
        finished = sync_here(node[finisher])
        assert {run["status"] for run in finished} <= {"applied", "skipped", "idle"}
    store = current_store(nodes, tmp_path)
    applied = [sha for (sha,) in store.execute("SELECT sha256 FROM runs WHERE status = 'applied'")]
    for text in lists:
        assert applied.count(hashlib.sha256(text.encode()).hexdigest()) == 1
    assert store.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone() == (0,)
    assert store.execute("SELECT DISTINCT segment_code FROM subscribers").fetchall() == [("S6",)]
    archived = {
        Path(a).name.split("-", 2)[0]
        for (a,) in store.execute("SELECT archive FROM runs WHERE archive IS NOT NULL")
    }
    for key in keys(nodes.bucket, "archive/acme/"):
        assert key.split("-", 2)[0] in archived, key
    assert keys(nodes.bucket, "homes/acme/") == ["list.result.txt"]


def test_status_answers_on_any_node_from_the_database_and_the_bucket(nodes) -> None:
    upload(nodes.bucket, "list.csv", csv_text(people(30)))
    assert sync_here(nodes("a"))[0]["status"] == "applied"
    upload(nodes.bucket, "list.csv", csv_text(people(30) + [("bad-address", "", "", "X")] * 9))
    upload(nodes.bucket, "notes.txt", "not a list")
    done = listferry(nodes("b"), "status", "--json")
    assert done.returncode == 0, done.stderr
    (acme,) = json.loads(done.stdout)
    assert (acme["tenant"], acme["last_status"], acme["subscribers"]) == ("acme", "applied", 30)
    assert (acme["pending"], acme["ignored"]) == (1, ["notes.txt"])
    assert acme["last_applied_run"] == 1 and acme["failing_since"] is None


def start_sync(config: Path) -> subprocess.Popen:
    env = {**os.environ, "LISTFERRY_LOAD_PLUGINS": ""}
    command = [sys.executable, "-m", "listferry", "--config", str(config), "sync", "--here"]
    return subprocess.Popen(
        [*command, "acme", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def when_fetched(config: Path, proc: subprocess.Popen) -> None:
    """Wait until the sync at ``config`` has fetched its list (it is reading it now)."""
    work = config.parent / "state" / "acme" / "work"
    deadline = time.monotonic() + 60
    while not any(work.glob("run-*/list.csv")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_the_database_restarted_mid_run_fails_it_plainly_and_the_retry_applies(
    tmp_path: Path, bucket
) -> None:
    """A database of its own, stopped while a run reads its file: the run ends failed
    with the reason, exit 75 (try the job again), nothing visible changed; once the
    database is back the same file is applied."""
    from .services import start_postgres

    server = start_postgres(tmp_path / "pg")
    try:
        url = server.create_database()
        with connect(url) as conn:
            create_schema(conn)
            conn.execute("INSERT INTO listferry_tenants (name, settings) VALUES ('acme', '{}')")
        config = write_config(tmp_path / "a", url, bucket)
        upload(bucket, "list.csv", csv_text(people(5)))
        assert sync_here(config)[0]["status"] == "applied"
        upload(bucket, "list.csv", csv_text(people(80_000, segment="NEW")))
        proc = start_sync(config)
        when_fetched(config, proc)
        server.stop()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 75, err
        (run,) = json.loads(out)
        assert run["status"] == "failed"
        assert run["reason"].startswith("the run could not be saved to the cluster: ")
        assert "database" in run["reason"], run["reason"]  # refused, or its lease ended
        assert "Traceback" not in err
        assert keys(bucket, "homes/acme/") == ["list.csv", "list.result.txt"]
        server.start()
        assert rows(url, "SELECT version FROM listferry_stores") == [(1,)]
        (run,) = sync_here(config)
        assert (run["status"], run["added"]) == ("applied", 79_995)
    finally:
        server.stop(remove=True)


def test_a_runs_steps_share_a_connection_and_a_database_restarted_between_costs_nothing(
    tmp_path: Path, bucket
) -> None:
    from listferry.cluster.storage import Storage
    from listferry.cluster.stores import StoreVersions

    from .services import start_postgres

    server = start_postgres(tmp_path / "pg")
    try:
        url = server.create_database()
        with connect(url) as conn:
            create_schema(conn)
        storage = Storage(bucket.url, endpoint_url=bucket.endpoint_url)
        with StoreVersions(url, storage) as versions:
            with versions.session() as first:
                pass
            assert versions.pointer("acme") is None
            with versions.session() as again:
                assert again is first
            server.stop()
            server.start()
            assert versions.pointer("acme") is None  # on a new connection
            with versions.session() as after:
                assert after is not first
    finally:
        server.stop(remove=True)


def test_storage_gone_mid_run_fails_it_plainly_and_the_worker_applies_it_once_back(
    tmp_path: Path, nodes
) -> None:
    """Storage that stops answering while a worker's job reads its file (a server of its
    own, killed, then started again on the same folder): the attempt ends failed with
    the reason and the pointer does not move; the worker tries the job again, waiting
    longer each time, and once storage is back the file is applied, once."""
    from listferry.testing import wait_for

    from .services import start_seaweed

    own = start_seaweed(tmp_path / "weed")
    worker = None
    try:
        bucket_name = own.create_bucket()

        class Own:
            name = bucket_name
            url = f"s3://{bucket_name}/lf"
            endpoint_url = own.endpoint_url
            server = own

        config = write_config(tmp_path / "a", nodes.database_url, Own)
        upload(Own, "list.csv", csv_text(people(5)))
        assert sync_here(config)[0]["status"] == "applied"
        upload(Own, "list.csv", csv_text(people(30_000, segment="NEW")))
        assert listferry(config, "cluster", "init").returncode == 0  # the queue's tables
        env = {**os.environ, "LISTFERRY_LOAD_PLUGINS": ""}
        command = [sys.executable, "-m", "listferry", "--config", str(config)]
        worker = subprocess.Popen(
            [*command, "worker"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert worker.stdout.readline().startswith("worker ")
        waiting = subprocess.Popen(  # the operator's `sync --wait`, across the outage
            [*command, "sync", "acme", "--wait", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        when_fetched(config, worker)
        ((job,),) = rows(nodes.database_url, "SELECT max(id) FROM procrastinate_jobs")
        own.stop(kill=True)
        index = "SELECT status, reason, record->>'added' FROM listferry_runs WHERE job_id = %s"
        slowly = lambda query: time.sleep(0.2) or rows(nodes.database_url, query, job)  # noqa: E731
        wait_for(lambda: slowly(index), timeout=120, what="the first attempt")
        ((status, reason, _),) = rows(nodes.database_url, index, job)
        assert status == "failed" and "storage" in reason, reason
        assert rows(nodes.database_url, "SELECT version FROM listferry_stores") == [(1,)]
        own = own.restart()
        done = "SELECT status::text FROM procrastinate_jobs WHERE id = %s"
        wait_for(
            lambda: slowly(done) == [("succeeded",)],
            timeout=180,
            what="the job tried again",
        )
        attempts = rows(nodes.database_url, index + " ORDER BY id", job)
        assert attempts[-1][::2] == ("applied", "29995"), attempts
        assert all(status == "failed" for status, _, _ in attempts[:-1]), attempts
        assert rows(nodes.database_url, "SELECT version FROM listferry_stores") == [(2,)]
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, err  # the last attempt's runs count
        assert [(run["status"], run["added"]) for run in json.loads(out)] == [("applied", 29_995)]
        assert err.count("(the job tried again)") == len(attempts) - 1, err
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        own.stop()


def test_subscribers_and_events_load_work_on_any_node_over_the_current_version(
    nodes, tmp_path: Path
) -> None:
    upload(nodes.bucket, "list.csv", csv_text(people(3)))
    assert sync_here(nodes("a"))[0]["status"] == "applied"
    listed = listferry(nodes("b"), "subscribers", "acme", "--json")
    assert [row["email"] for row in json.loads(listed.stdout)] == [
        "p0@example.org",
        "p1@example.org",
        "p2@example.org",
    ]
    events = tmp_path / "events.csv"
    events.write_text("email,type,at\np1@example.org,open,2026-12-01T10:00:00Z\n")
    loaded = listferry(nodes("b"), "events", "load", "acme", str(events))
    assert loaded.returncode == 0, loaded.stderr
    assert "1 events stored" in loaded.stdout
    assert rows(nodes.database_url, "SELECT version FROM listferry_stores") == [(2,)]
    store = current_store(nodes, tmp_path)
    assert store.execute("SELECT count(*) FROM events").fetchone() == (1,)
    upload(nodes.bucket, "list.csv", csv_text(people(4)))
    (run,) = sync_here(nodes("a"))  # a's copy is version 1: it takes version 2 first
    assert (run["status"], run["added"]) == ("applied", 1)
    store = current_store(nodes, tmp_path)
    assert store.execute("SELECT count(*) FROM events").fetchone() == (1,)


def test_a_second_run_of_a_tenant_on_another_node_waits_its_turn(nodes, tmp_path: Path) -> None:
    """While node a's run holds the tenant's lease, node b's run of it is skipped (and
    says why, and exits 75: a worker's job is tried again later); a's run applies the
    file."""
    upload(nodes.bucket, "list.csv", csv_text(people(40_000)))
    first = start_sync(nodes("a", lease=60))
    when_fetched(nodes("a", lease=60), first)
    first.send_signal(signal.SIGSTOP)  # a holds its lease (60 s) while b tries
    try:
        tried = listferry(nodes("b", lease=60), "sync", "--here", "acme", "--json")
    finally:
        first.send_signal(signal.SIGCONT)
    assert tried.returncode == 75, tried.stderr
    (second,) = json.loads(tried.stdout)
    assert second["status"] == "skipped"
    assert second["reason"] == "another run of this tenant is in progress on another node"
    out, err = first.communicate(timeout=120)
    (run,) = json.loads(out)
    assert (run["status"], run["added"]) == ("applied", 40_000), err
    indexed = rows(nodes.database_url, "SELECT status FROM listferry_runs")
    assert sorted(indexed) == [("applied",), ("skipped",)]


def test_digest_and_check_answer_from_the_cluster_on_any_node(nodes, tmp_path: Path) -> None:
    upload(nodes.bucket, "list.csv", csv_text(people(4)))
    assert sync_here(nodes("a"))[0]["status"] == "applied"
    upload(nodes.bucket, "list.csv", csv_text(people(1)))  # would remove 3 of 4
    assert sync_here(nodes("a"))[0]["status"] == "voided"
    digest = listferry(nodes("b"), "digest", "--json")
    assert digest.returncode == 0, digest.stderr
    (day,) = json.loads(digest.stdout)["tenants"]
    assert day["runs"] == {"applied": 1, "voided": 1}
    small = tmp_path / "small.csv"
    small.write_text(csv_text(people(1)))
    check = listferry(nodes("b"), "check", str(small), "--tenant", "acme", "--json")
    assert check.returncode == 1 and json.loads(check.stdout)["status"] == "void"
    missing = listferry(nodes("b"), "runs", "nobody")
    assert missing.stderr.startswith("Error: the cluster's database: no tenant 'nobody'")


def test_a_database_without_listferry_tables_says_to_run_cluster_init(
    tmp_path: Path, database_url: str, bucket
) -> None:
    config = write_config(tmp_path / "a", database_url, bucket)
    for command in (["status"], ["cluster", "status"]):
        done = listferry(config, *command)
        assert done.returncode == 1
        assert "no listferry tables yet: run 'listferry cluster init'" in done.stderr
        assert len(done.stderr.splitlines()) == 1


def test_queueing_before_cluster_init_says_to_run_it_in_one_line(nodes) -> None:
    done = listferry(nodes("a"), "sync", "acme")  # our tables are there, the queue's not
    assert done.returncode == 1
    assert "run 'listferry cluster init'" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "internal error" not in done.stderr
