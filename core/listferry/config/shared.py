"""The tenants every node of a cluster shares: rows of ``listferry_tenants`` in PostgreSQL.

In cluster mode ``listferry.toml`` holds the node's own settings and no tenant; each
tenant is a row whose ``settings`` are the keys a ``[tenants.NAME]`` table would hold,
checked with the same checks, over the node's ``[defaults]``. A row that does not check
is one line naming the tenant and the key (``database tenant acme: key strategy: ...``)
and leaves the other tenants usable: it is kept in :attr:`Config.tenant_problems`, and
naming that tenant is the error.

Every change to the table takes a new number from one sequence, so the count of rows
and the highest number together change whenever any tenant does: the cheap check that
long-running processes poll (:class:`TenantChanges`).

Imported only in cluster mode; psycopg is imported only when a database is opened.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from listferry.config.keys import keys_of
from listferry.config.settings import TENANT_NAME, Config, Tenant, build_tenant
from listferry.config.where import did_you_mean, where
from listferry.errors import ConfigError, ListferryError

#: What cluster mode needs installed, said when it is not.
INSTALL = (
    "cluster mode needs procrastinate, psycopg and boto3: "
    "pip install -e '.[cluster]' in the listferry folder"
)


class Unreachable(ListferryError):
    """The cluster's database did not answer (a job meeting it is tried again later)."""


#: Connection parameters that hold a secret, in a URL's query or a ``key=value`` string.
SECRET_PARAMETERS = ("password", "sslpassword")
_SECRET_PAIR = re.compile(rf"\b({'|'.join(SECRET_PARAMETERS)})\s*=\s*('[^']*'|[^\s&]*)", re.I)


def shown(url: str) -> str:
    """``url`` without its secrets (a password before the ``@``, ``password=`` and
    ``sslpassword=`` parameters), for messages and logs."""
    masked = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}=***", url)
    try:
        parts = urlsplit(masked)
        if parts.password is None:
            return masked
    except ValueError:
        return masked
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + netloc))


def connect(url: str, autocommit: bool = True, name: str | None = None) -> Any:
    """A psycopg connection to the cluster's database, or one clear error naming it;
    ``name`` is the session's ``application_name`` (``cluster status`` shows it)."""
    try:
        import psycopg
    except ImportError:
        raise ListferryError(INSTALL) from None
    try:
        extra = {"application_name": name[:63]} if name else {}
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10, **extra)
    except psycopg.Error as exc:
        raise Unreachable(f"database {shown(url)}: could not connect: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    """The first line of a database error, or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def database_error(url: str, exc: BaseException) -> ListferryError:
    """A database error while reading or writing tenants, as one line naming the database."""
    import psycopg

    if isinstance(exc, psycopg.errors.UndefinedTable):
        return ListferryError(
            f"database {shown(url)}: no listferry tables yet: run 'listferry cluster init'"
        )
    if isinstance(exc, psycopg.OperationalError):
        return Unreachable(f"database {shown(url)}: {first_line(exc)}")
    return ListferryError(f"database {shown(url)}: {first_line(exc)}")


def problem_line(name: str, key: str, problem: str) -> str:
    """How a tenant row that does not check is said: one line naming it and the key."""
    return f"database tenant {name}: key {key}: {problem}"


def tenant_of_row(config: Config, name: str, settings: Any) -> Tenant:
    """The tenant a row describes, checked as ``[tenants.NAME]`` would be, over the
    node's ``[defaults]``; a :class:`ConfigError` of one line for the first problem."""
    if not TENANT_NAME.fullmatch(name):
        raise ConfigError(
            f"database tenant {name!r}: the name must be lower-case letters, digits, '-' or "
            "'_', starting with a letter or digit"
        )
    if not isinstance(settings, dict):
        raise ConfigError(f"database tenant {name}: its settings are not a table of keys")
    keys = keys_of(Tenant)
    for key, value in settings.items():
        if key not in keys:
            hint = did_you_mean(key, keys) or "see docs/operator.md"
            raise ConfigError(f"database tenant {name}: unknown key {key!r} ({hint})")
        problem = keys[key].check(value)
        if problem:
            raise ConfigError(problem_line(name, key, problem))

    def fail(table: str, key: str, problem: str) -> ConfigError:
        if table == "defaults":
            return ConfigError(f"{where(config.path, config.text, table, key)} {problem}")
        return ConfigError(problem_line(name, key, problem))

    root = config.path.parent.resolve()
    return build_tenant(
        name,
        settings,
        config.defaults,
        root,
        config.state_dir,
        config.homes_dir,
        config.storage,
        fail,
    )


def database_of(config: Config) -> str:
    """The cluster's database URL (``[cluster] database``, else ``$LISTFERRY_DATABASE_URL``)."""
    assert config.cluster is not None
    return config.cluster.database


def read_rows(conn: Any, names: Collection[str] | None = None) -> list[tuple[str, Any]]:
    """Every tenant row (or those of ``names``), by name: ``(name, settings)``; none
    before ``cluster init``."""
    import psycopg

    query = "SELECT name, settings FROM listferry_tenants"
    try:
        if names is None:
            return conn.execute(f"{query} ORDER BY name").fetchall()
        return conn.execute(
            f"{query} WHERE name = ANY(%s) ORDER BY name", (list(names),)
        ).fetchall()
    except psycopg.errors.UndefinedTable:
        return []


def with_shared_tenants(config: Config, names: Collection[str] | None = None) -> Config:
    """``config`` (of a cluster node) with the tenants of the cluster's database: every
    one, or those of ``names`` (none: the database is not asked)."""
    rows: list[tuple[str, Any]] = []
    url = database_of(config)
    if names is None or names:
        with connect(url) as conn:
            try:
                rows = read_rows(conn, names)
            except Exception as exc:
                raise database_error(url, exc) from None
    tenants, problems = {}, {}
    for name, settings in rows:
        try:
            tenants[name] = tenant_of_row(config, name, settings)
        except ConfigError as exc:
            problems[name] = str(exc)
    return replace(config, tenants=tenants, tenant_problems=problems)


def changes_stamp(conn: Any) -> tuple[int, int]:
    """What changes whenever any tenant row is added, changed or removed: the number of
    rows and the highest change number."""
    import psycopg

    try:
        row = conn.execute(
            "SELECT count(*), coalesce(max(version), 0) FROM listferry_tenants"
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return (0, 0)
    return (int(row[0]), int(row[1]))


class TenantChanges:
    """The cheap "did any tenant change?" check of a long-running process: one query on
    a connection kept open, at most every ``every`` seconds."""

    def __init__(self, url: str, every: float = 1.0) -> None:
        self.url = url
        self.every = every
        self._conn: Any = None
        self._asked = float("-inf")
        self.stamp = self._read()

    def _read(self) -> tuple[int, int]:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url)
        try:
            return changes_stamp(self._conn)
        except psycopg.Error as exc:
            self.close()
            raise database_error(self.url, exc) from None
        finally:
            self._asked = time.monotonic()

    def changed(self) -> bool:
        """Whether the tenants changed since the last call that said so (or since this
        check began); ``False`` without asking within ``every`` seconds of the last ask.
        An unreachable database raises :class:`Unreachable`."""
        if time.monotonic() - self._asked < self.every:
            return False
        stamp = self._read()
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        return True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
