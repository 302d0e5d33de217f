"""The config file: one TOML file, ``[listferry]`` settings and a table per tenant.

Every key is checked before any run starts: an unknown key, a wrong type or a value
out of range is one error naming the file, the line and the key. Each key is declared
once, on the dataclass that holds its value (:func:`~listferry.config.keys.setting`):
:class:`ListferrySettings`, :class:`Tenant`, :class:`ServerSettings`; the key tables
(``TENANT_KEYS`` ...) are read from those declarations.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from listferry.config import checks
from listferry.config.checks import Check
from listferry.config.cluster import (
    CLUSTER_TABLES,
    ClusterSettings,
    StorageSettings,
    parse_cluster,
)
from listferry.config.keys import attributes, checked, key_table, keys_of, setting
from listferry.config.notify import NotifySettings, parse_notify
from listferry.config.web import WebSettings, parse_web
from listferry.config.where import key_error, line_of, not_a_table, place, where
from listferry.dialect import TRUE_WORDS
from listferry.errors import ConfigError

DEFAULT_NAME = "listferry.toml"
COUNT_POLICIES = ("required", "optional", "off")
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: The name of the tenant the ``[defaults]`` alone describe (no tenant is named so).
DEFAULTS_NAME = "(defaults)"


#: The data points a return file holds unless the tenant picks others.
EXPORT_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "segment_code",
    "status",
    "opted_out",
    "opted_out_at",
    "open_count",
    "click_count",
    "last_open",
    "last_click",
    "topics",
)


def _port_pair(value: str) -> tuple[int, int] | None:
    """``"60000-60099"`` as ``(60000, 60099)``; ``""`` as ``None``."""
    low, _, high = value.partition("-")
    return (int(low), int(high)) if high else None


def _port_or_off(value: int | str) -> int | None:
    """A port as written; ``"off"`` as ``None``."""
    return None if value == "off" else int(value)


def _server_file(name: str) -> Callable[[str], Path]:
    """A key path of ``[server]`` as written, or, when empty, ``name``: the file of that
    name ``listferry init`` makes in the state folder's ``server/``."""
    return lambda value: Path(value or name)


@dataclass(frozen=True)
class ListferrySettings:
    """The ``[listferry]`` table as written; :class:`Config` holds what it means."""

    state: str = setting(
        "state",
        checks.string,
        "The folder for tenant databases, archived list files and run locks: one subfolder per "
        "tenant. Keep it private and back it up.",
        comment="tenant databases and archived files: keep private, back it up",
    )
    homes: str = setting(
        "homes",
        checks.string,
        "The folder under which a tenant without its own `home` gets `homes/NAME`.",
        comment="one folder per tenant, where its CRM uploads list files",
    )
    plugins: tuple[str, ...] = setting(
        [],
        checks.string_list,
        "Extra plugin modules to load, by import name (for example "
        '`"mycompany.listferry_rules"`), besides the plugins installed through entry points.',
    )
    disable: tuple[str, ...] = setting(
        [],
        checks.string_list,
        "Plugins not to load, by the names `listferry plugins` shows (built-in ones too). A name "
        "that matches no plugin is an error.",
    )
    workers: int | None = setting(
        None,
        checks.whole_number(1),
        "How many tenants `listferry sync` runs at once, in as many worker processes. A tenant "
        "whose worker crashes ends `failed` and a new worker takes over; the other tenants go on. "
        "The runs are printed in tenant order whatever finishes first. `1` runs tenants one after "
        "another in one process.",
        shown_default="the number of CPUs",
    )
    executor: str = setting(
        "local",
        checks.string,
        "Where the schedule runs its jobs (each tenant's sync and export, the digest): `local` "
        "runs each as its own `listferry` process on this machine, `workers` at a time; executor "
        "plugins add others (`register_executors`).",
    )


