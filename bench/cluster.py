"""Cluster mode: a night of many tenants on 2 workers against 1, and against one machine.

    python bench/cluster.py [--tenants 200] [--rows 1000] [--big 100000] [--rounds 1]

The goals' sizes are ``--tenants 2000 --rows 1000 --big 1000000`` (about an hour here).

Each tenant has a ``rows``-row list, and one more tenant a ``big``-row list. A first
night (not timed) fills every store; the timed night brings the next version of every
list (10% of the rows changed), as on an ordinary night. Three ways of running it:

- cluster mode, 1 worker (``listferry worker --concurrency 1``), and
- cluster mode, 2 workers, each a node of its own (its own state folder and store
  copies): PostgreSQL on 127.0.0.1 (or ``$LISTFERRY_TEST_DATABASE_URL``) and a
  SeaweedFS server started here; the night is ``listferry sync --all`` (one job per
  tenant) until the queue is empty;
- one machine, the ``local`` executor with 2 workers: each tenant's sync its own
  ``listferry sync NAME`` process, as the schedule runs it.

It prints the time of each night and two figures: 2 workers against 1 (goal: at least
1.7x the throughput, so at most 0.59x the time) and cluster mode against one machine
(goal: at most 1.3x the time: the price of storage round trips and the queue).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "cluster"))  # not as "cluster": that is us

from common import Figure, table  # noqa: E402
from many_tenants import write_list  # noqa: E402
from services import (  # noqa: E402
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    Missing,
    find_postgres,
    start_seaweed,
)


def listferry(config: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "listferry", "--config", str(config), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True, **kwargs)


class Night:
    """The tenants, their lists of each version, and where they go."""

    def __init__(self, root: Path, tenants: int, rows: int, big: int) -> None:
        self.root = root
        self.lists = root / "lists"
        self.names = [f"t{i:05d}" for i in range(tenants)] + ["big"]
        self.rows = {name: rows for name in self.names[:-1]} | {"big": big}
        self.start = {name: i * rows for i, name in enumerate(self.names)}

    def write(self, version: int) -> None:
        """Each tenant's list of ``version``, once, in ``lists/VERSION/NAME.csv``."""
        folder = self.lists / str(version)
        if folder.exists():
            return
        folder.mkdir(parents=True)
        for name in self.names:
            write_list(folder / f"{name}.csv", self.start[name], self.rows[name], version)

    def file(self, version: int, name: str) -> Path:
        return self.lists / str(version) / f"{name}.csv"

    def tenants_toml(self, homes: Path | None = None) -> str:
        out = ""
        for name in self.names:
            out += f"\n[tenants.{name}]\n"
            if homes is not None:
                out += f'home = "{homes / name}"\n'
        return out


DEFAULTS = '[defaults]\ncount_file = "off"\nmax_shrink_share = 1.0\nstrategy = "full"\n'


