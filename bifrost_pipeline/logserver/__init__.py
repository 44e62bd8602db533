"""The log server (`bifrost-pipeline logs`): the log API, a live stream and the log explorer page.

It reads what the project already has, with DuckDB: the landed segments (the last minutes and hours, open
ones included) and the raw_logs Parquet partitions (closed days); there is no second log database (`store`).
The proxy never imports this package: it stays free of DuckDB.

- ``filters``: the query parameters of Bifrost's logging API (and this project's), as SQL and as a predicate;
- ``store``: which files a query reads, and the queries (page, stats, series, one record);
- ``live``: the tailer of the landing zone and the hub of bounded subscribers;
- ``app``: the Starlette app (API, ``/ws``, ``/api/logs/stream``, the page in ``static/``);
- ``serve``: the ``logs`` sub-command and its uvicorn server.
"""