@dataclass(frozen=True)
class Tenant:
    """One customer, as the config describes it: ``[tenants.NAME]``, over ``[defaults]``.

    Its keys are declared here, each once (:func:`~listferry.config.keys.setting`);
    ``[defaults]`` may set any but ``home``.
    """

    name: str
    home: str = setting(
        None,
        checks.string,
        "The tenant's home: a folder (relative to the config file's folder, or absolute; a "
        "leading `~` is the home folder of the user listferry runs as), or a URL such as "
        "`sftp://user@host:22/path` for a server the customer hosts: `sftp://` "
        "([SFTP](transport-sftp.md)), `ftps://` or `ftp://` ([FTP and FTPS](transport-ftp.md)) "
        "are built in, and their URLs must name the user and the host; other schemes need a "
        "transport plugin.",
        shown_default="`homes/NAME` under `[listferry] homes`",
        worked_out=True,
    )
    state_dir: Path
    dialect: str = setting(
        "default",
        checks.string,
        "How the tenant's CRM writes its file. The built-in `default` dialect reads any CSV with "
        "an e-mail column and maps e-mail, first name, last name and segment; every other column "
        "is kept in the subscriber's `fields`. CRM packs add dialects.",
    )
    strategy: str = setting(
        "full",
        checks.string,
        "How a file changes the list: `full`, `incremental`, `add-only`, `update-only` or "
        "`opt-out` (see [Strategies](#strategies)).",
    )
    count_file: str = setting(
        "optional",
        checks.one_of(*COUNT_POLICIES),
        "The count-file policy: `required`, `optional` or `off` (see [Count files](#count-files)).",
    )
    count_file_wait: str = setting(
        "2h",
        checks.duration_or_empty,
        'With `count_file = "required"`: how long a list whose count file has not come yet waits '
        "in the home (counted from when a sync first saw it as it is) before it is voided "
        '(`"90m"`, `"2h"`, `"1d"`; `""`: voided at once).',
    )
    keep_reports: int = setting(
        5,
        checks.whole_number(1),
        "How many result reports (`*.result.txt`) stay in the tenant's home: after each report, "
        "the oldest beyond this number are removed.",
    )
    pattern: str = setting(
        "*.csv",
        checks.file_pattern,
        "Which files at the top of the home are list files (shell-style, case-insensitive: "
        "`*.csv` matches `LIST.CSV`). A compressed list matches by its name without `.gz` or "
        "`.zip`: `*.csv` takes `list.csv.gz` and `list.csv.zip` (a zip holding exactly one file), "
        "read without unpacking to disk. Count files and result reports never count as list "
        "files. It must not be empty, nor hold a `/`: a sync looks only at the top of the home.",
    )
    allow_ips: tuple[str, ...] = setting(
        [],
        checks.ip_networks,
        "IP addresses or CIDR networks the tenant may connect from to the built-in servers. SFTP "
        "requires it: with an empty list no SFTP login succeeds. FTP and FTPS apply it when it is "
        "set.",
    )
    password_hash: str | None = setting(
        None,
        checks.password_hash,
        "The salted hash of the tenant's upload password, as `listferry tenant add "
        "--password-stdin` (or `tenant password`) writes it. Anything else, such as a plain "
        "password, is refused: no login could match it.",
        hidden=True,
    )
    ssh_keys: tuple[str, ...] = setting(
        [],
        checks.ssh_public_keys,
        "The tenant's OpenSSH public keys (one key line per item: type, base64 key, comment) for "
        "SFTP, as `listferry tenant add --ssh-key FILE` writes them. A line that is not a public "
        "key is refused.",
        hidden=True,
    )
    max_invalid_share: float = setting(
        0.05,
        checks.share,
        "The error-rate limit, 0 to 1: a run is voided when more than this share of the file's "
        "records is invalid. `0` voids on any invalid record, `1` never.",
    )
    max_shrink_share: float = setting(
        0.5,
        checks.share,
        "The shrink guard, 0 to 1: a run is voided when it would remove more than this share of "
        "the active subscribers, unless the operator runs `listferry sync NAME --force`.",
    )
    settle_seconds: float = setting(
        0,
        checks.seconds,
        "A list file modified less than this many seconds ago is left for the next run. Set it "
        "when the customer's upload client writes straight to the final name.",
    )
    require_tls: bool = setting(
        False,
        checks.boolean,
        "FTP logins for this tenant need TLS (AUTH TLS) first: a plain-text login is refused at "
        "`USER`, before the password is sent.",
    )
    process: str = setting(
        "nightly",
        checks.one_of("nightly", "on-upload"),
        '`"on-upload"`: `listferry serve` syncs the tenant as soon as its list file has arrived '
        "(a list whose required count file has not come yet waits, and is synced again when it "
        "comes or when `count_file_wait` is over), besides any scheduled or nightly `sync`; each "
        "such sync runs as a `listferry sync` process of its own, so it reads the config as it is "
        "then and cannot harm the servers. One that cannot run (the config cannot be read, the "
        "process dies) is recorded as a `failed` run and tried again after 5, 15 and 45 minutes "
        "while the list is still there; then the schedule or the next upload syncs it.",
    )
    stable_seconds: float = setting(
        10,
        checks.seconds,
        "For a home on a customer's server (a URL): a list file is taken only when its size and "
        "time did not change across two listings this many seconds apart, or its count file is "
        "there.",
    )
    remote_password: str | None = setting(
        None,
        checks.string,
        "The password for a home on a customer's server. Prefer `remote_password_env`. Never "
        "shown by `tenant list` or in logs.",
        hidden=True,
    )
    remote_password_env: str | None = setting(
        None,
        checks.string,
        "The name of an environment variable that holds that password.",
    )
    remote_key_file: str | None = setting(
        None,
        checks.string,
        "The SSH private key for an `sftp://` home, as an absolute path; `remote_password(_env)` "
        "is its passphrase, if it has one. See [SFTP homes](transport-sftp.md).",
        path=True,
    )
    known_hosts: str | None = setting(
        None,
        checks.string,
        "The known-hosts file that an `sftp://` home's host key is checked against (default: "
        "`state/NAME/known_hosts`; give another as an absolute path). A host key not in it is an "
        "error that shows its fingerprint and the line to add; it is never accepted silently.",
        path=True,
    )
    tls_verify: bool = setting(
        True,
        checks.boolean,
        "For an `ftps://` home: verify the server's certificate.",
    )
    ca_file: str | None = setting(
        None,
        checks.string,
        "For an `ftps://` home: the CA bundle (PEM) to verify the server's certificate with, "
        "instead of the system's, as an absolute path. See [FTP and FTPS "
        "homes](transport-ftp.md).",
        path=True,
    )
    remote_retries: int = setting(
        3,
        checks.whole_number(0),
        "How many times a transfer to or from a customer's server is retried, with backoff, after "
        "a network fault before the run ends `failed` (`0`: not retried).",
    )
    remote_timeout: float = setting(
        30,
        checks.seconds_above_zero,
        "Seconds a connection to a customer's server may stall before it counts as a fault.",
    )
    export_template: str | None = setting(
        None,
        checks.string,
        "The return-file template: `csv`, `jsonl`, or one a CRM pack registers (see [Return "
        "files](return-files.md)). A pack's dialect names the template its CRM imports, so its "
        "tenants need not set this.",
        shown_default='the dialect\'s template, else `"csv"`',
    )
    export_fields: tuple[str, ...] = setting(
        list(EXPORT_FIELDS),
        checks.string_list,
        "The data points the return file holds, in order: the fields of [Return "
        "files](return-files.md#fields), `fields.<Column Name>` for a column of the CRM's list, "
        "or one a plugin registers.",
    )
    export_subscribers: str = setting(
        "all",
        checks.one_of("all", "changed-since-last"),
        "`all` (every subscriber but those a full list removed), or `changed-since-last`: only "
        "subscribers whose data, status or engagement changed since the last return file "
        "delivered.",
    )
    export_after_sync: bool = setting(
        False,
        checks.boolean,
        "Write the return file after each applied sync; if that fails it is logged in one line "
        "and the run stands.",
    )
    export_to: str | None = setting(
        None,
        checks.string,
        "Where the return file goes: a folder (relative to the config file's folder; it must "
        "exist) or a URL whose scheme has a transport (default: the home's `outbox/`).",
        path=True,
    )
    export_name: str = setting(
        "return_{date}",
        checks.export_name,
        "The return file's name without suffix; `{date}` is the UTC date as `YYYYMMDD`, "
        "`{tenant}` the tenant's name.",
    )
    schedule: str = setting(
        "02:00",
        checks.schedule_or_empty,
        "When `listferry serve` (or `listferry schedule`) syncs the tenant: a time of day "
        '(`"02:00"`, `"02:00:30"`), a cron expression (`"30 2 * * 1-5"`, `"*/15 6-20 * * *"`), '
        '`@daily`, `@hourly`, or `""` for none (cron, `on-upload`). See '
        "[Operations](operations.md#the-schedule).",
        comment='when `listferry serve` syncs each tenant; "" leaves it to cron',
    )
    timezone: str = setting(
        "UTC",
        checks.time_zone,
        'The IANA time zone `schedule` and `export_schedule` are read in (`"Europe/Berlin"`): '
        '"02:00" is 02:00 on the customer\'s clock, summer and winter.',
        comment='the clock schedule is read on, e.g. "Europe/Berlin"',
    )
    export_schedule: str = setting(
        "",
        checks.schedule_or_empty,
        'A schedule of the return file\'s own (same forms as `schedule`); `""`: none (use '
        "`export_after_sync` or cron).",
    )
    contact_email: str | None = setting(
        None,
        checks.email_address,
        "The customer's contact: told by e-mail when one of their files is voided, when "
        "`[notify.email] tenant_contacts` is on.",
    )
    expect_file_within: str = setting(
        "36h",
        checks.duration_or_empty,
        "How long the tenant may go without sending a file before `status` and the daily digest "
        'call it silent (`"36h"`, `"3d"`, `"90m"`; `""`: never).',
    )
    pgp_key_file: str | None = setting(
        None,
        checks.string,
        "The secret OpenPGP key (armored or binary, relative to the config file) that decrypts "
        "this tenant's encrypted lists: a list named `*.pgp`, `*.gpg` or `*.asc` is decrypted "
        "into the tenant's private work folder before it is read (`list.csv.gz.pgp` is decrypted, "
        "then read through the decompressor) and the plaintext is removed with the run. A file "
        "that does not decrypt is voided with the reason; a wrong passphrase, a key file that "
        "cannot be read, or an encrypted list for a tenant without `pgp_key_file` fails the run "
        "and the file waits for the fix. Needs the `gpg` program.",
        path=True,
    )
    pgp_passphrase_env: str | None = setting(
        None,
        checks.string,
        "The environment variable that holds that key's passphrase.",
    )
    pgp_recipient_key_file: str | None = setting(
        None,
        checks.string,
        "The customer's public OpenPGP key: return files are encrypted to it and named `*.pgp` "
        "(the count file stays plain).",
        path=True,
    )
    opt_out_columns: tuple[str, ...] = setting(
        [],
        checks.column_names,
        "Columns of the tenant's list that opt a subscriber out when they say one of "
        '`opt_out_values`, besides any opt-out column the dialect maps (`["Do Not Email"]`; case, '
        "spaces, `-`, `_` and `.` do not count). Other values in them change nothing; the columns "
        "stay in `fields` too. For a CRM without a pack: without it, a column that looks like an "
        "opt-out flag is only warned about (see [Opt-out columns](#opt-out-columns)).",
    )
    opt_out_values: tuple[str, ...] = setting(
        sorted(TRUE_WORDS),
        checks.non_empty_words,
        'The words (any case) that mean "opted out" in the `opt_out_columns`: the `default` '
        'dialect\'s yes words unless set (`["yes"]`; for a column that says who *is* subscribed, '
        'such as `Newsletter`, `["no", "nein"]`).',
    )
    quota: int = setting(
        "10 GB",
        checks.byte_size,
        "The most the tenant's home may hold, on the built-in servers (files at their apparent "
        'size: a sparse file counts in full; `"500 MB"`, `"2 GiB"`). An upload that would pass it '
        "is refused and removed.",
        convert=checks.bytes_of,
    )
    max_file_size: int = setting(
        "2 GB",
        checks.byte_size,
        "The largest file the tenant may upload to the built-in servers.",
        convert=checks.bytes_of,
    )
    max_files: int = setting(
        1000,
        checks.whole_number(1),
        "Files and folders the tenant's home may hold, on the built-in servers.",
    )
    max_depth: int = setting(
        8,
        checks.whole_number(1),
        "How deep folders may nest in the tenant's home (`1`: folders only in the home itself).",
    )
    max_sessions: int = setting(
        8,
        checks.whole_number(1),
        "Logged-in sessions the tenant may have open at once, FTP, FTPS and SFTP together.",
    )
    max_list_size: int = setting(
        "2 GiB",
        checks.byte_size,
        'The largest list file a run reads (`"500 MB"`, `"2 GiB"`, or bytes); a gzip or zip list '
        "counts as the bytes it unpacks to. A larger one is voided before it is read or hashed, "
        "and an archive as soon as it unpacks past it.",
        convert=checks.bytes_of,
    )
    sync_timeout: float = setting(
        3600,
        checks.seconds_above_zero,
        "Seconds a sync of this tenant may take. A run still going then is stopped at its next "
        "batch and ends `failed`, took longer than sync_timeout; nothing of it is applied and "
        "the last good list stands.",
    )
    archive_keep_runs: int = setting(
        100,
        checks.whole_number(0),
        "How many runs' archived list files (in `state/NAME/archive`) stay: after each sync, "
        "the files of older runs are removed (the last applied run's always stay; the run "
        "records stay in the store). A file goes when this or `archive_keep_days` says so; "
        "`0`: no limit by count.",
    )
    archive_keep_days: int = setting(
        90,
        checks.whole_number(0),
        "How many days archived list files stay: after each sync, older ones are removed "
        "(the last applied run's always stay). A file goes when this or `archive_keep_runs` "
        "says so; `0`: no limit by age.",
    )
    tls_session_reuse: bool = setting(
        True,
        checks.boolean,
        "FTPS data connections must resume the TLS session of their control connection (as "
        "vsftpd's `require_ssl_reuse`), so no other client can take over a passive port. curl, "
        "lftp and FileZilla do; set `false` only for a client that cannot (Python's stock "
        "`ftplib.FTP_TLS`, .NET's `FtpWebRequest`).",
    )

    @property
    def is_local(self) -> bool:
        return "://" not in self.home

    @property
    def database(self) -> Path:
        return self.state_dir / "tenant.db"

    def to_json(self) -> dict[str, Any]:
        """The tenant as ``tenant list --json`` prints it: never a secret."""
        return {
            "name": self.name,
            "home": self.home,
            "dialect": self.dialect,
            "strategy": self.strategy,
            "count_file": self.count_file,
            "allow_ips": list(self.allow_ips),
            "pattern": self.pattern,
            "require_tls": self.require_tls,
            "process": self.process,
            "password": self.password_hash is not None,
            "ssh_keys": len(self.ssh_keys),
        }


