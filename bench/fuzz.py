"""Hostile input and config fuzzing: the tests' property checks, with many more examples.

    python3 bench/fuzz.py [--examples 2000] [--config-examples 3000] [--seed N] [--work DIR]

Three parts, each run outside pytest with the generators and checks of the tests
(imported from ``tests/``, not copied):

- generated list files (``test_hostile.py``'s ``list_files``): each is checked with
  ``listferry check`` and synced twice from an empty store
  (``any_bytes_end_in_plain_words``): both commands answer with exit 0 or 1 and no
  traceback, the run ends ``applied`` or ``voided`` with a reason, ``check`` agrees with
  the sync, and the same bytes sent again end ``skipped`` (or voided alike);
- the committed corpus (``tests/data/hostile/``), each file in a fresh workspace against
  its line in ``expected.toml`` (``corpus_file_ends_as_expected``);
- generated config values (``test_config_fuzz.py``'s ``any_value_for_any_key``): any
  value for any key loads, or stops ``listferry tenant list`` with exit 2 and one line
  naming the file, the line and the key.

A failing example does not stop the run: it is counted by the check it broke, its input
is written under ``--work`` (kept) and the first line of its error printed. The table
gives inputs tried, outcomes and failures (goal: 0). Exit status 1 on failures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from hypothesis import given, seed, settings

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from conftest import Workspace  # noqa: E402
from test_config_fuzz import (  # noqa: E402
    any_value_for_any_key,
    any_value_loads_or_is_one_line_naming_it,
)
from test_hostile import (  # noqa: E402
    EXPECTED,
    any_bytes_end_in_plain_words,
    corpus_file_ends_as_expected,
    hostile,
    list_files,
    workspace_for_generated_files,
)

#: The check a failure broke, by the test function its assertion sits in; an exception
#: other than an assertion is a crash too.
BROKE = {
    "no_crash": "traceback or exit code other than 0/1",
    "assert_config_error": "not exit 2 in one line",
}
RESEND = "identical resend not skipped"
LOADED = "loaded (exit 0)"
REFUSED = "refused, exit 2 in one line"


class Tally:
    """Failures by the check they broke, each input kept in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.failures: Counter[str] = Counter()

    def attempt(self, label: str, action: Callable[[], Any], evidence: bytes | str) -> Any:
        """``action()``, or None when it fails: the failure counted and its input kept."""
        try:
            return action()
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            if not isinstance(exc, AssertionError):
                kind = BROKE["no_crash"]
            elif "again" in (frame.line or ""):
                kind = RESEND
            else:
                kind = BROKE.get(frame.name, f"{frame.name}: {frame.line}")
            self.failures[kind] += 1
            self.folder.mkdir(parents=True, exist_ok=True)
            kept = self.folder / f"{label}-{sum(self.failures.values())}"
            kept.write_bytes(evidence if isinstance(evidence, bytes) else evidence.encode())
            first = (str(exc) or type(exc).__name__).splitlines()[0][:160]
            print(f"FAILED {kind}: {first} (input: {kept})", file=sys.stderr)
            return None


def reason_class(run: dict) -> str:
    """The run's status, and for a voided run its reason without the file, the line, the
    numbers (not those of an encoding) or the details: ``voided: bytes that are not utf-8 text``."""
    if not run["reason"]:
        return run["status"]
    reason = re.sub(r"^subscriber_list\.csv( line \d+)?: ", "", run["reason"])
    reason = re.sub(r"(?<![-\w])\d+", "N", re.split(r"[:;(]", reason)[0])
    return f"{run['status']}: {reason.strip()}"


def generated_lists(work: Path, examples: int, seed_: int, tally: Tally) -> dict[str, Counter]:
    """Check and sync ``examples`` generated list files; their outcomes."""
    (work / "generated").mkdir()
    tenant = workspace_for_generated_files(work / "generated")
    seen: dict[str, Counter] = {"check": Counter(), "sync": Counter(), "inputs": Counter()}

    @seed(seed_)
    @settings(hostile, max_examples=examples, derandomize=False)
    @given(data=list_files())
    def one(data: bytes) -> None:
        seen["inputs"][data] += 1
        if seen["inputs"].total() % 250 == 0:
            print(f"   {seen['inputs'].total()} list files", file=sys.stderr, flush=True)
        got = tally.attempt("list", partial(any_bytes_end_in_plain_words, tenant, data), data)
        if got:
            report, run = got
            seen["check"][report["status"]] += 1
            seen["sync"][reason_class(run)] += 1

    one()
    return seen


