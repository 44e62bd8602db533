"""The `bifrost-pipeline` command."""

from __future__ import annotations

import argparse
import re
import sys


def _validate_config(args: argparse.Namespace) -> int:
    from bifrost_pipeline.config import ConfigError, config_path, load_config
    from bifrost_pipeline.demo import demo_key_note

    path = config_path(args.path)
    try:
        app = load_config(path)
    except ConfigError as err:
        print(f"{path}: invalid configuration", file=sys.stderr)
        for problem in err.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    from bifrost_pipeline.exports import make_destination

    print(f"{path}: OK")
    print(f"  landing zone: {app.landing_root}" + (f" (local side: {app.landing_dir})" if app.landing_is_remote else ""))
    print(f"  raw_logs:     daily UTC partitions from {_start(app)}, {app.raw_dir}")
    if not app.exports:
        print("  no enabled exports")
    for e in app.exports:
        s = e.schedule
        when = {"daily": "every day", "weekly": f"every {s.day}", "monthly": f"on day {s.day} of every month"}
        compression = "uncompressed" if e.data.codec == "none" else f"{e.data.codec}-compressed"
        print(f"  export {e.name}")
        print(f"    asset:       {e.asset_name} (job {e.asset_name}_job)")
        print(f"    partitions:  {s.frequency} windows in {s.timezone}, {_first_window(app, e)}")
        print(f"    schedule:    {when[s.frequency]} at {s.time} {s.timezone} (exports the window that just ended)")
        print(f"    data:        {', '.join(e.data.include)} as {e.data.format}, {compression}")
        steps = [t.type for t in e.data.transformations]
        if steps:
            print(f"    transforms:  {' -> '.join(steps)}")
        print(f"    destination: {e.destination.type} {make_destination(app, e).describe()}")
    note = demo_key_note(app)
    if note:
        print(f"note: {note}")
    return 0


def _first_window(app, export) -> str:
    from bifrost_pipeline.defs.partitions import export_partitions
    from bifrost_pipeline.exports import partition_window

    key = export_partitions(app, export).get_first_partition_key()
    if key is None:
        return f"none yet: no {export.schedule.frequency} window after {_start(app)} has ended"
    start, end = partition_window(export.schedule, key)
    return f"the first {start:%Y-%m-%d %H:%M %Z} to {end:%Y-%m-%d %H:%M %Z} (partitions from {_start(app)})"


def _start(app) -> str:
    if app.pipeline.start_date is not None:
        return f"{app.partitions_start} (pipeline.start_date)"
    return f"{app.partitions_start} (the first day with data; pipeline.start_date is not set)"


def _demo(args: argparse.Namespace) -> int:
    from bifrost_pipeline.demo import run_demo

    return run_demo(
        config=args.config, days=args.days, records_per_day=args.records_per_day, seed=args.seed,
        proxy_requests=args.proxy_requests,
    )


def utc_day(text: str):
    """A day as the backfill takes it: YYYY-MM-DD, or relative to the UTC date: today, yesterday, today-N."""
    from datetime import UTC, date, datetime, timedelta

    today = datetime.now(UTC).date()
    m = re.fullmatch(r"today(?:-(\d{1,4}))?|yesterday", text.strip())
    if m:
        return today - timedelta(days=1 if text.strip() == "yesterday" else int(m.group(1) or 0))
    return date.fromisoformat(text)


def _backfill(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from bifrost_pipeline.backfill import backfill
    from bifrost_pipeline.config import ConfigError, config_path, load_config
    from bifrost_pipeline.demo import demo_key_note

    path = config_path(args.config).resolve()
    try:
        app = load_config(path)
        first, last = utc_day(args.start), utc_day(args.end)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"--from/--to: expected dates as YYYY-MM-DD, today, yesterday or today-N ({err})", file=sys.stderr)
        return 2
    if last < first:
        print("--to is before --from", file=sys.stderr)
        return 2
    note = demo_key_note(app)
    if note:
        print(f"note: {note}")
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return 0 if backfill(app, path, days) else 1


def _upload_landing(args: argparse.Namespace) -> int:
    import time

    from bifrost_pipeline import landing
    from bifrost_pipeline.config import ConfigError, load_config

    try:
        app = load_config(args.config, with_exports=False)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    if not app.landing_is_remote:
        print(f"landing.path is the local directory {app.landing_root}: nothing to upload", file=sys.stderr)
        return 2
    while True:
        landing.recover_dead_writers(app.landing_dir)
        sent = landing.upload_segments(app.landing_dir, str(app.landing_root), app.landing.storage_options)
        print(f"uploaded {len(sent)} segment(s) from {app.landing_dir} to {app.landing_root}", flush=True)
        if not args.every:
            return 0
        time.sleep(args.every)


def _schema(args: argparse.Namespace) -> int:
    from bifrost_pipeline import records

    print(records.parquet_message(), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bifrost-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate-config", help="check a config file and print what it defines")
    p.add_argument("path", nargs="?", help="config file (default: $BIFROST_PIPELINE_CONFIG or ./bifrost_pipeline.yaml)")
    p.set_defaults(func=_validate_config)

    p = sub.add_parser("demo", help="land sample traffic and materialize every asset for it")
    p.add_argument("--config", help="config file (default: $BIFROST_PIPELINE_CONFIG or ./bifrost_pipeline.yaml)")
    p.add_argument("--days", type=int, default=3, help="complete UTC days of traffic, ending yesterday")
    p.add_argument("--records-per-day", type=int, default=4000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--proxy-requests", type=int, default=40, help="requests sent through the proxy (0: none)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("backfill", help="materialize raw_logs and every export for a range of UTC days, in order")
    p.add_argument("--from", dest="start", required=True, help="first UTC day: YYYY-MM-DD, today, yesterday or today-N")
    p.add_argument("--to", dest="end", required=True, help="last UTC day: YYYY-MM-DD, today, yesterday or today-N")
    p.add_argument("--config", help="config file (default: $BIFROST_PIPELINE_CONFIG or ./bifrost_pipeline.yaml)")
    p.set_defaults(func=_backfill)

    p = sub.add_parser(
        "upload-landing", help="ship the published segments of the local landing directory to a remote landing.path"
    )
    p.add_argument("--config", help="config file (default: $BIFROST_PIPELINE_CONFIG or ./bifrost_pipeline.yaml)")
    p.add_argument("--every", type=float, default=0, help="repeat every N seconds (default: once)")
    p.set_defaults(func=_upload_landing)

    p = sub.add_parser("schema", help="print the Parquet schema of the log record (derived from schemas/)")
    p.set_defaults(func=_schema)

    try:
        from bifrost_pipeline.proxy.cli import add_proxy_parser
    except ImportError:
        add_proxy_parser = None
    if add_proxy_parser is not None:
        add_proxy_parser(sub)
    from bifrost_pipeline.logserver.serve import add_logs_parser

    add_logs_parser(sub)  # standard library only until it runs (the server needs the proxy extra)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
