"""The config ``listferry init`` (and ``listferry demo``) write: commented, to be edited."""

STARTER_CONFIG = """\
# listferry configuration: see docs/operator.md for every key.

[listferry]
state = "state"   # tenant databases and archived files: keep private, back it up
homes = "homes"   # one folder per tenant, where its CRM uploads list files

[defaults]        # settings every tenant gets unless its own table says otherwise
dialect = "default"
strategy = "full"
count_file = "optional"
schedule = "02:00"  # when `listferry serve` syncs each tenant; "" leaves it to cron
timezone = "UTC"    # the clock schedule is read on, e.g. "Europe/Berlin"

# Who hears of voided and failed runs (docs/operations.md):
# [notify.email]
# smtp_host = "smtp.example.net"
# username = "listferry"
# password_env = "LISTFERRY_SMTP_PASSWORD"
# from = "listferry@example.net"
# to = ["newsletter-ops@example.net"]

# Add tenants with `listferry tenant add NAME`, or by hand:
# [tenants.acme]
# strategy = "incremental"
"""
