"""The built-in return-file fields: the subscriber, the opt-out, the engagement.

Engagement comes from one aggregate over ``events`` grouped by address, joined once
however many of its fields a tenant picks; topics from a second one. Columns the
dialect kept in ``fields`` are the family ``fields.<Column Name>``.
"""

from __future__ import annotations

import json
from typing import Any

from listferry import hookimpl
from listferry.fields import Field, FieldFamily, sql_text

ENGAGEMENT = (
    "LEFT JOIN (SELECT email, sum(type = 'open') AS opens, sum(type = 'click') AS clicks, "
    "max(CASE WHEN type = 'open' THEN at END) AS last_open, "
    "max(CASE WHEN type = 'click' THEN at END) AS last_click "
    "FROM events GROUP BY email) AS engagement ON engagement.email = s.email"
)
#: Each topic comes with a fixed-width key that sorts it most engaged first: events
#: (descending), then the latest (descending), then by name; see most_engaged_first.
TOPIC_KEY = "printf('%010d%018.9f', 2147483647 - n, 10000000 - coalesce(julianday(last), 0))"
TOPIC_KEY_WIDTH = 28
TOPICS = (
    f"LEFT JOIN (SELECT email, json_group_array({TOPIC_KEY} || topic) AS topics "
    "FROM (SELECT email, topic, count(*) AS n, max(at) AS last FROM events "
    "WHERE type IN ('open', 'click') AND topic != '' GROUP BY email, topic) "
    "GROUP BY email) AS engaged_topics ON engaged_topics.email = s.email"
)
OPTOUT = "LEFT JOIN optouts AS optout ON optout.email = s.email"


def most_engaged_first(value: str | None) -> list[str]:
    """``["<key>topic", ...]`` as topic names: most events first, then latest, then A-Z."""
    if not value:
        return []
    return [entry[TOPIC_KEY_WIDTH:] for entry in sorted(json.loads(value))]


def kept_column(column: str) -> Field:
    """A column of the CRM's file that the dialect kept in the subscriber's ``fields``."""
    if '"' in column or "\\" in column:
        sql = f"(SELECT value FROM json_each(s.fields) WHERE key = {sql_text(column)})"
    else:
        path = '$."' + column + '"'
        sql = f"json_extract(s.fields, {sql_text(path)})"
    return Field(sql, description=f"the file's column {column!r}, as last received")


def engagement(sql: str, kind: str, description: str) -> Field:
    """A field of the opens and clicks aggregate."""
    return Field(sql, kind=kind, joins=(ENGAGEMENT,), description=description)


FIELDS = {
    "email": Field("s.email", description="the address, trimmed and lower-cased"),
    "first_name": Field("s.first_name", description="first name"),
    "last_name": Field("s.last_name", description="last name"),
    "segment_code": Field("s.segment_code", description="segment code"),
    "status": Field("s.status", description="active or unsubscribed"),
    "opted_out": Field(
        "(optout.email IS NOT NULL OR s.status = 'unsubscribed')",
        kind="bool",
        joins=(OPTOUT,),
        description="whether the address opted out, on the platform or through a file",
    ),
    "opted_out_at": Field(
        "coalesce(optout.at, CASE WHEN s.status = 'unsubscribed' THEN s.status_changed_at END)",
        kind="date",
        joins=(OPTOUT,),
        description="when it opted out (the recorded opt-out, else the status change)",
    ),
    "open_count": engagement("coalesce(engagement.opens, 0)", "number", "opens recorded"),
    "click_count": engagement("coalesce(engagement.clicks, 0)", "number", "clicks recorded"),
    "last_open": engagement("engagement.last_open", "date", "the time of the latest open"),
    "last_click": engagement("engagement.last_click", "date", "the time of the latest click"),
    "topics": Field(
        "engaged_topics.topics",
        kind="list",
        joins=(TOPICS,),
        convert=most_engaged_first,
        description="topics of its opens and clicks, most engaged first",
    ),
}


@hookimpl
def register_fields(register: Any) -> None:
    for name, field in FIELDS.items():
        register(name, field)
    register(
        "fields.*",
        FieldFamily(kept_column, description="a column of the CRM's file kept in fields"),
    )
