"""listferry's first-party plugins, registered through the ``listferry`` entry points."""