@dataclass(frozen=True)
class ServerSettings:
    """The ``[server]`` table, with key paths made absolute."""

    host: str = setting(
        "127.0.0.1",
        checks.string,
        'The address to listen on. Use `"0.0.0.0"` (or a public address) to take uploads from '
        "customers.",
    )
    ftp_port: int = setting(
        2121,
        checks.port_or_any,
        "FTP, with explicit TLS (AUTH TLS) available. `0`: any free port.",
    )
    ftps_port: int = setting(
        2990,
        checks.port_or_any,
        "FTP with explicit TLS required before login.",
    )
    sftp_port: int = setting(
        2222,
        checks.port_or_any,
        "SFTP.",
    )
    passive_ports: tuple[int, int] | None = setting(
        "",
        checks.port_range_or_empty,
        'The FTP passive data ports, as `"60000-60099"`; empty: any free port. Open the range in '
        "the firewall.",
        convert=_port_pair,
    )
    masquerade_address: str = setting(
        "",
        checks.ipv4_or_empty,
        "The IPv4 address FTP's passive replies (`227`) tell clients to connect to: behind a load "
        "balancer or NAT, the public address, where this node's `passive_ports` are forwarded "
        "to it. Empty: the address the client connected to.",
    )
    proxy_protocol_from: tuple[str, ...] = setting(
        [],
        checks.ip_networks,
        "Load balancers (addresses or CIDR networks) that put a PROXY protocol version 2 header "
        "before each connection, naming the customer's address: allow lists, login defence, "
        "limits and logs then see the customer. A connection from one of them without a header "
        "is refused, and so is a header from anyone else. Empty: no PROXY protocol.",
    )
    tls_cert: Path = setting(
        "",
        checks.string,
        "The TLS certificate (PEM) for FTPS and FTP's AUTH TLS, followed by its chain: a CA's "
        "`fullchain.pem` as it is. Empty: `state/server/tls-cert.pem`, self-signed by `listferry "
        "init`. A running `serve` reads it and `tls_key` again when either changes (see [Renewing "
        "the certificate](#renewing-the-certificate)).",
        convert=_server_file("tls-cert.pem"),
        path=True,
    )
    tls_key: Path = setting(
        "",
        checks.string,
        "Its private key (PEM, unencrypted); empty: `state/server/tls-key.pem`.",
        convert=_server_file("tls-key.pem"),
        path=True,
    )
    ssh_host_key: Path = setting(
        "",
        checks.string,
        "The SSH host key (OpenSSH format); empty: `state/server/ssh_host_ed25519_key`, made by "
        "`listferry init`. Read when `serve` starts: a new host key needs a restart, and every "
        "customer's `known_hosts` line changes with it.",
        convert=_server_file("ssh_host_ed25519_key"),
        path=True,
    )
    require_tls: bool = setting(
        False,
        checks.boolean,
        "Every FTP login needs TLS first, for every tenant.",
    )
    max_connections: int = setting(
        256,
        checks.whole_number(1),
        "Connections open at once, all protocols together.",
    )
    max_connections_per_ip: int = setting(
        16,
        checks.whole_number(1),
        "Connections open at once from one address.",
    )
    delay_after_failures: int = setting(
        3,
        checks.whole_number(1),
        "Failed logins from one address (an IPv6 address's /64), to any account, after which "
        "each answer is delayed (0.5 s, doubling, at most 5 s).",
    )
    block_after_failures: int = setting(
        10,
        checks.whole_number(1),
        "Failed logins from one address (an IPv6 address's /64), to any account, after which "
        "it is blocked, on every protocol. A good login forgets only "
        "that account's failures from that address.",
    )
    block_seconds: float = setting(
        900,
        checks.seconds,
        "How long a blocked address stays blocked (also across a restart), and how long a "
        "failed login is remembered (at least 10 minutes). `listferry server unblock` lifts a "
        "block sooner.",
    )
    idle_timeout: float = setting(
        300,
        checks.seconds,
        "Seconds a connection may sit idle before it is closed.",
    )
    handshake_timeout: float = setting(
        30,
        checks.seconds,
        "Seconds a client has to finish its TLS or SSH handshake and log in, counted from "
        "connect: commands before the login (`NOOP`) do not extend it.",
    )
    stop_timeout: float = setting(
        60,
        checks.seconds,
        "On SIGTERM, how long open transfers may take to finish before they are cut.",
    )
    upload_grace: float = setting(
        3,
        checks.seconds,
        'For `process = "on-upload"` tenants: seconds to wait after the last upload before '
        "syncing, so a list and its count file are taken together.",
    )
    account_delay_after_failures: int = setting(
        5,
        checks.whole_number(1),
        "Failed logins to one account, from all addresses, after which "
        "each further failed answer on it is delayed (0.5 s, doubling, at most 5 s). An account "
        "is never blocked: its customer can still log in.",
    )
    max_prelogin_connections: int = setting(
        64,
        checks.whole_number(1),
        "Connections not yet logged in, per protocol (FTP, FTPS and SFTP each have their own).",
    )
    max_prelogin_per_ip: int = setting(
        8,
        checks.whole_number(1),
        "Connections not yet logged in from one address (an IPv6 address's /64), all "
        "protocols together.",
    )
    max_handles_per_session: int = setting(
        64,
        checks.whole_number(1),
        "Files and folders one SFTP connection may hold open at once, all its channels together.",
    )
    umask: int = setting(
        "027",
        checks.octal_mask,
        'Permission bits uploads and folders made over any protocol do not get: `"027"` makes '
        "files `0640` and folders `0750`.",
        convert=lambda value: int(value, 8),
    )
    sync_workers: int = setting(
        4,
        checks.whole_number(1),
        "How many on-upload syncs `serve` runs at once, each tenant's in turn: one tenant's long "
        "sync holds up no other while a worker is free, and no tenant runs twice at once.",
    )
    implicit_ftps_port: int | None = setting(
        "off",
        checks.port_any_or_off,
        "Implicit FTPS (TLS from the first byte, as some CRMs need on port 990): a port, `0` for "
        'any free port, or `"off"`. Served with the `ftps` protocol, with its tenants, limits '
        "and login guard.",
        convert=_port_or_off,
    )


