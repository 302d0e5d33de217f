"""The built-in return-file templates: ``csv`` and ``jsonl``.

``csv``: a header of the field names, then one record per subscriber; RFC 4180
quoting, UTF-8, CRLF line endings; ``true``/``false``, lists joined with ``;``, dates as
ISO 8601 UTC. ``jsonl``: one JSON object per subscriber and line; lists stay lists.
Both render the rows a batch at a time (``csv_rows``, ``json_lines``): the same lines as
``csv_row`` and ``json_line`` for each row, with fewer template steps.
"""

from __future__ import annotations

from typing import Any

from listferry import hookimpl
from listferry.templates import Template

CSV = """\
{{ fields | csv_row }}
{% for batch in batches %}
{{ batch | csv_rows }}
{% endfor %}
"""

JSONL = """\
{% for batch in batches %}
{{ batch | json_lines }}
{% endfor %}
"""


@hookimpl
def register_templates(register: Any) -> None:
    register(
        "csv",
        Template(CSV, suffix=".csv", newline="\r\n", description="CSV with a header, CRLF"),
    )
    register(
        "jsonl",
        Template(JSONL, suffix=".jsonl", description="One JSON object per subscriber and line"),
    )
