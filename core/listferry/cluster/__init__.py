"""Cluster mode: many machines on PostgreSQL, Procrastinate and S3-compatible storage.

Imported only when the config has a ``[cluster]`` table; its packages come with
``pip install 'listferry[cluster]'``. See docs/cluster.md.
"""
