"""The ``local`` executor: scheduled jobs as child processes of this machine."""

from typing import Any

from listferry import hookimpl
from listferry.jobs import local_executor


@hookimpl
def register_executors(register: Any) -> None:
    register("local", local_executor)