def corpus(work: Path, tally: Tally) -> int:
    """Each corpus file in a fresh workspace; how many ended as expected."""
    ok = 0
    for name in sorted(EXPECTED):
        folder = work / "corpus" / name
        folder.mkdir(parents=True)
        action = partial(corpus_file_ends_as_expected, Workspace(folder), name)
        ok += tally.attempt("corpus", action, name) is not None
    return ok


def config_values(work: Path, examples: int, seed_: int, tally: Tally) -> Counter:
    """``examples`` generated values for config keys; how each ended."""
    folder = work / "config"
    folder.mkdir()
    ended: Counter[str] = Counter()

    @seed(seed_)
    @settings(max_examples=examples, deadline=None, database=None)
    @given(**any_value_for_any_key)
    def one(table: str, data: Any, value: Any) -> None:
        action = partial(any_value_loads_or_is_one_line_naming_it, folder, table, data, value)
        code = tally.attempt("config", action, f"[{table}] value {value!r}")
        ended["tried"] += 1  # after the draw of the key, which may end an example early
        if code is not None:
            ended[LOADED if code == 0 else REFUSED] += 1

    one()
    return ended


def rows(
    seen: dict[str, Counter],
    lists: Tally,
    corpus_ok: int,
    files: Tally,
    ended: Counter,
    config: Tally,
    seconds: list[float],
) -> list[tuple[str, str, str]]:
    """The table: each figure, its result, its goal."""
    crash, one_line = BROKE["no_crash"], BROKE["assert_config_error"]
    check = ", ".join(f"{k} {n}" for k, n in sorted(seen["check"].items()))
    return [
        ("list files tried (distinct)", f"{seen['inputs'].total()} ({len(seen['inputs'])})", ""),
        ("`check` answered", check, ""),
        *((f"sync: {k}", str(n), "") for k, n in seen["sync"].most_common()),
        (crash, str(lists.failures[crash]), "0"),
        (RESEND, str(lists.failures[RESEND]), "0"),
        *(
            (f"other failure: {k}", str(n), "0")
            for k, n in lists.failures.items()
            if k not in (crash, RESEND)
        ),
        ("list files: wall time", f"{seconds[0]:.0f} s", ""),
        ("corpus files as expected", f"{corpus_ok} of {len(EXPECTED)}", "all"),
        *((f"corpus failure: {k}", str(n), "0") for k, n in files.failures.items()),
        ("corpus: wall time", f"{seconds[1]:.0f} s", ""),
        ("config values tried", str(ended["tried"]), ""),
        (f"config: {LOADED}", str(ended[LOADED]), ""),
        (f"config: {REFUSED}", str(ended[REFUSED]), ""),
        (f"config: {one_line}", str(config.failures[one_line]), "0"),
        *(
            (f"config, other failure: {k}", str(n), "0")
            for k, n in config.failures.items()
            if k != one_line
        ),
        ("config: wall time", f"{seconds[2]:.0f} s", ""),
    ]


def main(argv: list[str] | None = None) -> list:
    """Run the three parts and print their table; no ratio figures (this is a count)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="generated list files")
    parser.add_argument("--config-examples", type=int, default=3000, help="generated values")
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--work", type=Path, help="the folder to work in (kept)")
    args = parser.parse_args(argv)
    os.environ["LISTFERRY_LOAD_PLUGINS"] = ""
    work = args.work or Path(tempfile.mkdtemp(prefix="listferry-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    lists, files, config = (Tally(work / "failed") for _ in range(3))
    seconds = []
    began = time.perf_counter()
    seen = generated_lists(work, args.examples, args.seed, lists)
    seconds.append(time.perf_counter() - began)
    corpus_ok = corpus(work, files)
    seconds.append(time.perf_counter() - began - sum(seconds))
    ended = config_values(work, args.config_examples, args.seed, config)
    seconds.append(time.perf_counter() - began - sum(seconds))

    print(f"hostile input and config fuzzing, seed {args.seed}, {os.cpu_count()} CPUs\n")
    print("| figure | result | goal |\n| --- | --- | --- |")
    for row in rows(seen, lists, corpus_ok, files, ended, config, seconds):
        print("| " + " | ".join(row) + " |")
    print(f"\n{time.perf_counter() - began:.0f} s in all")
    failures = sum((lists.failures + files.failures + config.failures).values())
    if failures:
        print(f"inputs of the failures kept in {work / 'failed'}")
    elif args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        raise RuntimeError(f"{failures} failures")
    return []


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