#: ``[listferry]``: key -> (default, check).
LISTFERRY_KEYS: dict[str, tuple[Any, Check]] = key_table(keys_of(ListferrySettings))
#: Tenant settings: key -> (default, check). ``[defaults]`` may set any but ``home``.
TENANT_KEYS: dict[str, tuple[Any, Check]] = key_table(keys_of(Tenant))
#: The built-in servers' settings, ``[server]``: key -> (default, check).
SERVER_KEYS: dict[str, tuple[Any, Check]] = key_table(keys_of(ServerSettings))
#: Tenant keys that name a file, relative to the config file's folder (unless a URL).
PATH_KEYS = tuple(key.name for key in keys_of(Tenant).values() if key.path)


#: The ``[server]`` keys that each name a port a protocol listens on.
PORT_KEYS = ("ftp_port", "ftps_port", "sftp_port", "implicit_ftps_port")


def _ports_apart(path: Path, text: str, given: dict[str, Any]) -> None:
    """Two of the ports ``[server]`` sets may not be the same (``serve`` would find the
    second taken only when it binds); ``0`` (any free port) may repeat."""
    seen: dict[int, str] = {}
    for key in PORT_KEYS:
        port = given.get(key)
        if not isinstance(port, int) or isinstance(port, bool) or port == 0:
            continue
        if port in seen:
            problem = f"is {port}, as {seen[port]} is: each protocol needs a port of its own"
            raise key_error(path, text, "server", key, problem)
        seen[port] = key


