"""The errors listferry shows to people: each message is one line a customer could read."""


class ListferryError(Exception):
    """An error whose message is shown to the user as one line, without a traceback.

    Plugins raise it (or a subclass) for anything the operator or the customer must fix.
    """


class ConfigError(ListferryError):
    """The configuration file is malformed or names something that does not exist.

    ``key`` names the ``[listferry]`` key at fault when the message does not yet say
    where it is; the caller that knows the file adds the place.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class UsageError(ListferryError):
    """The command line asks for something that cannot be: a value an option does not
    take, a name that does not exist, input that is missing. The CLI exits 2 for it, as
    for a :class:`ConfigError`; other errors exit 1."""


class Void(ListferryError):
    """A list file fails a check: the run is voided, the last good list stands.

    The message is the reason, in plain words, as it appears in the run record and in
    the result report the customer reads.
    """


def secret_from_env(variable: str | None, setting: str) -> str | None:
    """The secret the environment variable ``variable`` holds (``None`` when no variable
    is named); unset or empty is an error naming the variable and the ``setting`` that
    names it, never the value."""
    import os

    if not variable:
        return None
    value = os.environ.get(variable)
    if not value:
        raise ListferryError(f"the environment variable {variable} ({setting}) is not set")
    return value
