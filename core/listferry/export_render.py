"""Rendering a return file: a jinja2 template streamed over the export's rows.

The template sees a small context (``rows``, ``fields``, ``tenant``, ``generated_at``)
and three filters (``csv_row``, ``json_line``, ``date``); undefined names are errors.
Output is written a chunk at a time, so a return file of a million rows takes no more
memory than one of ten. Any error is a :class:`TemplateError` naming the template and
its line.
"""

from __future__ import annotations

import csv
import io
import json
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import jinja2

from listferry.errors import ListferryError
from listferry.export_fields import to_datetime

ISO = "%Y-%m-%dT%H:%M:%SZ"
NEWLINES = ("\n", "\r\n", "\r")


@dataclass(frozen=True)
class Template:
    """A return-file template, as a plugin registers it.

    ``source`` is jinja2 text; ``suffix`` the file name's ending (``.csv``); ``newline``
    the line ending every line break of the source becomes (``"\\r\\n"`` for CSV).
    ``fields`` are data points the template reads by name whatever the tenant's
    ``export_fields`` say (a CRM pack's fixed columns): they are added to the rows.
    """

    source: str
    suffix: str = ".txt"
    newline: str = "\n"
    fields: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.newline not in NEWLINES:
            raise ValueError(f"template newline must be one of {NEWLINES!r}")
        if not self.suffix.startswith(".") or "/" in self.suffix or "\\" in self.suffix:
            raise ValueError(f"template suffix {self.suffix!r} must look like '.csv'")


class TemplateError(ListferryError):
    """A return-file template could not be compiled or rendered; nothing was delivered."""


def as_template(name: str, item: Any) -> Template:
    """What a plugin registered, as a :class:`Template` (plain source gets ``.txt``)."""
    if isinstance(item, Template):
        return item
    if isinstance(item, str):
        return Template(source=item)
    raise ListferryError(
        f"template {name!r} is neither jinja2 text nor a listferry.export_render.Template"
    )


def _text(value: Any, true: str, false: str, join: str, date: str, none: str) -> str:
    if value.__class__ is str:
        return value
    if value is None:
        return none
    if isinstance(value, bool):
        return true if value else false
    if isinstance(value, datetime):
        return value.strftime(date)
    if isinstance(value, list | tuple):
        return join.join(_text(v, true, false, join, date, none) for v in value)
    return str(value)


def csv_row(
    values: Iterable[Any] | Mapping[str, Any], delimiter: str = ",", true: str = "true",
    false: str = "false", join: str = ";", date: str = ISO, none: str = "",
) -> str:  # fmt: skip
    """One CSV record, RFC 4180 quoting, without its line ending.

    ``values`` is a row (its values in field order) or any list (``fields`` for the
    header). Booleans become ``true``/``false``, dates ``date`` (strftime), lists their
    items joined by ``join``, ``None`` becomes ``none``.
    """
    items = values.values() if isinstance(values, Mapping) else values
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow([_text(v, true, false, join, date, none) for v in items])
    return out.getvalue()[:-2]


def _json_value(value: Any, date: str) -> Any:
    if isinstance(value, datetime):
        return value.strftime(date)
    if isinstance(value, list | tuple):
        return [_json_value(v, date) for v in value]
    return value


def json_line(row: Mapping[str, Any], date: str = ISO) -> str:
    """The row as one line of JSON (UTF-8 as is, dates as ``date``), without a newline."""
    data = {key: _json_value(value, date) for key, value in row.items()}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def format_date(value: Any, format: str = "%Y-%m-%d") -> str:
    """A date (or ISO 8601 text) in strftime ``format``; empty for ``None``."""
    moment = to_datetime(value)
    return "" if moment is None else moment.strftime(format)


FILTERS: dict[str, Callable[..., str]] = {
    "csv_row": csv_row,
    "json_line": json_line,
    "date": format_date,
}


class _OneTemplate(jinja2.BaseLoader):
    def __init__(self, name: str, source: str) -> None:
        self.name, self.source = name, source

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        if template != self.name:
            raise jinja2.TemplateNotFound(template)
        return self.source, _filename(self.name), lambda: True


def _filename(name: str) -> str:
    return f"<return-file template {name}>"


def compile_template(name: str, template: Template) -> jinja2.Template:
    """The template compiled; a syntax error is a :class:`TemplateError` with its line."""
    environment = jinja2.Environment(
        loader=_OneTemplate(name, template.source),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        newline_sequence=template.newline,  # type: ignore[arg-type]
    )
    environment.filters.update(FILTERS)
    try:
        return environment.get_template(name)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {name!r} line {exc.lineno}: {exc.message}") from None


def _template_line(exc: BaseException, name: str) -> int | None:
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename == _filename(name)
    ]
    return lines[-1] if lines else None


def render(name: str, template: Template, context: Mapping[str, Any], out: TextIO) -> None:
    """Render ``template`` over ``context`` into ``out``, a chunk at a time."""
    chunks = compile_template(name, template).generate(**context)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except Exception as exc:
            line = _template_line(exc, name)
            where = f"template {name!r}" + (f" line {line}" if line else "")
            detail = str(exc) if isinstance(exc, ListferryError) else f"{type(exc).__name__}: {exc}"
            raise TemplateError(f"{where}: {detail}") from exc
        out.write(chunk)
