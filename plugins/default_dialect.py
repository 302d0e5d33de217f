"""The ``default`` dialect: any CSV with e-mail, names and segment under common headers.

It maps only email, first name, last name and segment; every other column, an
opt-out column included, is kept in ``fields``. Mapping a CRM's opt-out column is the
job of that CRM's pack.
"""

from typing import Any

from listferry import hookimpl
from listferry.dialect import Dialect

DEFAULT = Dialect(
    name="default",
    description="Generic CSV: e-mail, first/last name and segment; other columns kept as fields",
)


@hookimpl
def register_dialects(register: Any) -> None:
    register(DEFAULT)
