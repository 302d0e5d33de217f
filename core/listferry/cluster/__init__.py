"""Cluster mode: many machines on PostgreSQL, Procrastinate and S3-compatible storage.

Imported only when the config has a ``[cluster]`` table; its packages come with
``pip install -e '.[cluster]'`` in the listferry folder. See docs/cluster.md.
"""

from listferry.config.shared import INSTALL

#: The exit code of a job's ``listferry sync --here`` when the cluster's database or
#: storage did not answer: the worker tries the job again later (EX_TEMPFAIL).
RETRY_EXIT = 75

__all__ = ["INSTALL", "RETRY_EXIT"]
