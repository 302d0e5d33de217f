"""The operator's console: a web page and a JSON API over every tenant (``listferry web``).

:mod:`~listferry.web.app` holds the pages and the API, :mod:`~listferry.web.accounts`
the operators, API tokens and audit log, :mod:`~listferry.web.security` sessions, CSRF
tokens and login throttling, :mod:`~listferry.web.views` what the pages show.
"""
