"""Adding a tenant: a new table appended to the config, checked, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from listferry.app import App, check_names
from listferry.config import TENANT_NAME, Config, parse_config
from listferry.errors import ConfigError, ListferryError


def check_name(name: str) -> str:
    """A tenant name is a folder and a TOML key: refuse anything that could be a path."""
    if not TENANT_NAME.match(name):
        raise ListferryError(
            f"tenant name {name!r} is not allowed: use lower-case letters, digits, '-' and "
            "'_', starting with a letter or digit, at most 63 characters"
        )
    return name


def toml_value(value: Any) -> str:
    """A TOML literal for the strings, numbers and string lists a tenant table holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def add_tenant(app: App, name: str, settings: dict[str, Any]) -> Config:
    """Append ``[tenants.NAME]`` to the config file and return the checked new config.

    The new config is checked whole (keys, dialect, strategy, home) before the file is
    written; a refused tenant leaves the file as it was.
    """
    config = app.config
    check_name(name)
    if name in config.tenants:
        raise ListferryError(f"{config.path}: tenant {name!r} exists already")
    lines = [f"\n[tenants.{name}]"]
    lines += [
        f"{key} = {toml_value(value)}" for key, value in settings.items() if value is not None
    ]
    text = config.text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    new = parse_config(text, config.path)
    check_names(new, app.host)
    write_atomically(config.path, text)
    return new


def set_tenant_setting(app: App, name: str, key: str, value: Any) -> Config:
    """Set ``key`` in ``[tenants.NAME]`` to ``value`` (a password hash, SSH keys ...).

    The key's line is replaced where it is (or added under the table's header); the new
    text is checked whole, and read back to be sure it says what was meant, before the
    file is replaced atomically. Comments and every other line stay as they were.
    """
    import re
    import tomllib

    from listferry.config import line_of

    config = app.config
    config.tenant(name)
    lines = config.text.splitlines(keepends=True)
    header = line_of(config.text, f"tenants.{name}")
    if header is None:
        raise ListferryError(
            f"{config.path}: [tenants.{name}] is not a table of its own; edit {key} by hand"
        )
    new_line = f"{key} = {toml_value(value)}\n"
    at = line_of(config.text, f"tenants.{name}", key)
    if at is None:
        lines.insert(header, new_line)
    else:
        end = at  # a value that goes on over several lines (an array) ends at its "]"
        if re.match(rf"^\s*{re.escape(key)}\s*=\s*\[", lines[at - 1]):
            while end < len(lines) and "]" not in lines[end - 1]:
                end += 1
        lines[at - 1 : end] = [new_line]
    text = "".join(lines)
    new = parse_config(text, config.path)
    if tomllib.loads(text)["tenants"][name].get(key) != value:
        raise ListferryError(f"{config.path}: could not set {key} of {name}; edit it by hand")
    check_names(new, app.host)
    write_atomically(config.path, text)
    return new


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old file or the new one."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_ssh_keys(path: Path) -> list[str]:
    """The public keys in an ``authorized_keys``-style file; refuses a private key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ListferryError(f"{path}: cannot read the key file: {exc}") from None
    if "PRIVATE KEY" in text:
        raise ListferryError(f"{path}: this is a private key; give the public key (.pub)")
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2 or not (parts[0].startswith(("ssh-", "ecdsa-", "sk-"))):
            raise ConfigError(f"{path} line {number}: not an OpenSSH public key")
        keys.append(line)
    if not keys:
        raise ListferryError(f"{path}: no public key in the file")
    return keys