def _server_settings(given: dict[str, Any], root: Path, state_dir: Path) -> ServerSettings:
    """``[server]`` from its checked values ``given``, key paths made absolute: relative to
    the config file's folder, or, when empty, in the state folder's ``server/``."""
    server = ServerSettings(**attributes(keys_of(ServerSettings).values(), given))
    own = state_dir / "server"
    paths = {}
    for key in keys_of(ServerSettings).values():
        if key.path:
            value = getattr(server, key.attribute)
            # Absolute, but symbolic links kept: a renewal repoints them (certbot's live/).
            written = given.get(key.name)
            paths[key.attribute] = Path(os.path.abspath(root / value)) if written else own / value
    return replace(server, **paths)


@dataclass(frozen=True)
class Config:
    """The whole config file, checked."""

    path: Path
    state_dir: Path
    homes_dir: Path
    plugins: tuple[str, ...]
    disable: tuple[str, ...]
    tenants: dict[str, Tenant]
    workers: int = 1
    server: ServerSettings = field(default_factory=ServerSettings)
    text: str = field(repr=False, default="")
    executor: str = "local"
    notify: NotifySettings = field(default_factory=NotifySettings)
    #: ``[web]``: the operator's console.
    web: WebSettings = field(default_factory=WebSettings)
    defaults: dict[str, Any] = field(default_factory=dict)
    #: ``[cluster]`` and ``[storage]``: ``None`` on one machine (see docs/cluster.md).
    cluster: ClusterSettings | None = None
    storage: StorageSettings | None = None
    #: In cluster mode, the tenants of the database that cannot be used, by name: one
    #: line each, naming the key (``database tenant NAME: key KEY: problem``).
    tenant_problems: dict[str, str] = field(default_factory=dict)

    def tenant(self, name: str) -> Tenant:
        try:
            return self.tenants[name]
        except KeyError:
            if name in self.tenant_problems:
                raise ConfigError(self.tenant_problems[name]) from None
            known = ", ".join(sorted(self.tenants)) or "none yet"
            where = "the cluster's database" if self.cluster else str(self.path)
            raise ConfigError(f"{where}: no tenant {name!r} (tenants: {known})") from None

    def defaults_tenant(self) -> Tenant:
        """A tenant with the ``[defaults]`` settings alone (``listferry check`` without
        ``--tenant``); its home and state folder are never used."""
        return defaults_tenant(self.defaults, self.path.parent.resolve(), self.state_dir)

    def where(self, table: str, key: str | None = None) -> str:
        """``file line N: [table] key`` for error messages."""
        return where(self.path, self.text, table, key)

    def where_tenant(self, name: str, key: str) -> str:
        """:meth:`where` the tenant's ``key`` was set: its own table, else ``[defaults]``
        when the value comes from there. For error messages: it reads the text again."""
        own = tomllib.loads(self.text).get("tenants", {}).get(name, {}) if self.text else {}
        if key not in own and key in self.defaults:
            return self.where("defaults", key)
        return self.where(f"tenants.{name}", key)


