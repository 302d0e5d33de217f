"""Rendering a return file: a jinja2 template streamed over the export's rows.

The template sees a small context (``rows`` or ``batches`` of them, ``fields``,
``tenant``, ``generated_at``) and filters for one row (``csv_row``, ``json_line``), for a
batch of rows (``csv_rows``, ``json_lines``) and for dates (``date``); undefined names
are errors. Output is written a chunk at a time, so a return file of a million rows
takes no more memory than one of ten. Any error is a :class:`TemplateError` naming the
template and its line.
"""

from __future__ import annotations

import csv
import functools
import json
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

import jinja2

from listferry.errors import ListferryError
from listferry.export.query import Batch
from listferry.fields import CANONICAL, to_datetime
from listferry.templates import Template, TemplateError
from listferry.times import ISO

_STR = {str}
#: Turns one SQL value of a column into what the CSV writer takes.
Format = Callable[[Any], Any]


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
        if set(map(type, value)) <= _STR:  # all text already (a topics list): join it as is
            return join.join(value)
        return join.join(_text(v, true, false, join, date, none) for v in value)
    return str(value)


class _Buffer:
    """Where a csv writer puts the lines it writes, until they are taken."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.write = self.parts.append

    def take(self) -> str:
        text = "".join(self.parts)
        self.parts.clear()
        return text


@functools.lru_cache(maxsize=64)
def _writer(delimiter: str, newline: str) -> tuple[Any, _Buffer]:
    buffer = _Buffer()
    return csv.writer(buffer, delimiter=delimiter, lineterminator=newline), buffer


def csv_row(
    values: Iterable[Any] | Mapping[str, Any],
    delimiter: str = ",",
    true: str = "true",
    false: str = "false",
    join: str = ";",
    date: str = ISO,
    none: str = "",
) -> str:
    """One CSV record, RFC 4180 quoting, without its line ending.

    ``values`` is a row (its values in field order) or any list (``fields`` for the
    header). Booleans become ``true``/``false``, dates ``date`` (strftime), lists their
    items joined by ``join``, ``None`` becomes ``none``.
    """
    items = values.values() if isinstance(values, Mapping) else values
    writer, buffer = _writer(delimiter, "\r\n")
    writer.writerow([_text(v, true, false, join, date, none) for v in items])
    return buffer.take()[:-2]


@jinja2.pass_environment
def csv_rows(
    environment: jinja2.Environment,
    rows: Iterable[Mapping[str, Any]],
    delimiter: str = ",",
    true: str = "true",
    false: str = "false",
    join: str = ";",
    date: str = ISO,
    none: str = "",
) -> str:
    """A batch of rows as CSV records (as :func:`csv_row` each), one per line.

    The lines end with the template's ``newline``, all but the last: the template's own
    line break ends it, as after ``csv_row``.
    """
    newline = environment.newline_sequence
    writer, buffer = _writer(delimiter, newline)
    if isinstance(rows, Batch):
        options = (true, false, join, date, none)
        writer.writerows(_csv_values(rows, *options))
    else:
        writer.writerows(
            [
                v if v.__class__ is str else _text(v, true, false, join, date, none)
                for v in row.values()
            ]
            for row in rows
        )
    return buffer.take()[: -len(newline)]


def _csv_values(
    batch: Batch, true: str, false: str, join: str, date: str, none: str
) -> Iterable[Sequence[Any]]:
    """The batch's SQL values as CSV text, column by column, without making its rows.

    The same text as ``csv_row`` gives for each row: every value goes through its
    field's conversion, except where the SQL value already is that text. Each column
    that needs one is converted with one ``map`` over it, and the columns zipped back
    into records as the writer takes them: no list per row, no loop over a row's fields.
    """
    formats = _csv_formats(batch, (true, false, join, date, none))
    if not formats or not batch.values:
        return batch.values
    columns: list[Iterable[Any]] = list(zip(*batch.values, strict=True))
    for i, format in formats:
        columns[i] = map(format, columns[i])
    return zip(*columns, strict=True)


def _csv_formats(batch: Batch, options: tuple[str, ...]) -> list[tuple[int, Format]]:
    """(column, the function that gives its CSV text) for each column not already text."""
    true, false, _, date, none = options
    formats: list[tuple[int, Format]] = []
    for i, field in enumerate(batch.fields.values()):
        if field.convert is None and field.kind in ("text", "number"):
            if none != "":
                formats.append((i, lambda v: none if v is None else v))
        elif field.convert is None and field.kind == "bool":
            formats.append((i, lambda v: none if v is None else true if v else false))
        elif field.convert is None and field.kind == "date" and date == ISO:
            formats.append((i, _iso_text(options)))
        else:
            formats.append((i, _converted_text(field.converter(), options)))
    return formats


def _iso_text(options: tuple[str, ...]) -> Format:
    """A date column's text: ``none`` for ``NULL``, listferry's own ISO 8601 text as it is."""
    none = options[4]

    def text(value: Any) -> Any:
        if value is None:
            return none
        if value.__class__ is str and CANONICAL.fullmatch(value):
            return value
        return _text(to_datetime(value), *options)

    return text


def _converted_text(convert: Format, options: tuple[str, ...]) -> Format:
    """A column's text through its field's own conversion.

    A list of text (the topics) is joined here at once, as :func:`_text` would join it.
    """
    join = options[2]

    def text(value: Any) -> Any:
        converted = convert(value)
        if converted.__class__ is list and set(map(type, converted)) <= _STR:
            return join.join(converted)
        return _text(converted, *options)

    return text


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


@jinja2.pass_environment
def json_lines(
    environment: jinja2.Environment, rows: Iterable[Mapping[str, Any]], date: str = ISO
) -> str:
    """A batch of rows as lines of JSON (as :func:`json_line` each), the last one unended."""
    return environment.newline_sequence.join(json_line(row, date) for row in rows)


def format_date(value: Any, format: str = "%Y-%m-%d") -> str:
    """A date (or ISO 8601 text) in strftime ``format``; empty for ``None``."""
    moment = to_datetime(value)
    return "" if moment is None else moment.strftime(format)


FILTERS: dict[str, Callable[..., str]] = {
    "csv_row": csv_row,
    "csv_rows": csv_rows,
    "json_line": json_line,
    "json_lines": json_lines,
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
        try:
            out.write(chunk)
        except UnicodeEncodeError as exc:
            bad = exc.object[exc.start : exc.end]
            raise TemplateError(
                f"template {name!r}: {bad!r} cannot be written in {template.encoding} "
                f"(near {exc.object[max(0, exc.start - 30) : exc.end + 10]!r})"
            ) from None
