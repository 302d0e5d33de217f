"""The job queue of cluster mode, with real PostgreSQL and real `listferry worker`
processes: a tenant's jobs never overlap, a tenant queued twice runs once, a dead
worker's job runs on another, SIGTERM lets a running job finish."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import psycopg
import pytest

from listferry.testing import wait_for

#: A plugin whose plan check, on the first file it sees, says so in a marker file (with
#: its pid) and sleeps until the marker is removed or 30 s have passed.
SLOW_PLUGIN = """
import os, time
from pathlib import Path
from listferry import hookimpl

@hookimpl
def check_plan(plan, tenant, force):
    marker = Path(os.environ["SLOW_MARKER"])
    if not marker.with_suffix(".seen").exists():
        marker.with_suffix(".seen").touch()
        marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + 30
        while marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return None

@hookimpl
def collect_events(tenant, since):
    if os.environ.get("EXPORT_MARKER"):  # an export that says so and waits
        marker = Path(os.environ["EXPORT_MARKER"])
        marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + 30
        while marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return []
"""


class Cluster:
    """A config with ``[cluster]`` over a fresh database, its tenants' homes local."""

    def __init__(self, root: Path, database_url: str, bucket) -> None:
        self.root = root
        self.bucket_url = bucket.url
        self.database_url = database_url
        self.config = root / "listferry.toml"
        (root / "plugin").mkdir()
        (root / "plugin" / "slow_check.py").write_text(SLOW_PLUGIN)
        self.marker = root / "slow.marker"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(root / "plugin"),
            "SLOW_MARKER": str(self.marker),
        }
        for name in ("acme", "bob"):
            (root / "homes" / name).mkdir(parents=True)
        self.config.write_text(
            '[listferry]\nstate = "state"\nplugins = ["slow_check"]\n\n'
            f'[cluster]\ndatabase = "{database_url}"\nstalled_after = 3\n\n'
            f'[storage]\nurl = "{bucket.url}"\nendpoint_url = "{bucket.endpoint_url}"\n\n'
            '[defaults]\ncount_file = "off"\n'
        )
        self.workers: list[subprocess.Popen[str]] = []

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "listferry", "--config", str(self.config), *args]
        return subprocess.run(
            command, capture_output=True, text=True, env=self.env, timeout=60, check=False
        )

    def upload(self, tenant: str, rows: int) -> None:
        lines = ["email,first_name,last_name,segment_code"]
        lines += [f"p{i}@example.org,First{i},Last{i},GOLD" for i in range(rows)]
        (self.root / "homes" / tenant / "subscriber_list.csv").write_text("\n".join(lines) + "\n")

    def worker(self, concurrency: int = 2) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "listferry", "--config", str(self.config), "worker"]
        log = self.root / f"worker-{len(self.workers)}.log"
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [*command, "--concurrency", str(concurrency)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=self.env,
            )
        self.workers.append(process)
        line = process.stdout.readline()
        assert line.startswith("worker "), log.read_text()
        return process

    def worker_logs(self) -> str:
        return "".join(log.read_text() for log in sorted(self.root.glob("worker-*.log")))

    def sql(self, query: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def stop(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def cluster(tmp_path: Path, database_url: str, bucket) -> Iterator[Cluster]:
    made = Cluster(tmp_path, database_url, bucket)
    done = made.run("cluster", "init")
    assert done.returncode == 0, done.stderr
    for name in ("acme", "bob"):  # the tenants live in the cluster's database
        done = made.run("tenant", "add", name, "--home", str(tmp_path / "homes" / name))
        assert done.returncode == 0, done.stderr
    try:
        yield made
    finally:
        made.stop()


def queued_job(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    return entry["job_id"]


def test_sync_wait_runs_the_tenant_through_a_worker(cluster: Cluster) -> None:
    cluster.marker.with_suffix(".seen").touch()  # no slow check
    cluster.upload("acme", 3)
    cluster.worker()
    result = cluster.run("sync", "acme", "--wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("acme: applied subscriber_list.csv"), result.stdout
    assert "3 received, 3 added" in result.stdout
    again = cluster.run("sync", "acme", "--wait", "--json")
    assert [run["status"] for run in json.loads(again.stdout)] == ["idle"]


def test_a_tenant_queued_twice_while_waiting_runs_once(cluster: Cluster) -> None:
    first = cluster.run("sync", "acme", "bob")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("acme: queued as job ") and lines[1].startswith("bob: queued")
    acme = int(lines[0].rsplit(" ", 1)[1])
    second = cluster.run("sync", "acme", "--json")
    assert json.loads(second.stdout) == [{"tenant": "acme", "job_id": acme, "queued": False}]
    assert cluster.run("sync", "acme").stdout == f"acme: already queued as job {acme}\n"
    assert cluster.sql("SELECT count(*) FROM procrastinate_jobs") == [(2,)]


def test_a_tenants_jobs_never_overlap_across_workers(cluster: Cluster) -> None:
    cluster.marker.with_suffix(".seen").touch()
    cluster.worker(concurrency=2)
    cluster.worker(concurrency=2)
    command = [sys.executable, "-m", "listferry", "--config", str(cluster.config), "sync"]
    script = f"import subprocess\nfor _ in range(4): subprocess.run({[*command, 'acme', 'bob']!r})"
    queuers = [
        subprocess.Popen([sys.executable, "-c", script], env=cluster.env, stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    out = "".join(q.communicate(timeout=60)[0].decode() for q in queuers)
    jobs = {int(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.startswith("acme")}
    wait_for(
        lambda: (
            cluster.sql("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")
            == [(0,)]
        ),
        "every job to end",
        timeout=60,
    )
    spans = cluster.sql(
        "SELECT j.id, min(e.at) FILTER (WHERE e.type = 'started'), "
        "max(e.at) FILTER (WHERE e.type = 'succeeded') FROM procrastinate_jobs j "
        "JOIN procrastinate_events e ON e.job_id = j.id WHERE j.args->>'tenant' = 'acme' "
        "GROUP BY j.id ORDER BY 2"
    )
    assert {job for job, _, _ in spans} == jobs
    assert len(spans) >= 2, "the test needs several jobs of one tenant"
    assert all(start and end for _, start, end in spans)
    for (_, _, end), (_, start, _) in pairwise(spans):
        assert end <= start, spans


def test_a_killed_workers_job_runs_on_another(cluster: Cluster) -> None:
    cluster.upload("acme", 5)
    first = cluster.worker()
    job = queued_job(cluster.run("sync", "acme", "--json"))
    child = int(wait_for(lambda: cluster.marker.exists() and cluster.marker.read_text(), "check"))
    first.kill()
    first.wait()
    wait_for(lambda: not Path(f"/proc/{child}").exists(), "the child to die with its worker")
    cluster.worker()
    wait_for(
        lambda: (
            cluster.sql("SELECT status::text FROM procrastinate_jobs WHERE id = %s", job)
            == [("succeeded",)]
        ),
        "the job to be retried and succeed",
        timeout=30,
    )
    runs = [
        record
        for (record,) in cluster.sql(
            "SELECT record FROM listferry_runs WHERE job_id = %s ORDER BY id", job
        )
    ]
    assert [run["status"] for run in runs] == ["failed", "applied"], runs
    assert "stopped answering (no heartbeat for 3 s); queued again" in runs[0]["reason"]
    assert runs[1]["file"] == "subscriber_list.csv" and runs[1]["added"] == 5


def test_a_killed_workers_job_gives_way_to_one_queued_since(cluster: Cluster) -> None:
    # Procrastinate alone would fail to put it back (procrastinate#1446): the queued
    # job holds the tenant's queueing lock
    cluster.upload("acme", 4)
    first = cluster.worker()
    job = queued_job(cluster.run("sync", "acme", "--json"))
    wait_for(cluster.marker.exists, "the sync to be in its plan check")
    first.kill()
    first.wait()
    later = queued_job(cluster.run("sync", "acme", "--json"))
    cluster.worker()
    result = cluster.run("sync", "acme", "--wait")  # waits for `later`, already queued
    assert result.stdout.startswith("acme: applied subscriber_list.csv"), result.stdout
    assert cluster.sql(
        "SELECT id, status::text FROM procrastinate_jobs WHERE id IN (%s, %s) ORDER BY id",
        job,
        later,
    ) == [(job, "failed"), (later, "succeeded")]
    ((reason,),) = cluster.sql("SELECT reason FROM listferry_runs WHERE job_id = %s", job)
    assert reason.endswith(f"; job {later} runs the tenant")


def test_sigterm_lets_the_running_job_finish(cluster: Cluster) -> None:
    cluster.upload("acme", 2)
    worker = cluster.worker()
    job = queued_job(cluster.run("sync", "acme", "--json"))
    wait_for(cluster.marker.exists, "the sync to be in its plan check")
    worker.send_signal(signal.SIGTERM)
    cluster.marker.unlink()  # the check ends; the run goes on
    assert worker.wait(timeout=30) == 0
    assert cluster.sql("SELECT status::text FROM procrastinate_jobs WHERE id = %s", job) == [
        ("succeeded",)
    ]
    assert cluster.sql("SELECT status FROM listferry_runs WHERE job_id = %s", job) == [("applied",)]


def test_a_crashed_sync_process_is_recorded_and_tried_again(cluster: Cluster) -> None:
    cluster.upload("acme", 2)
    cluster.worker()
    job = queued_job(cluster.run("sync", "acme", "--json"))
    child = int(wait_for(lambda: cluster.marker.exists() and cluster.marker.read_text(), "check"))
    os.kill(child, signal.SIGKILL)
    result = cluster.run("sync", "acme", "--wait")
    assert result.returncode == 0, result.stderr  # the last attempt is what counts
    assert result.stdout.startswith("acme: applied subscriber_list.csv"), result.stdout
    assert len(result.stdout.splitlines()) == 1
    assert (
        "acme: failed: the sync process was killed by SIGKILL; tried again in 2 s "
        "(the job tried again)"
    ) in result.stderr  # the killed attempt is a failed run, told apart
    assert cluster.sql(
        "SELECT attempt, status FROM listferry_runs WHERE job_id = %s ORDER BY id", job
    ) == [(0, "failed"), (1, "applied")]
    assert "acme: job" in cluster.worker_logs() and "Traceback" not in cluster.worker_logs()
    # Procrastinate counts the retry and the end of the second attempt
    assert cluster.sql("SELECT attempts FROM procrastinate_jobs WHERE id = %s", job) == [(2,)]


def test_a_jobs_process_past_its_time_limit_is_killed_with_its_session(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the worker does at a job's time limit (its ``sync_timeout`` and a minute, too
    long to wait for here): SIGKILL to the forked process's session, and the end it
    hears is that signal."""
    from listferry.cluster.forks import ForkServer

    cluster.upload("acme", 2)
    monkeypatch.setenv("PYTHONPATH", cluster.env["PYTHONPATH"])  # the slow plan check
    monkeypatch.setenv("SLOW_MARKER", str(cluster.marker))
    server = ForkServer()

    async def past_its_limit() -> tuple[int, int]:
        argv = ["--config", str(cluster.config), "sync", "--here", "acme"]
        child = await server.start(argv, {"LISTFERRY_JOB_ID": "1"})
        await asyncio.to_thread(wait_for, cluster.marker.exists, "the plan check", 60)
        assert int(cluster.marker.read_text()) == child.pid  # the fork runs the sync
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(child.communicate(), 0.2)
        os.killpg(child.pid, signal.SIGKILL)
        return child.pid, await child.wait()

    try:
        pid, code = asyncio.run(past_its_limit())
    finally:
        server.close()
    assert code == -signal.SIGKILL
    assert not Path(f"/proc/{pid}").exists()


def test_a_jobs_process_dies_with_the_fork_server_and_the_next_job_has_a_new_one(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from listferry.cluster.forks import ForkServer

    cluster.upload("acme", 2)
    monkeypatch.setenv("PYTHONPATH", cluster.env["PYTHONPATH"])
    monkeypatch.setenv("SLOW_MARKER", str(cluster.marker))
    monkeypatch.setenv("LISTFERRY_LOAD_PLUGINS", "")
    server = ForkServer()
    argv = ["--config", str(cluster.config), "sync", "--here", "acme"]

    async def server_killed() -> tuple[int, int]:
        child = await server.start(argv, {"LISTFERRY_JOB_ID": "1"})
        await asyncio.to_thread(wait_for, cluster.marker.exists, "the plan check", 60)
        first_server = server.pid
        assert first_server is not None
        os.kill(first_server, signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL
        await asyncio.to_thread(
            wait_for, lambda: not Path(f"/proc/{child.pid}").exists(), "the job's end", 30
        )
        again = await server.start(argv, {"LISTFERRY_JOB_ID": "2"})
        await again.communicate()
        assert server.pid != first_server
        return child.pid, again.returncode

    try:
        _, code = asyncio.run(server_killed())
    finally:
        server.close()
    assert code == 0  # the list applied by the next job


def test_a_forked_jobs_exit_code_and_error_line_reach_the_worker(tmp_path: Path) -> None:
    from listferry.cluster.forks import ForkServer

    missing = tmp_path / "nothing.toml"
    server = ForkServer()

    async def run() -> tuple[int, bytes]:
        child = await server.start(["--config", str(missing), "sync", "--here", "acme"], {})
        stderr = await child.communicate()
        return child.returncode, stderr

    try:
        code, stderr = asyncio.run(run())
    finally:
        server.close()
    assert code == 2
    assert stderr.decode() == (
        f"Error: {missing}: no such config file (run 'listferry init', or pass --config PATH)\n"
    )


def test_cluster_init_twice_and_status(cluster: Cluster) -> None:
    again = cluster.run("cluster", "init")
    assert again.returncode == 0, again.stderr
    assert "Procrastinate's tables are current" in again.stdout
    cluster.worker()
    cluster.run("sync", "acme", "bob")  # no slow check runs: the homes are empty
    status = json.loads(cluster.run("cluster", "status", "--json").stdout)
    assert len(status["workers"]) == 1 and status["workers"][0]["alive"] is True
    assert set(status) == {
        "database",
        "storage",
        "workers",
        "queued",
        "running",
        "stalled",
        "leader",
    }
    assert status["leader"] is None
    assert status["storage"]["error"] is None
    text = cluster.run("cluster", "status").stdout
    assert "workers: 1 alive" in text and f"storage {cluster.bucket_url}: answers" in text
    # storage that does not answer is said, in one line, and the rest still shows
    cluster.config.write_text(
        re.sub(
            r'endpoint_url = "[^"]*"',
            'endpoint_url = "http://127.0.0.1:9"',
            cluster.config.read_text(),
        )
    )
    down = cluster.run("cluster", "status")
    assert down.returncode == 0 and "workers: 1 alive" in down.stdout
    assert "storage: storage http://127.0.0.1:9 unreachable" in down.stdout


def test_a_schema_made_by_procrastinate_itself_is_taken_as_current(
    tmp_path: Path, database_url: str, bucket
) -> None:
    from procrastinate.schema import SchemaManager

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SchemaManager.get_schema())
    made = Cluster(tmp_path, database_url, bucket)
    result = made.run("cluster", "init")
    assert result.returncode == 0, result.stderr
    assert "Procrastinate's tables are current" in result.stdout


@pytest.mark.parametrize("args", [["worker"], ["cluster", "init"], ["cluster", "status", "--json"]])
def test_cluster_commands_without_cluster_exit_2(tmp_path: Path, args: list[str]) -> None:
    config = tmp_path / "listferry.toml"
    config.write_text('[listferry]\nstate = "state"\n')
    command = [sys.executable, "-m", "listferry", "--config", str(config), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr == (
        f"Error: no [cluster] table in {config}: cluster mode is off (see docs/cluster.md)\n"
    )


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    from .services import free_port

    config = tmp_path / "listferry.toml"
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    config.write_text(
        f'[cluster]\ndatabase = "{url}"\n[storage]\nurl = "s3://lists-bucket/x"\nendpoint_url = "http://127.0.0.1:9"\n'
    )
    command = [sys.executable, "-m", "listferry", "--config", str(config), "worker"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: database {url}: could not connect")
    assert len(result.stderr.splitlines()) == 1