def _tenant(name: str, home: str, state_dir: Path, given: dict[str, Any]) -> Tenant:
    """The tenant whose checked values (``[defaults]``, then its own) are ``given``."""
    keys = [key for key in keys_of(Tenant).values() if key.name != "home"]
    return Tenant(name=name, home=home, state_dir=state_dir, **attributes(keys, given))


def defaults_tenant(defaults: dict[str, Any], root: Path, state_dir: Path) -> Tenant:
    """The tenant that ``defaults`` (checked ``[defaults]`` values) describe."""
    given = dict(defaults)
    for key in PATH_KEYS:
        if given.get(key) and "://" not in given[key]:
            given[key] = str((root / Path(given[key]).expanduser()).resolve())
    folder = state_dir / DEFAULTS_NAME
    return _tenant(DEFAULTS_NAME, str(folder), folder, given)


def build_tenant(
    name: str,
    own: dict[str, Any],
    defaults: dict[str, Any],
    root: Path,
    state_dir: Path,
    homes_dir: Path,
    storage: StorageSettings | None,
    fail: Callable[[str, str, str], ConfigError],
) -> Tenant:
    """The tenant whose own checked values are ``own``, over ``defaults``: its home (by
    default ``homes_dir/NAME``, or its folder in ``storage`` in cluster mode) and path
    keys made absolute against ``root``. ``fail(table, key, problem)`` is the error for a
    value that does not work, ``table`` being ``tenants.NAME`` or ``defaults``."""
    given = {**defaults, **own}
    home = given.pop("home", None)
    problem = home_problem(home) if home is not None else None
    if home is None:
        home = storage.home_of(name) if storage else str(homes_dir / name)
    elif "://" not in home and not problem:
        home = str((root / Path(home).expanduser()).resolve())
    if problem:
        raise fail(f"tenants.{name}", "home", problem)
    for key in PATH_KEYS:
        value = given.get(key)
        try:
            if value and "://" in value:
                _ = urlsplit(value).port  # raises on a bracket left open, a bad port
            elif value:
                given[key] = str((root / Path(value).expanduser()).resolve())
        except (ValueError, RuntimeError) as exc:
            source = "defaults" if key in defaults and key not in own else f"tenants.{name}"
            raise fail(source, key, f"{value!r}: {exc}") from None
    return _tenant(name, home, state_dir / name, given)


