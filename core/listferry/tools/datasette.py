"""Tenant stores in datasette: one folder of named links and a metadata file.

Every tenant's database is ``state/NAME/tenant.db``, so datasette, which names a
database after its file, would show them all as ``tenant``, ``tenant_2`` ...
``listferry datasette DIR`` makes ``DIR/NAME.db`` links to each store and
``DIR/metadata.json``: a title per tenant, what each table holds, and what each column
means, so the tables read well without this page at hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from listferry.config import Config

TABLES: dict[str, dict[str, Any]] = {
    "subscribers": {
        "description": "The list: one row per address the CRM ever sent, active, "
        "unsubscribed or removed by a full list.",
        "sort": "email",
        "columns": {
            "email": "The address, trimmed and lower-cased: the key.",
            "first_name": "As the last applied list said.",
            "last_name": "As the last applied list said.",
            "segment_code": "As the last applied list said.",
            "fields": "The CRM's other columns, by their header (JSON).",
            "status": "active, unsubscribed, or removed (no longer in a full list).",
            "created_at": "When a list first brought the address (UTC).",
            "updated_at": "When a list last changed the row (UTC).",
            "status_changed_at": "When the status last changed (UTC).",
        },
    },
    "runs": {
        "description": "One row per run of a list file: what it changed, or why not.",
        "sort_desc": "id",
        "columns": {
            "status": "applied, voided, failed or skipped.",
            "file": "The list file's name as it arrived.",
            "reason": "Why a run was voided, failed or skipped.",
            "received": "Data records in the file.",
            "added": "New subscribers.",
            "updated": "Subscribers whose data changed.",
            "removed": "Subscribers a full list no longer had.",
            "unsubscribed": "Subscribers the file opted out.",
            "unchanged": "Records that changed nothing.",
            "ignored": "Records the strategy left alone.",
            "invalid": "Records that failed a check (the report names their lines).",
            "duplicates": "Records whose address came again later in the file.",
            "sha256": "The file's SHA-256: a file sent twice is applied once.",
            "archive": "Where the file was archived.",
            "report": "The result report, as left in the home.",
        },
    },
    "events": {
        "description": "Engagement from the sending platform: opens, clicks, unsubscribes.",
        "sort_desc": "at",
        "columns": {
            "type": "open, click or unsubscribe.",
            "at": "When (UTC).",
            "topic": "The topic of the mailing, if known.",
        },
    },
    "optouts": {
        "description": "Opt-outs that hold whatever later lists say.",
        "columns": {
            "at": "When the address opted out (UTC).",
            "source": "Where the opt-out came from: an event, or a list's opt-out column.",
            "run_id": "The run that applied it, for a list's opt-out column.",
        },
    },
    "exports": {
        "description": "One row per return file delivered to the CRM.",
        "sort_desc": "id",
    },
    "exported": {
        "description": "A digest of what the last delivered return file said of each "
        "address (for changed-since-last files).",
        "hidden": True,
    },
}


def metadata(config: Config) -> dict[str, Any]:
    """datasette's metadata for every tenant's store, each under the tenant's name."""
    databases = {}
    for name, tenant in config.tenants.items():
        tables = {}
        for table, about in TABLES.items():
            tables[table] = {key: value for key, value in about.items()}
        databases[name] = {
            "title": f"{name}: subscriber list and runs",
            "description": f"dialect {tenant.dialect}, strategy {tenant.strategy}; "
            f"home {tenant.home}",
            "tables": tables,
        }
    return {
        "title": "listferry",
        "description": "Each tenant's subscriber list, runs, engagement and return files.",
        "databases": databases,
    }


def write_folder(config: Config, folder: Path) -> list[Path]:
    """``folder/NAME.db`` links to the stores that exist, and ``folder/metadata.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, tenant in config.tenants.items():
        if not tenant.database.exists():
            continue
        link = folder / f"{name}.db"
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(tenant.database, link)
        written.append(link)
    meta = folder / "metadata.json"
    meta.write_text(json.dumps(metadata(config), indent=2, ensure_ascii=False) + "\n")
    written.append(meta)
    return written
