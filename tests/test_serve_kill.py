"""``listferry serve`` SIGKILLed during 10 concurrent uploads (paramiko SFTP, ftplib FTPS).

Whatever the moment of the kill: every upload its client saw complete is on disk whole;
an upload that did not complete is not under its real name (unless it was renamed into
place whole, and only the reply was lost); the sync never takes a temp file; and the
next ``serve`` clears the temp files and takes uploads again.
"""

from __future__ import annotations

import random
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from load import ListStream, Site, Upload, sha256_of

from listferry.serve.jail import is_upload_in_progress

TENANTS = ["alpha", "beta"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A folder made by ``listferry init`` and ``tenant add``, copied for each trial."""
    return Site.create(tmp_path_factory.mktemp("template"), TENANTS, strategy="incremental")


def uploads_for(seed: int, rng: random.Random) -> list[Upload]:
    """10 uploads of 1 to 3 MB, distinct content, both tenants, SFTP and FTPS mixed."""
    uploads = []
    for i in range(10):
        tenant, protocol = TENANTS[i % 2], ("sftp", "ftps")[(i // 2) % 2]
        size = int(rng.uniform(1, 3) * (1 << 20))
        stream = ListStream(tenant, f"s{seed}u{i}", size)
        uploads.append(Upload(tenant, protocol, f"list_{i}.csv", stream))
    return uploads


def kill_mid_upload(site: Site, uploads: list[Upload], share: float) -> None:
    """Start every upload, SIGKILL the server once ``share`` of all bytes were sent."""
    threads = [threading.Thread(target=u.run, args=(site,)) for u in uploads]
    for thread in threads:
        thread.start()
    total = sum(u.stream.size for u in uploads)
    deadline = time.monotonic() + 60
    while sum(u.stream.sent for u in uploads) < share * total and time.monotonic() < deadline:
        time.sleep(0.002)
    site.kill()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a client hangs after the kill"


def temp_files(site: Site) -> list[Path]:
    return [p for t in TENANTS for p in site.home(t).rglob("*") if is_upload_in_progress(p.name)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_serve_keeps_confirmed_uploads_whole_and_takes_no_partial_file(
    template: Site, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    site = Site(shutil.copytree(template.root, tmp_path / "site"))
    uploads = uploads_for(seed, rng)
    site.start()
    kill_mid_upload(site, uploads, share=rng.uniform(0.15, 0.85))

    assert any(not u.done for u in uploads), "the kill came after every upload ended"
    whole = {u.name: u.stream.whole_sha256() for u in uploads}
    for u in uploads:
        path = site.home(u.tenant) / u.name
        if u.done:
            assert sha256_of(path) == u.stream.sha256 == whole[u.name], u.name
        elif path.exists():  # renamed into place whole; the kill only took the reply
            assert sha256_of(path) == whole[u.name], f"{u.name} is under its name, not whole"
    for tenant in TENANTS:
        listed = {p.name for p in site.home(tenant).iterdir() if not p.name.startswith(".")}
        assert listed <= {u.name for u in uploads if u.tenant == tenant}

    landed = sorted((u.tenant, u.name) for u in uploads if (site.home(u.tenant) / u.name).exists())
    left = temp_files(site)
    runs = site.sync()
    assert {run["status"] for run in runs} <= {"applied", "idle"}, runs
    assert sorted((r["tenant"], r["file"]) for r in runs if r["file"]) == landed
    for run in (r for r in runs if r["status"] == "applied"):
        upload = next(u for u in uploads if u.name == run["file"] and u.tenant == run["tenant"])
        assert (run["sha256"], run["received"]) == (whole[upload.name], upload.stream.rows)
    assert all(p.exists() for p in left), "the sync touched an upload's temp file"

    site.start()
    try:
        assert temp_files(site) == [], "serve left the temp files of cut uploads"
        after = [
            Upload(t, p, f"after_{p}.csv", ListStream(t, f"s{seed}{p}", 200_000))
            for t, p in zip(TENANTS, ("sftp", "ftps"), strict=True)
        ]
        for u in after:
            u.run(site)
            assert u.error is None
            assert sha256_of(site.home(u.tenant) / u.name) == u.stream.sha256
    finally:
        site.stop()