def find_config(option: str | None) -> Path:
    """The config path: ``--config``, else ``$LISTFERRY_CONFIG``, else ``./listferry.toml``."""
    return Path(option or os.environ.get("LISTFERRY_CONFIG") or DEFAULT_NAME)


#: The schemes of the built-in transports to a customer's server: each logs in as a user.
LOGIN_SCHEMES = ("sftp", "ftp", "ftps")


def home_problem(home: str) -> str | None:
    """What makes ``home`` unusable, said after the key (``home ...``), or ``None``: a URL
    that cannot be read, names no host (or, for sftp, ftp and ftps, no user), or holds a
    password; a folder whose leading ``~`` names no user this machine has."""
    if "://" not in home:
        try:
            Path(home).expanduser()
        except RuntimeError:
            return f"{home!r}: no user {home[1:].split('/', 1)[0]!r} on this machine for its ~"
        return None
    try:
        url = urlsplit(home)
        _ = url.port  # raises on a bracket left open, a bad port
    except (ValueError, RuntimeError) as exc:
        return f"{home!r}: {exc}"
    server = home.split("://", 1)[1].split("/", 1)[0]
    if "@" in server and ":" in server.split("@", 1)[0]:
        return "must not hold a password; use remote_password_env (or remote_password)"
    if not url.hostname:
        return f"{home!r} names no host"
    if url.scheme.lower() in LOGIN_SCHEMES and not url.username:
        return f"{home!r} names no user: {url.scheme}://USER@{url.hostname}/..."
    return None


