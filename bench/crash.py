"""Crash safety: ``listferry sync`` SIGKILLed at random moments; the old list or the new.

    python3 bench/crash.py [--trials 100] [--rows 100000] [--seed N]
                           [--strategy full|incremental] [--trial K] [--jobs J] [--work DIR]

A tenant holds a last good list of ``rows`` subscribers (names, a segment, a ``City``
column kept in ``fields``); a new file with its count file changes 10% of them, brings
5% new and, for ``full``, drops 5%. One uninterrupted run, on a copy, measures when
each phase starts, from the hook trace the process prints on stderr
(``LISTFERRY_TRACE_PLUGINS=1``) and from the archive folder:

    starting   the process starts: imports, store open and check, fetch, digest
    reading    validate_header is called: the file is read and staged
    planning   validate_file is done: the plan is made and checked
    applying   check_plan is done: the one apply transaction
    archiving  the file shows in the archive: commit, take it out of the home, report

Each trial starts from a fresh copy of the state folder and the home, runs ``listferry
sync`` as its own process and SIGKILLs it at a moment drawn from the trial's seed: a
phase (each block of five trials aims once at each) and a point inside it, measured
from the moment this run reached that phase. Then, with the store opened read-only, it
checks that every subscriber row (status and fields too) equals the old list or the new
one, that the run record agrees, that the list and count files are pending in the home
or archived, and ``PRAGMA integrity_check``; then it runs ``listferry sync`` again and
checks that it finishes the work (or finds it done), and that no run is left
``running``. It prints, per phase the kill landed in, the trials, the outcomes and the
failures (goal: 0), and the command that reproduces a trial. Exit status 1 on failures.

``--jobs J`` runs J trials at once, each in its own copy: on a busy machine that gets
the trials their share of the CPUs. The kills then land less exactly where they were
aimed, which matters little: each trial is counted in the phase it was seen in.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from listferry.app import App, open_app
from listferry.config.edit import write_atomically
from listferry.config.starter import STARTER_CONFIG
from listferry.ops.tenants import add_tenant
from listferry.sync.run import sync_tenant

PHASES = ("starting", "reading", "planning", "applying", "archiving")
#: The phases, and the run's end: the store closed, ``run_finished`` called.
STAGES = (*PHASES, "ended")
#: What the hook trace prints when a stage starts (``starting`` is the process start,
#: ``archiving`` the file showing in the archive).
MARKERS = {
    "reading": b"hook validate_header(",
    "planning": b"hook validate_file done",
    "applying": b"hook check_plan done",
    "ended": b"hook run_finished(",
}
TENANT = "acme"
LIST = "subscriber_list.csv"
COUNT = "subscriber_list_count.txt"
HEADER = "email,first_name,last_name,segment_code,City\n"
FIRST = ("Ann", "Bob", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jana")
LAST = ("Smith", "Jones", "Brown", "Novak", "Meyer", "Rossi", "Dubois", "Kowalski")
CITY = ("Berlin", "Lyon", "Porto", "Brno", "Gent", "Turku", "Cork", "Graz")

Row = tuple[str, str, str, str, str]


def listferry_command() -> list[str]:
    exe = Path(sys.executable).parent / "listferry"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "listferry"]


def child_env() -> dict[str, str]:
    """Built-in plugins only, and the hook trace on stderr."""
    return {**os.environ, "LISTFERRY_LOAD_PLUGINS": "", "LISTFERRY_TRACE_PLUGINS": "1"}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the data ------------------------------------------------------------------------------


def person(rng: random.Random, i: int) -> Row:
    return (
        f"user{i:07d}@example{i % 53}.org",
        rng.choice(FIRST),
        rng.choice(LAST),
        f"S{rng.randrange(100):02d}",
        rng.choice(CITY),
    )


def lists(rows: int, seed: int, strategy: str) -> tuple[list[Row], list[Row]]:
    """The last good list and the CRM's next file, both from ``seed``."""
    rng = random.Random(seed)
    old = [person(rng, i) for i in range(rows)]
    new: list[Row] = []
    for row in old:
        if strategy == "full" and rng.random() < 0.05:
            continue  # dropped: a full list removes it
        if rng.random() < 0.10:
            row = (*row[:2], row[2] + "-Neu", row[3], rng.choice(CITY))
        new.append(row)
    new += [person(rng, i) for i in range(rows, rows + rows // 20)]
    return old, new


def write_list(home: Path, rows: list[Row]) -> None:
    with (home / LIST).open("w", encoding="utf-8", newline="") as f:
        f.write(HEADER)
        f.writelines(",".join(row) + "\n" for row in rows)
    (home / COUNT).write_text(f"{len(rows)}\n")


def expected_list(old: list[Row], new: list[Row], strategy: str) -> dict[str, tuple]:
    """email -> (first, last, segment, City, status) once the new file is applied."""
    want = {r[0]: (*r[1:], "active") for r in old}
    if strategy == "full":
        want = {email: (*row[:4], "removed") for email, row in want.items()}
    want.update({r[0]: (*r[1:], "active") for r in new})
    return want


# -- the store, read-only ------------------------------------------------------------------


def connect_ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def list_digest(db: Path) -> str:
    """SHA-256 of every subscriber row (names, segment, status, fields) and opt-out."""
    digest = hashlib.sha256()
    with connect_ro(db) as conn:
        for query in (
            "SELECT email, first_name, last_name, segment_code, status, fields "
            "FROM subscribers ORDER BY email",
            "SELECT email, source FROM optouts ORDER BY email",
        ):
            for row in conn.execute(query):
                digest.update(repr(row).encode())
            digest.update(b"|")
    return digest.hexdigest()


def stored_list(db: Path) -> dict[str, tuple]:
    with connect_ro(db) as conn:
        return {
            email: tuple(rest)
            for email, *rest in conn.execute(
                "SELECT email, first_name, last_name, segment_code, "
                "json_extract(fields, '$.City'), status FROM subscribers"
            )
        }


def store_facts(db: Path, sha: str) -> tuple[str, int, int]:
    """integrity_check, runs applying the file ``sha``, runs left ``running``."""
    with connect_ro(db) as conn:
        integrity = " ".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
        (applied,) = conn.execute(
            "SELECT count(*) FROM runs WHERE status = 'applied' AND sha256 = ?", (sha,)
        ).fetchone()
        (running,) = conn.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()
    return integrity, applied, running


# -- the scenario --------------------------------------------------------------------------


@dataclass
class Scenario:
    """The starting state (config, state folder, home) and what the two lists hash to."""

    work: Path
    rows: int
    seed: int
    strategy: str
    old_digest: str = ""
    new_digest: str = ""
    list_sha: str = ""
    count_sha: str = ""
    expected: dict[str, tuple] = field(default_factory=dict)
    starts: dict[str, float] = field(default_factory=dict)
    exited: float = 0.0
    apps: dict[Path, App] = field(default_factory=dict, repr=False)

    @property
    def start(self) -> Path:
        return self.work / "start"

    def slot(self, number: int) -> Path:
        """The folder where trials run, one at a time per slot (``--jobs`` slots)."""
        return self.work / f"trial-{number}"

    def home(self, root: Path) -> Path:
        return root / "homes" / TENANT

    def state(self, root: Path) -> Path:
        return root / "state" / TENANT

    def database(self, root: Path) -> Path:
        return self.state(root) / "tenant.db"

    def duration(self, phase: str) -> float:
        return self.starts[STAGES[STAGES.index(phase) + 1]] - self.starts[phase]

    def build(self) -> None:
        """The tenant with its last good list applied, and the new file waiting."""
        self.start.mkdir(parents=True)
        config = self.start / "listferry.toml"
        write_atomically(config, STARTER_CONFIG)
        add_tenant(open_app(config), TENANT, {"strategy": self.strategy, "count_file": "required"})
        home = self.home(self.start)
        home.mkdir(parents=True)
        old, new = lists(self.rows, self.seed, self.strategy)
        write_list(home, old)
        app = open_app(config)
        runs = sync_tenant(app, app.config.tenant(TENANT))
        assert [r.status for r in runs] == ["applied"], runs
        self.old_digest = list_digest(self.database(self.start))
        write_list(home, new)
        self.list_sha, self.count_sha = sha256_of(home / LIST), sha256_of(home / COUNT)
        self.expected = expected_list(old, new, self.strategy)

    def app(self, root: Path) -> App:
        """The trial folder's listferry, opened once (its config never changes)."""
        if root not in self.apps:
            self.apps[root] = open_app(root / "listferry.toml")
        return self.apps[root]

    def restore(self, root: Path) -> None:
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(self.start, root)

    def spawn(self, root: Path) -> subprocess.Popen:
        """``listferry sync`` of the trial folder's tenant, its hook trace on a pipe."""
        config = str(root / "listferry.toml")
        return subprocess.Popen(
            [*listferry_command(), "--config", config, "sync", TENANT],
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def measure(self) -> None:
        """One uninterrupted run: when each phase starts, and what the new list is."""
        root = self.slot(0)
        self.restore(root)
        proc = self.spawn(root)
        watch = Watch(proc, self.state(root) / "archive")
        while watch.poll():
            pass
        assert proc.returncode == 0, f"the uninterrupted sync exited {proc.returncode}"
        missing = [p for p in STAGES if p not in watch.seen]
        assert not missing, f"the uninterrupted sync never showed {missing}"
        self.starts, self.exited = watch.seen, watch.ended
        db = self.database(root)
        assert stored_list(db) == self.expected, "the uninterrupted sync made another list"
        self.new_digest = list_digest(db)
        assert self.new_digest != self.old_digest

    def timeline(self) -> str:
        starts = ", ".join(f"{p} {self.starts[p]:.2f}" for p in STAGES)
        return f"{starts}, exit {self.exited:.2f} s"


class Watch:
    """Follows a sync process: the moment (since it started) each phase was first seen."""

    def __init__(self, proc: subprocess.Popen, archive: Path) -> None:
        self.proc = proc
        self.archive = archive
        self.archived = set(os.listdir(archive))
        self.began = time.monotonic()
        self.seen: dict[str, float] = {"starting": 0.0}
        self.ended: float | None = None
        self.fd = proc.stderr.fileno()
        os.set_blocking(self.fd, False)
        self.tail = b""

    @property
    def phase(self) -> str:
        return max(self.seen, key=STAGES.index)

    def now(self) -> float:
        return time.monotonic() - self.began

    def poll(self, wait: float = 0.0005) -> bool:
        """Look once (waiting at most ``wait`` for output); False once the process ended."""
        ready, _, _ = select.select([self.fd], [], [], wait)
        at = self.now()
        if ready:
            self.read(os.read(self.fd, 1 << 16), at)
        running = self.proc.poll() is None
        if "archiving" not in self.seen and set(os.listdir(self.archive)) - self.archived:
            self.seen["archiving"] = at
        if running:
            return True
        self.ended = self.now()
        os.set_blocking(self.fd, True)
        self.read(self.proc.stderr.read(), self.ended)  # what it wrote before it ended
        self.proc.stderr.close()
        return False

    def read(self, chunk: bytes, at: float) -> None:
        text = self.tail + chunk
        self.tail = text[-64:]
        for phase, marker in MARKERS.items():
            if phase not in self.seen and marker in text:
                self.seen[phase] = at

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc.stderr.close()


# -- the trials ----------------------------------------------------------------------------


@dataclass
class Trial:
    """One kill: where it was aimed, where it landed, and what the checks found."""

    index: int
    aimed: str
    at: float  # seconds into the aimed phase
    phase: str = ""  # where the kill landed: a phase, or "ended" (the run was over)
    outcome: str = ""  # the list after the kill: old, new or mixed
    second: list[str] = field(default_factory=list)  # the next sync's run statuses
    problems: list[str] = field(default_factory=list)


def draw(seed: int, index: int, scenario: Scenario) -> Trial:
    """Trial ``index``'s kill: each block of five aims once at each phase, shuffled."""
    order = random.Random(f"{seed}:block:{index // len(PHASES)}").sample(PHASES, len(PHASES))
    aimed = order[index % len(PHASES)]
    fraction = random.Random(f"{seed}:trial:{index}").random()
    return Trial(index, aimed, fraction * scenario.duration(aimed))


def kill_during(scenario: Scenario, trial: Trial, root: Path) -> None:
    proc = scenario.spawn(root)
    watch = Watch(proc, scenario.state(root) / "archive")
    while watch.poll():
        reached = watch.seen.get(trial.aimed)
        if reached is not None and watch.now() >= reached + trial.at:
            trial.phase = watch.phase
            watch.kill()
            return
    trial.phase = "ended"  # and the process too


def file_places(scenario: Scenario, root: Path, name: str, sha: str) -> tuple[bool, bool]:
    """Whether the file with content ``sha`` is pending in the home, and in the archive.

    Archived names start with the run and the list file's digest, count files too.
    """
    home = scenario.home(root) / name
    pending = home.exists() and sha256_of(home) == sha
    archive = scenario.state(root) / "archive"
    pattern = f"*-{scenario.list_sha[:12]}-{name}"
    archived = any(sha256_of(p) == sha for p in archive.glob(pattern) if p.is_file())
    return pending, archived


def check_killed(scenario: Scenario, trial: Trial, root: Path) -> None:
    db = scenario.database(root)
    integrity, applied, _ = store_facts(db, scenario.list_sha)
    if integrity != "ok":
        trial.problems.append(f"integrity_check after the kill: {integrity}")
    digest = list_digest(db)
    outcomes = {scenario.old_digest: "old", scenario.new_digest: "new"}
    trial.outcome = outcomes.get(digest, "mixed")
    if trial.outcome == "mixed":
        trial.problems.append("the store holds neither the old list nor the new one")
    if (trial.outcome == "new") != (applied == 1):
        trial.problems.append(f"the {trial.outcome} list, but {applied} applied runs of the file")
    for name, sha in ((LIST, scenario.list_sha), (COUNT, scenario.count_sha)):
        pending, archived = file_places(scenario, root, name, sha)
        if not (pending or archived):
            trial.problems.append(f"{name} is lost: neither pending in the home nor archived")
        elif trial.outcome == "old" and not pending:
            trial.problems.append(f"the old list stands but {name} is no longer pending")


def check_next_sync(scenario: Scenario, trial: Trial, root: Path) -> None:
    """The next sync, in this process (what ``listferry sync`` runs), finishes the work."""
    app = scenario.app(root)
    runs = sync_tenant(app, app.config.tenant(TENANT))
    trial.second = [run.status for run in runs]
    want = (["applied"],) if trial.outcome == "old" else (["skipped"], ["idle"])
    if trial.second not in want:
        reasons = "; ".join(run.reason or "" for run in runs)
        trial.problems.append(
            f"the next sync ended {trial.second}, expected {' or '.join(map(str, want))}: {reasons}"
        )
    db = scenario.database(root)
    if list_digest(db) != scenario.new_digest:
        trial.problems.append("after the next sync the store does not hold the new list")
    _, applied, running = store_facts(db, scenario.list_sha)
    if applied != 1:
        trial.problems.append(f"the file was applied {applied} times")
    if running:
        trial.problems.append(f"{running} runs left 'running' after the next sync")
    for name, sha in ((LIST, scenario.list_sha), (COUNT, scenario.count_sha)):
        pending, archived = file_places(scenario, root, name, sha)
        if pending or not archived:
            trial.problems.append(
                f"after the next sync {name} is pending={pending}, "
                f"archived={archived}; expected archived only"
            )
    for copy in sorted(unowned_copies(scenario.state(root) / "archive", db)):
        trial.problems.append(f"{copy} is in the archive but no run's record names it")


def unowned_copies(archive: Path, db: Path) -> set[str]:
    """Archived files no run owns: a run's copy and its count file share a 20-char prefix."""
    with connect_ro(db) as conn:
        owned = {
            Path(path).name[:20]
            for (path,) in conn.execute("SELECT archive FROM runs WHERE archive IS NOT NULL")
        }
    return {p.name for p in archive.iterdir() if p.name[:20] not in owned}


def run_trial(scenario: Scenario, trial: Trial, root: Path) -> Trial:
    scenario.restore(root)
    kill_during(scenario, trial, root)
    check_killed(scenario, trial, root)
    if trial.problems:
        keep(root, trial, "killed")
    check_next_sync(scenario, trial, root)
    if trial.problems:
        keep(root, trial, "after-next-sync")
    return trial


def keep(root: Path, trial: Trial, moment: str) -> None:
    """Keep the trial's folder as evidence."""
    target = root.with_name(f"failed-{trial.index:03d}-{moment}")
    if not target.exists():
        shutil.copytree(root, target)


# -- the campaign --------------------------------------------------------------------------


@dataclass
class Campaign:
    scenario: Scenario
    trials: list[Trial]

    @property
    def failures(self) -> list[Trial]:
        return [t for t in self.trials if t.problems]

    def phases_hit(self) -> set[str]:
        return {t.phase for t in self.trials} & set(PHASES)

    def table(self) -> str:
        rows = [
            "| kill landed in | aimed at | trials | old list | new list | failures |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        aimed = Counter(t.aimed for t in self.trials)
        for phase in (*STAGES, "all"):
            got = [t for t in self.trials if phase in (t.phase, "all")]
            if phase == "ended" and not got:
                continue
            outcomes = Counter(t.outcome for t in got)
            failed = sum(1 for t in got if t.problems)
            shown = "after the run (or no kill)" if phase == "ended" else phase
            goal = len(self.trials) if phase == "all" else aimed.get(phase, 0)
            rows.append(
                f"| {shown} | {goal} | {len(got)} | {outcomes['old']} | "
                f"{outcomes['new']} | {failed} |"
            )
        return "\n".join(rows)

    def report(self) -> str:
        """The table, then each failed trial: what was wrong and how to run it again."""
        lines = [self.table()]
        for trial in self.failures:
            aim = f"aimed at {trial.aimed} +{trial.at:.3f} s"
            lines.append(
                f"\nFAILED trial {trial.index} ({aim}, killed in {trial.phase}, "
                f"{trial.outcome} list):"
            )
            lines += [f"  - {problem}" for problem in trial.problems]
            lines.append(f"  reproduce: {reproduce(self.scenario, trial.index)}")
        return "\n".join(lines)


def reproduce(scenario: Scenario, index: int | None = None, trials: int | None = None) -> str:
    args = [
        "python3",
        "bench/crash.py",
        "--rows",
        str(scenario.rows),
        "--seed",
        str(scenario.seed),
        "--strategy",
        scenario.strategy,
    ]
    args += ["--trial", str(index)] if index is not None else ["--trials", str(trials)]
    return " ".join(args)


def campaign(
    work: Path,
    trials: int,
    rows: int,
    seed: int,
    strategy: str = "full",
    only: int | None = None,
    jobs: int = 1,
    progress: bool = False,
) -> Campaign:
    """Build the scenario in ``work``, measure a run, and run the trials, ``jobs`` at once."""
    scenario = Scenario(work, rows, seed, strategy)
    scenario.build()
    scenario.measure()
    if progress:
        print(f"uninterrupted run, phases start at: {scenario.timeline()}", file=sys.stderr)
    slots: queue.SimpleQueue[Path] = queue.SimpleQueue()
    for number in range(jobs):
        scenario.restore(scenario.slot(number))
        scenario.app(scenario.slot(number))
        slots.put(scenario.slot(number))

    def one(index: int) -> Trial:
        root = slots.get()
        try:
            trial = run_trial(scenario, draw(seed, index, scenario), root)
        finally:
            slots.put(root)
        if progress:
            verdict = "; ".join(trial.problems) or "ok"
            print(
                f"trial {index}: aimed {trial.aimed} +{trial.at:.3f} s, killed in "
                f"{trial.phase}, {trial.outcome} list, next sync {trial.second}: {verdict}",
                file=sys.stderr,
                flush=True,
            )
        return trial

    with ThreadPoolExecutor(jobs) as pool:
        done = list(pool.map(one, [only] if only is not None else range(trials)))
    return Campaign(scenario, done)


def main(argv: list[str] | None = None) -> list:
    """Run the trials and print their table; no ratio figures (this is a count)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--strategy", choices=("full", "incremental"), default="full")
    parser.add_argument("--trial", type=int, help="run only this trial (to reproduce it)")
    parser.add_argument("--work", type=Path, help="the folder to work in (kept)")
    parser.add_argument("--jobs", type=int, default=1, help="trials at once, each in its copy")
    args = parser.parse_args(argv)
    os.environ["LISTFERRY_LOAD_PLUGINS"] = ""
    work = args.work or Path(tempfile.mkdtemp(prefix="listferry-crash-"))
    started = time.perf_counter()
    result = campaign(
        work, args.trials, args.rows, args.seed, args.strategy, args.trial, args.jobs, progress=True
    )
    scenario = result.scenario
    print(
        f"crash safety: {len(result.trials)} SIGKILLed syncs of a {args.rows}-row list "
        f"({args.strategy}, {args.jobs} at a time), {len(result.failures)} failures "
        "(goal: 0)"
    )
    print(f"uninterrupted run, phases start at: {scenario.timeline()}\n")
    print(result.report())
    jobs = f" --jobs {args.jobs}" if args.jobs > 1 else ""
    print(f"\nreproduce: {reproduce(scenario, args.trial, args.trials)}{jobs}")
    print(f"{time.perf_counter() - started:.0f} s, {os.cpu_count()} CPUs")
    if result.failures:
        print(f"evidence kept in {work}")
    elif args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    if result.failures:
        raise RuntimeError(f"{len(result.failures)} of {len(result.trials)} trials failed")
    return []


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
