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


class Void(ListferryError):
    """A list file fails a check: the run is voided, the last good list stands.

    The message is the reason, in plain words, as it appears in the run record and in
    the result report the customer reads.
    """
