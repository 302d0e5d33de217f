"""Cluster mode tests: real PostgreSQL and SeaweedFS.

A package, so that its conftest does not shadow tests/conftest.py for the other tests.
"""
