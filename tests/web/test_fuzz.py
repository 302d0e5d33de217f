"""The API fuzzed against its own OpenAPI document (schemathesis): no answer is a 5xx,
and every answer has the shape and content type the document gives.

schemathesis makes requests from /api/openapi.json (valid and invalid parameters alike)
against a real ``listferry web`` with an admin's API token, so the replay endpoint is
tried too; the site is this module's own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ADMIN, Console

pytest.importorskip("schemathesis", reason="pip install schemathesis")


def test_the_api_never_answers_5xx_to_what_its_document_allows_or_forbids(
    console: Console, tmp_path: Path
) -> None:
    token = console.ws.cli("operator", "token", ADMIN[0]).output.strip()
    tool = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    done = subprocess.run(
        [
            tool,
            "run",
            f"{console.url}/api/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
            "--max-examples",
            "6",  # a fixed seed: the same requests each run, within CI's time
            "--seed",
            "1",
            "--workers",
            "1",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Server error" not in done.stdout
    log = console.log.read_text()
    assert "Traceback" not in log and "internal error" not in log