class ClusterSetup:
    """A database, a bucket prefix and ``workers`` nodes over them."""

    def __init__(self, root: Path, night: Night, database: str, seaweed, workers: int):
        self.root, self.night, self.database = root, night, database
        self.seaweed = seaweed
        self.bucket = seaweed.create_bucket()
        self.prefix = "bench"
        self.configs = []
        for n in range(max(workers, 1)):
            node = root / f"node{n}"
            node.mkdir(parents=True)
            config = node / "listferry.toml"
            config.write_text(
                f'[listferry]\nstate = "state"\n\n[cluster]\ndatabase = "{database}"\n\n'
                f'[storage]\nurl = "s3://{self.bucket}/{self.prefix}"\n'
                f'endpoint_url = "{seaweed.endpoint_url}"\n\n' + DEFAULTS
            )
            self.configs.append(config)
        listferry(self.configs[0], "cluster", "init")
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:  # the tenants every node shares
            conn.cursor().executemany(
                "INSERT INTO listferry_tenants (name, settings) VALUES (%s, '{}')",
                [(name,) for name in night.names],
            )
        self.workers: list[subprocess.Popen] = []
        self.count = workers

    def upload(self, version: int) -> None:
        client = self.seaweed.client()

        def put(name: str) -> None:
            key = f"{self.prefix}/homes/{name}/subscriber_list.csv"
            client.upload_file(str(self.night.file(version, name)), self.bucket, key)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, self.night.names))

    def start_workers(self) -> None:
        for config in self.configs[: self.count]:
            command = [sys.executable, "-m", "listferry", "--config", str(config), "worker"]
            process = subprocess.Popen(
                [*command, "--concurrency", "1"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            process.stdout.readline()  # "worker HOST:PID: ..." once it runs
            self.workers.append(process)

    def drained(self) -> bool:
        import psycopg

        with psycopg.connect(self.database, autocommit=True) as conn:
            (left,) = conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            ).fetchone()
        return left == 0

    def night_run(self) -> float:
        started = time.perf_counter()
        listferry(self.configs[0], "sync", "--all")
        while not self.drained():
            time.sleep(0.2)
        return time.perf_counter() - started

    def failures(self) -> int:
        import psycopg

        with psycopg.connect(self.database, autocommit=True) as conn:
            (failed,) = conn.execute(
                "SELECT count(*) FROM listferry_runs WHERE status IN ('failed', 'voided')"
            ).fetchone()
        return failed

    def stop(self) -> None:
        for process in self.workers:
            process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


class LocalSetup:
    """One machine: local homes, the local executor with 2 workers."""

    def __init__(self, root: Path, night: Night) -> None:
        self.root, self.night = root, night
        self.homes = root / "homes"
        root.mkdir(parents=True)
        self.config = root / "listferry.toml"
        self.config.write_text(
            '[listferry]\nstate = "state"\nworkers = 2\n\n' + DEFAULTS + night.tenants_toml()
        )
        for name in night.names:
            (self.homes / name).mkdir(parents=True)

    def upload(self, version: int) -> None:
        for name in self.night.names:
            target = self.homes / name / "subscriber_list.csv"
            shutil.copyfile(self.night.file(version, name), target)

    def night_run(self) -> float:
        from listferry.config import load_config
        from listferry.jobs import Job
        from listferry_plugins.executors import LocalExecutor

        executor = LocalExecutor(load_config(self.config))
        started = time.perf_counter()
        futures = []
        for name in self.night.names:
            argv = [sys.executable, "-m", "listferry", "--config", str(self.config)]
            futures.append(executor.submit(Job("sync", name, [*argv, "sync", name, "--json"])))
        codes = [future.result().returncode for future in futures]
        took = time.perf_counter() - started
        executor.shutdown()
        if any(code != 0 for code in codes):
            raise RuntimeError(f"local syncs failed: exit codes {sorted(set(codes))}")
        return took


def measure(setup, night: Night, rounds: int) -> float:
    """The warm-up night, then ``rounds`` timed nights of the next versions: the median."""
    setup.upload(0)
    setup.night_run()
    times = []
    for version in range(1, rounds + 1):
        night.write(version)
        setup.upload(version)
        times.append(setup.night_run())
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION
    )
    os.environ.setdefault("LISTFERRY_LOAD_PLUGINS", "")
    root = Path(tempfile.mkdtemp(prefix="listferry-bench-cluster-"))
    seaweed = postgres = None
    try:
        try:
            postgres = find_postgres(root / "postgres")
            seaweed = start_seaweed(root / "seaweed")
        except Missing as exc:
            raise SystemExit(f"skipped: {exc}") from None
        night = Night(root, args.tenants, args.rows, args.big)
        night.write(0)
        times: dict[str, float] = {}
        local = LocalSetup(root / "local", night)
        times["local executor, 2 workers"] = measure(local, night, args.rounds)
        for workers in (1, 2):
            database = postgres.create_database()
            setup = ClusterSetup(root / f"cluster{workers}", night, database, seaweed, workers)
            setup.start_workers()
            try:
                times[f"cluster, {workers} worker(s)"] = measure(setup, night, args.rounds)
                if setup.failures():
                    raise RuntimeError(f"{setup.failures()} runs failed or voided in cluster mode")
            finally:
                setup.stop()
                postgres.drop_database(database)
        for name, took in times.items():
            print(f"{name}: {took:.1f} s", file=sys.stderr)
        size = f"{args.tenants} x {args.rows} rows + 1 x {args.big}"
        return [
            Figure(
                f"cluster night, 2 workers vs 1 ({size})",
                times["cluster, 2 worker(s)"],
                times["cluster, 1 worker(s)"],
                "1 worker",
                "<= 0.59x (>= 1.7x throughput)",
            ),
            Figure(
                f"cluster night vs one machine ({size})",
                times["cluster, 2 worker(s)"],
                times["local executor, 2 workers"],
                "local executor",
                "<= 1.3x",
            ),
        ]
    finally:
        if seaweed is not None:
            seaweed.stop()
        if postgres is not None:
            postgres.stop(remove=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    print(table(main()))
