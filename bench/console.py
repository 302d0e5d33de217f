"""The console with many tenants: how long its pages take to answer.

    python bench/console.py [--tenants 2000] [--rounds 5]

One tenant's store gets three runs (two lists applied, one voided by the shrink guard)
through ``listferry sync``; its state folder is then copied for every other tenant, so
that each has a store with a history, as after a few nights. ``listferry web`` runs as
its own process on a loopback port; each page is fetched ``rounds`` times after one
warm-up, by a logged-in operator, alternating with the login page, which touches no
tenant (the reference: what the web stack itself costs). The goal is absolute: every
page under 200 ms with 2,000 tenants.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from common import Figure, alternate, free_port, table, timed

PASSWORD = "a long bench password"


def listferry(config: Path, *args: str, stdin: str | None = None) -> str:
    command = [sys.executable, "-m", "listferry", "--config", str(config), *args]
    done = subprocess.run(command, capture_output=True, text=True, input=stdin)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"listferry {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def make_site(root: Path, tenants: int) -> Path:
    names = [f"t{i:05d}" for i in range(tenants)]
    config = root / "listferry.toml"
    tables = "".join(f"\n[tenants.{name}]\n" for name in names)
    config.write_text(
        '[listferry]\nstate = "state"\nhomes = "homes"\n\n[defaults]\nmax_shrink_share = 0.5\n'
        'schedule = "02:00"\nexpect_file_within = "2d"\n' + tables
    )
    for name in names:
        (root / "homes" / name).mkdir(parents=True)
    first = root / "homes" / names[0]
    header = "email,first_name,last_name,segment_code\n"
    for rows in (1000, 1100, 100):  # applied, applied, voided (would remove 91%)
        body = "".join(f"u{i}@example.org,F{i},L{i},S{i % 7}\n" for i in range(rows))
        (first / "subscriber_list.csv").write_text(header + body)
        listferry(config, "sync", names[0])
    template = root / "state" / names[0]
    if not template.is_dir():
        raise RuntimeError(f"no state folder at {template}")
    for name in names[1:]:
        shutil.copytree(template, template.parent / name, ignore=shutil.ignore_patterns("lock"))
    listferry(config, "operator", "add", "bench", "--password-stdin", stdin=PASSWORD)
    return config


class Browser:
    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> bytes:
        with self.opener.open(self.base + path, timeout=120) as answer:
            return answer.read()

    def log_in(self) -> None:
        page = self.get("/login").decode()
        token = re.search(r'name="token" value="([^"]*)"', page).group(1)  # type: ignore[union-attr]
        form = urllib.parse.urlencode({"name": "bench", "password": PASSWORD, "token": token})
        self.opener.open(self.base + "/login", data=form.encode(), timeout=60).read()


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        import fastapi  # noqa: F401
    except ImportError:
        raise SystemExit(
            "skipped: the console needs pip install -e '.[web]' (in a checkout)"
        ) from None
    root = Path(tempfile.mkdtemp(prefix="listferry-bench-console-"))
    process = None
    try:
        config = make_site(root, args.tenants)
        port = free_port()
        command = [sys.executable, "-m", "listferry", "--config", str(config)]
        process = subprocess.Popen(
            [*command, "web", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        browser = Browser(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            try:
                browser.get("/login")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        browser.log_in()
        middle = f"t{args.tenants // 2:05d}"
        pages = {
            "overview": "/",
            "overview, voided only": "/?state=voided",
            "tenant page": f"/tenants/{middle}",
            "run page": f"/tenants/{middle}/runs/3",
            "API status": "/api/status",
        }
        figures = []
        for name, path in pages.items():
            browser.get(path)  # warm up
            ours, login = alternate(
                lambda path=path: timed(lambda: browser.get(path)),
                lambda: timed(lambda: browser.get("/login")),
                args.rounds,
            )
            figures.append(
                Figure(
                    f"console {name}, {args.tenants} tenants",
                    ours * 1000,
                    login * 1000,
                    "login page",
                    "< 200 ms",
                    unit="ms",
                )
            )
        return figures
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    print(table(main()))