def cpu_count() -> int:
    """The CPUs this process may run on: the default number of ``workers``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def parse_config(text: str, path: Path) -> Config:
    """Check a config's text and return it; raise :class:`ConfigError` naming the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    root = path.parent.resolve()
    known = {"listferry", "server", "defaults", "tenants", "notify", "web", *CLUSTER_TABLES}
    unknown = set(data) - known
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(
            f"{place(path, line_of(text, name))}: unknown table [{name}] "
            "(known: [listferry], [server], [defaults], [tenants.NAME], [notify], [web], "
            "[cluster], [storage])"
        )
    for table in ("listferry", "server", "defaults", "tenants"):
        if table in data and not isinstance(data[table], dict):
            raise not_a_table(path, table)
    listferry_keys = keys_of(ListferrySettings)
    written = checked(text, path, "listferry", data.get("listferry", {}), listferry_keys)
    settings = ListferrySettings(**attributes(listferry_keys.values(), written))
    tenant_keys = keys_of(Tenant)
    defaults_keys = {name: key for name, key in tenant_keys.items() if name != "home"}
    defaults = checked(text, path, "defaults", data.get("defaults", {}), defaults_keys)
    state_dir = (root / settings.state).resolve()
    homes_dir = (root / settings.homes).resolve()
    server = checked(text, path, "server", data.get("server", {}), keys_of(ServerSettings))
    _ports_apart(path, text, server)
    cluster, storage = parse_cluster(text, path, data)
    if cluster is not None and data.get("tenants"):
        first = next(iter(data["tenants"]))
        raise ConfigError(
            f"{place(path, line_of(text, f'tenants.{first}'))}: [tenants.{first}]: in cluster "
            "mode the tenants live in the cluster's database, not in listferry.toml: move them "
            "there with 'listferry cluster import --from SINGLE_MACHINE.toml', then take the "
            "[tenants.NAME] tables out of this file"
        )

    def fail(table: str, key: str, problem: str) -> ConfigError:
        return key_error(path, text, table, key, problem)

    tenants = {}
    for name, table in data.get("tenants", {}).items():
        if not TENANT_NAME.fullmatch(name):
            raise ConfigError(
                f"{place(path, line_of(text, f'tenants.{name}'))}: tenant name {name!r} must be "
                "lower-case letters, digits, '-' or '_', starting with a letter or digit"
            )
        if not isinstance(table, dict):
            raise not_a_table(path, f"tenants.{name}", line_of(text, "tenants", name))
        own = checked(text, path, f"tenants.{name}", table, tenant_keys)
        tenants[name] = build_tenant(name, own, defaults, root, state_dir, homes_dir, None, fail)
    return Config(
        path=path,
        state_dir=state_dir,
        homes_dir=homes_dir,
        plugins=settings.plugins,
        disable=settings.disable,
        tenants=tenants,
        workers=settings.workers or cpu_count(),
        server=_server_settings(server, root, state_dir),
        text=text,
        executor=settings.executor,
        notify=parse_notify(text, path, data.get("notify")),
        web=parse_web(text, path, data.get("web")),
        defaults=defaults,
        cluster=cluster,
        storage=storage,
    )


def load_config(path: Path, tenants: Collection[str] | None = None) -> Config:
    """Read and check the config file at ``path``. In cluster mode its tenants are the
    rows of the cluster's database: every row, or only those named in ``tenants`` (a
    job's sync needs its own: reading and checking every tenant for each job of a night
    would cost each job more the more tenants there are)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file (run 'listferry init', or pass --config PATH)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{place(path, line)}: not UTF-8 text (byte {exc.start})") from None
    config = parse_config(text, path)
    if config.cluster is not None:  # the tenants every node shares, from the database
        from listferry.config.shared import with_shared_tenants

        config = with_shared_tenants(config, tenants)
    return config
