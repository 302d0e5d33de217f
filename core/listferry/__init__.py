"""listferry: keeps newsletter subscriber lists in step with customers' CRM exports.

A plugin needs only this to implement a hook::

    from listferry import hookimpl
"""

import pluggy

from listferry.errors import ConfigError, ListferryError, UsageError, Void

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("listferry")

__all__ = ["ConfigError", "ListferryError", "UsageError", "Void", "__version__", "hookimpl"]
