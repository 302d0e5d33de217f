"""The sync, stage by stage, each module taking what the one before handed on:

1. :mod:`~listferry.sync.select` which files at the top of a home run now (and which
   are repeats of the last applied file);
2. :mod:`~listferry.sync.stage` the file unpacked and read by the dialect's reader into
   a temporary table, with the header, record and whole-file checks;
3. :mod:`~listferry.sync.plan` the strategy's decisions planned in SQL, and the plan
   checks;
4. :mod:`~listferry.sync.apply` the plan written, in one transaction: the only writer;
5. :mod:`~listferry.sync.report` the customer's result report.

:mod:`~listferry.sync.run` runs them for a tenant (fetching each file into a private
work folder, archiving it with the commit); :mod:`~listferry.sync.replay` runs an
archived file again; :mod:`~listferry.sync.check` runs stages 1 to 3 as a dry run.
"""
