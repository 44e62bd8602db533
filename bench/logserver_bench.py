"""Log server benchmark: a filtered first page and the stats over a 10M-record raw_logs day.

    python bench/logserver_bench.py                     # 10,000,000 records (issue 14's figure)
    python bench/logserver_bench.py --records 1000000   # a smoke run

Writes one UTC day of raw_logs (one Parquet file, zstd, the raw_logs schema) with DuckDB straight from
``range(n)`` (the per-record sample generator would take an hour for 10M), then times, each the median of
``--repeat`` runs after one warm-up:

- the log server's first page (``LogStore.page``: what ``GET /api/logs?include_stats=false`` runs), and the
  same page over HTTP through the Starlette app;
- its stats (``LogStore.stats``);
- beside both, DuckDB querying the same file by hand in the same process: the floor the server's own SQL
  (day listing, column normalisation, filters as parameters) is measured against.

Targets (issue 14): the filtered first page < 500 ms, the stats < 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from bifrost_pipeline.config import parse_config  # noqa: E402
from bifrost_pipeline.logserver.filters import parse_filter, parse_page  # noqa: E402
from bifrost_pipeline.logserver.store import LogStore  # noqa: E402

DAY = date(2024, 1, 14)
FILTER = {"providers": "anthropic", "status": "error", "min_latency": "1000"}
KEY = "bench-logs-key"

GENERATE = """
COPY (
  WITH base AS (
    SELECT i, (hash(i) % 1000000007)::BIGINT AS h,
      TIMESTAMPTZ '{day} 00:00:00+00' + to_microseconds((i * 86400000000 // {n})::BIGINT) AS ts,
      (100 + hash(i * 17) % 4000)::INTEGER AS latency
    FROM range({n}) t(i)
  )
  SELECT '1' AS schema_version, ts AS "timestamp", ts + to_milliseconds(latency) AS ended_at,
    'req_' || substr(md5(i::VARCHAR), 1, 24) AS request_id, NULL::VARCHAR AS parent_request_id,
    'cust_' || lpad((h % 40)::VARCHAR, 3, '0') AS customer_id, 'user_' || (h % 400)::VARCHAR AS user_id,
    ['team_search', 'team_support', 'team_growth', 'team_platform'][1 + (h // 7) % 4] AS team_id,
    'vk_' || lpad((h % 12)::VARCHAR, 2, '0') AS virtual_key_id,
    ['openai', 'openai', 'anthropic', 'azure', 'gemini', 'mistral'][1 + (h // 11) % 6] AS provider,
    ['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet', 'gpt-4o', 'gemini-1.5-pro', 'mistral-large'][1 + (h // 11) % 6] AS model,
    '/v1/chat/completions' AS endpoint, 'POST' AS method, 'chat' AS request_type, (h % 3 = 0) AS stream,
    CASE WHEN h % 100 < 4 THEN 'error' ELSE 'success' END AS status,
    (CASE WHEN h % 100 < 4 THEN 500 ELSE 200 END)::INTEGER AS status_code,
    CASE WHEN h % 100 < 4 THEN 'server_error' END AS error_type,
    CASE WHEN h % 100 < 4 THEN 'Upstream failed' END AS error_message,
    CASE WHEN h % 100 >= 4 THEN 'stop' END AS finish_reason, 0::INTEGER AS retries, 0::INTEGER AS fallback_index,
    latency AS latency_ms, NULL::INTEGER AS time_to_first_token_ms,
    (20 + h % 900)::INTEGER AS input_tokens, (h // 3 % 600)::INTEGER AS output_tokens,
    (20 + h % 900 + h // 3 % 600)::INTEGER AS total_tokens, 0::INTEGER AS cached_tokens,
    0::INTEGER AS reasoning_tokens, ((20 + h % 900 + h // 3 % 600) * 0.000004)::DOUBLE AS cost_usd,
    '{{"env": "production", "region": "us-east-1"}}' AS metadata,
    '[{{"role": "user", "content": "question ' || (h % 100000)::VARCHAR || '"}}]' AS input_content,
    '[{{"role": "assistant", "content": "answer ' || (h % 77777)::VARCHAR || '"}}]' AS output_content
  FROM base
) TO '{path}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)
"""

BY_HAND_PAGE = """
SELECT * EXCLUDE (input_content, output_content) FROM read_parquet('{path}')
WHERE provider = 'anthropic' AND status = 'error' AND latency_ms >= 1000
ORDER BY "timestamp" DESC LIMIT 50
"""
BY_HAND_STATS = """
SELECT count(*), avg(CASE WHEN status = 'success' THEN 1.0 ELSE 0.0 END), avg(latency_ms), sum(total_tokens),
  sum(cost_usd), count(*) FILTER (WHERE status = 'error'), approx_quantile(latency_ms, 0.95)
FROM read_parquet('{path}') WHERE provider = 'anthropic' AND status = 'error' AND latency_ms >= 1000
"""


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: file metadata, the OS page cache
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = parse_config({"pipeline": {"data_dir": "data"}, "landing": {"path": "landing"},
                            "logs": {"api_keys": [KEY]}}, base_dir=Path(tmp))  # fmt: skip
        day_dir = app.raw_dir / f"date={DAY.isoformat()}"
        day_dir.mkdir(parents=True)
        path = day_dir / "part-00000.parquet"
        started = time.perf_counter()
        duckdb.connect().execute(GENERATE.format(day=DAY.isoformat(), n=args.records, path=path))
        print(f"generated {args.records:,} records in {time.perf_counter() - started:.1f} s "
              f"({path.stat().st_size / 1e6:.0f} MB Parquet)")  # fmt: skip

        store = LogStore(app, memory_limit="2GB")
        flt, page = parse_filter(FILTER), parse_page({"limit": "50"}, 1000)
        by_hand = duckdb.connect(config={"memory_limit": "2GB"})
        figures = {
            "first page, log server": timed(lambda: store.page(flt, page), args.repeat),
            "first page, DuckDB by hand": timed(lambda: by_hand.sql(BY_HAND_PAGE.format(path=path)).fetchall(), args.repeat),
            "first page, over HTTP": http_page(app, store, args.repeat),
            "stats, log server": timed(lambda: store.stats(flt), args.repeat),
            "stats, DuckDB by hand": timed(lambda: by_hand.sql(BY_HAND_STATS.format(path=path)).fetchall(), args.repeat),
        }
        print(f"filter {FILTER}: {store.stats(flt)['total_requests']:,} of {args.records:,} records match")
        for name, seconds in figures.items():
            print(f"  {name:<30} {seconds * 1000:8.1f} ms")
        page_ok = figures["first page, over HTTP"] < 0.5
        stats_ok = figures["stats, log server"] < 2.0
        print(f"targets: first page < 500 ms {'met' if page_ok else 'MISSED'}, stats < 2 s {'met' if stats_ok else 'MISSED'}")


def http_page(app, store: LogStore, repeat: int) -> float:
    from starlette.testclient import TestClient

    from bifrost_pipeline.logserver.app import create_app

    with TestClient(create_app(app, store)) as client:
        params = {**FILTER, "limit": 50, "include_stats": "false"}

        def get() -> None:
            resp = client.get("/api/logs", params=params, headers={"x-api-key": KEY})
            assert resp.status_code == 200, resp.text

        return timed(get, repeat)


if __name__ == "__main__":
    main()
