"""Many tenants: ``listferry sync --all`` over many small tenants against one big one.

    python bench/many_tenants.py [--tenants 1000] [--rows 1000] [--rounds 3]

One config holds ``tenants`` tenants with a ``rows``-row list each; another holds one
tenant with a list of ``tenants * rows`` rows. Both stores are filled by a first sync
that is not timed; then each round syncs the next version of every list (10% of the
rows changed), as on an ordinary night. ``sync --all`` runs tenants
``[listferry] workers`` at a time (the CPU count by default); the big tenant is one
process, as it must be.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Figure, alternate, table, timed

SEED = 20261130
HEADER = "email,first_name,last_name,segment_code\n"
FIRST = ("Ann", "Bob", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jana")
LAST = ("Smith", "Jones", "Brown", "Novak", "Meyer", "Rossi", "Dubois", "Kowalski")


def write_list(path: Path, start: int, rows: int, version: int) -> None:
    """Version 0 of a list; each later version changes the same 10% of the rows anew."""
    rng = random.Random(SEED + start)
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(HEADER)
        for i in range(start, start + rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            if version and i % 10 == 0:
                first = f"{first}-{version}"
            f.write(f"user{i:08d}@example{i % 97}.com,{first},{last},S{i % 1000:03d}\n")


class Setup:
    """A config folder whose tenants' lists are put back in their homes before each run."""

    def __init__(self, root: Path, names: list[str], rows: int) -> None:
        self.root = root
        self.config = root / "listferry.toml"
        root.mkdir()
        tables = "".join(f"\n[tenants.{name}]\n" for name in names)
        self.config.write_text(
            '[listferry]\nstate = "state"\nhomes = "homes"\n\n'
            "[defaults]\nmax_shrink_share = 1.0\n" + tables
        )
        self.names = names
        self.rows = rows
        self.version = 0
        for name in names:
            (root / "homes" / name).mkdir(parents=True)

    def put_lists(self) -> None:
        """The next version of every list, in every home."""
        for n, name in enumerate(self.names):
            home = self.root / "homes" / name
            write_list(home / "subscriber_list.csv", n * self.rows, self.rows, self.version)
        self.version += 1

    def sync(self, *args: str) -> float:
        self.put_lists()
        command = [sys.executable, "-m", "listferry", "--config", str(self.config), "sync", *args]

        def run() -> None:
            done = subprocess.run(command, capture_output=True, text=True)
            statuses = {line.split(" ")[1] for line in done.stdout.splitlines()}
            if done.returncode != 0 or statuses != {"applied"}:
                raise SystemExit(f"sync failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")

        return timed(run)


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="listferry-bench-tenants-"))
    try:
        many = Setup(work / "many", [f"t{i:05d}" for i in range(args.tenants)], args.rows)
        one = Setup(work / "one", ["big"], args.tenants * args.rows)
        many.sync("--all")
        one.sync("big")
        mine, theirs = alternate(lambda: many.sync("--all"), lambda: one.sync("big"), args.rounds)
        return [
            Figure(
                f"sync --all, {args.tenants:,} tenants x {args.rows:,} rows",
                mine,
                theirs,
                f"one tenant, {args.tenants * args.rows:,} rows",
                "≤ 3x",
            ),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(table(main(sys.argv[1:])))
