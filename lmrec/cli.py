"""The ``lmrec`` command: run a job or the whole pipeline for a logical date, import data,
generate the demo catalogue, and the analyst commands (tables, query, recs, summary)."""

from __future__ import annotations

import argparse
import logging
import sys

from lmrec.core import schema as S
from lmrec.core.settings import Settings
from lmrec.pipeline import (JOB_NAMES, JOBS, OPTIONS, add_job_arguments, options_of, parse_date, report, run_job,
                            setup_logging)

log = logging.getLogger("lmrec")


def print_table(rows: list, headers: list[str]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    sys.stdout.flush()


# --------------------------------------------------------------------------------- commands

def cmd_job(args) -> None:
    report(run_job(args.name, args.date, source=args.source, **options_of(args)))


def cmd_pipeline(args) -> None:
    from lmrec.core.io import table_counts
    from lmrec.core.spark import get_spark

    cfg = Settings.from_env()
    spark = get_spark(cfg, app_name=f"lmrec-pipeline-{args.date}", gpu=True)
    names = args.jobs.split(",") if args.jobs else list(JOB_NAMES)
    for name in names:
        run_job(name, args.date, cfg=cfg, spark=spark, source=args.source, **options_of(args))
    print(f"\nTables under {cfg.warehouse} (rows for {args.date} where partitioned by run_date):")
    print_table([(n, c, p) for n, p, c in table_counts(cfg, spark, args.date)], ["table", "rows", "path"])


def cmd_spark_server(args) -> None:
    import os

    from lmrec.core.spark import connect_server_args, parse_conf

    cfg = Settings.from_env()
    try:
        extra = parse_conf(args.conf)
    except ValueError as exc:
        raise SystemExit(f"lmrec spark-server: {exc}") from None
    argv = connect_server_args(cfg, host=args.host, port=args.port, extra=extra)
    if args.print:
        print(" ".join(argv))
        return
    log.info("Spark Connect server for lmrec on sc://%s:%d (master %s, warehouse %s); jobs use it with "
             "LMREC_SPARK_REMOTE=sc://%s:%d", args.host, args.port, cfg.spark_master, cfg.warehouse, args.host, args.port)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the server's Python workers: this environment
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # the server in this process's place: signals and exit status are its own


def cmd_tables(args) -> None:
    from lmrec.core.io import table_counts
    from lmrec.core.spark import get_spark

    cfg = Settings.from_env()
    rows = table_counts(cfg, get_spark(cfg), args.date)
    print_table([(n, c, p) for n, p, c in rows], ["table", "rows", "path"])


def cmd_import(args) -> None:
    from lmrec.data import importers

    fn = {"movielens": importers.import_movielens, "amazon-reviews": importers.import_amazon_reviews}[args.dataset]
    counts = fn(args.path, args.out, fmt=args.format)
    print(f"wrote source {args.out}: " + ", ".join(f"{k} {v:,} rows" for k, v in counts.items()), flush=True)


def cmd_demo(args) -> None:
    from lmrec.data.demo import write_demo

    counts = write_demo(args.out, users=args.users, items=args.items, ratings_per_user=args.ratings_per_user,
                        days=args.days, end_date=args.end_date, seed=args.seed, fmt=args.format)
    print(f"wrote demo source {args.out}: " + ", ".join(f"{k} {v:,} rows" for k, v in counts.items()), flush=True)


def cmd_maintain(args) -> None:
    from lmrec.core import maintenance
    from lmrec.core.spark import get_spark

    cfg = Settings.from_env()
    out = maintenance.run(args.date, cfg=cfg, spark=get_spark(cfg, app_name=f"lmrec-maintain-{args.date}"),
                          vacuum=not args.no_vacuum)
    print_table([(t, ", ".join(s["constraints_added"]) or "-", s["rows_expired"]) for t, s in out.items()],
                ["table", "constraints added", "rows expired"])


def cmd_query(args) -> None:
    from lmrec.query import run_query

    limit = args.limit if args.limit is not None else (50 if args.format == "table" else None)
    columns, rows = run_query(args.sql, engine=args.engine, limit=limit)
    if args.format == "csv":
        import csv

        out = csv.writer(sys.stdout)
        out.writerow(columns)
        out.writerows(rows)
    elif args.format == "json":
        import json

        json.dump([dict(zip(columns, r)) for r in rows], sys.stdout, default=str, indent=1)
        print()
    else:
        print_table(rows, columns)


def cmd_recs(args) -> None:
    from lmrec.core.spark import get_spark

    cfg = Settings.from_env()
    from lmrec.analyst import user_recommendations

    run_date, rows = user_recommendations(get_spark(cfg, app_name="lmrec-recs"), cfg, args.user_id, args.date)
    if not rows:
        raise SystemExit(f"no recommendations for user {args.user_id!r}" + (f" on {args.date}" if args.date else ""))
    print(f"recommendations for user {args.user_id} on {run_date}:")
    print_table([tuple(r) for r in rows], ["rank", "item_id", "title", "score", "model_version", "because you liked"])


def cmd_summary(args) -> None:
    from pyspark.sql import functions as F

    from lmrec.analyst import champion_summary, user_recommendations
    from lmrec.core.io import read_table, table_counts
    from lmrec.core.spark import get_spark

    cfg = Settings.from_env()
    spark = get_spark(cfg, app_name="lmrec-summary")
    print(f"\nTables under {cfg.warehouse} (rows for {args.date} where partitioned by run_date):")
    print_table([(n, c, p) for n, p, c in table_counts(cfg, spark, args.date)], ["table", "rows", "path"])
    version, rows = champion_summary(cfg)
    print(f"\nChampion: {S.MODEL_NAME} version {version} (MLflow {cfg.mlflow_tracking_uri}); test-part metrics (models fit on the fit part, knobs chosen on validation):")
    print_table(rows, ["model", "NDCG@10", "precision@10", "recall@10", "MAP@10"])
    recs = read_table(spark, cfg, S.RECOMMENDATIONS, args.date)
    users = [r[0] for r in recs.select(S.COL_USER).distinct().orderBy(S.COL_USER).limit(3).collect()]
    for u in users:
        _, rows = user_recommendations(spark, cfg, u, args.date)
        print(f"\nRecommendations for user {u} on {args.date}:")
        print_table([tuple(r) for r in rows[:5]], ["rank", "item_id", "title", "score", "model_version", "because you liked"])
    n_users = recs.select(F.countDistinct(S.COL_USER)).first()[0]
    print(f"\n{n_users} users have recommendations for {args.date}. Next:\n"
          f"  .venv/bin/lmrec query \"SELECT run_date, count(*) AS n FROM recommendations GROUP BY run_date\"\n"
          f"  .venv/bin/lmrec recs {users[0] if users else 'USER_ID'} --date {args.date}\n"
          f"  .venv/bin/mlflow ui --backend-store-uri {cfg.mlflow_tracking_uri}\n"
          f"  make airflow   # the Airflow UI")


def build_parser() -> argparse.ArgumentParser:
    from lmrec.core.spark import CONNECT_PORT
    from lmrec.data.demo import DEFAULT_END

    p = argparse.ArgumentParser(prog="lmrec", description=(
        "Nightly batch recommendations: BERT text profiles + collaborative filtering on Spark, "
        "Delta and MLflow. Settings come from the environment (LMREC_*, MLFLOW_TRACKING_URI, SPARK_MASTER)."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    j = sub.add_parser("job", help="run one job for a logical date", description=(
        "Run one pipeline job for logical date D, in this process, with the environment's settings "
        "(the same entry point spark-submit runs). Jobs: " + ", ".join(JOB_NAMES)
        + ". Each job takes the options its registry row names: " + "; ".join(
            f"{j.name}: {', '.join(OPTIONS[o][0] for o in j.options)}" for j in JOBS if j.options)))
    j.add_argument("name", choices=list(JOB_NAMES), metavar="NAME", help="job: " + ", ".join(JOB_NAMES))
    add_job_arguments(j)
    j.set_defaults(fn=cmd_job)

    pl = sub.add_parser("pipeline", help="run every job in order for a date, in one process", description=(
        "Run the jobs in pipeline order for date D in one Spark session (no Airflow)."))
    add_job_arguments(pl)
    pl.add_argument("--jobs", help="comma-separated subset of jobs (default: all)")
    pl.set_defaults(fn=cmd_pipeline)

    ss = sub.add_parser("spark-server", help="run a long-lived Spark Connect server the jobs share (LMREC_SPARK_REMOTE)",
                        description=(
        "Run a Spark Connect server in the foreground with lmrec's Spark settings (Delta, SPARK_MASTER, "
        "LMREC_DRIVER_MEMORY, the table defaults). Jobs started with LMREC_SPARK_REMOTE=sc://HOST:PORT connect "
        "to it instead of starting a JVM each: a night's eight tasks skip ~25 s of JVM start, session and cold "
        "Delta code each. The server has no authentication: keep it on 127.0.0.1 or a private network. "
        "Stop it with Ctrl-C or SIGTERM."))
    ss.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    ss.add_argument("--port", type=int, default=CONNECT_PORT, help=f"port (default {CONNECT_PORT}, Spark Connect's)")
    ss.add_argument("--conf", action="append", default=[], metavar="spark.KEY=VALUE",
                    help="a Spark setting of the server's own, after lmrec's (repeatable); in Kubernetes "
                         "spark.kubernetes.driver.pod.name=$(POD_NAME) and spark.driver.host=$(POD_IP)")
    ss.add_argument("--print", action="store_true", help="print the spark-submit command instead of running it")
    ss.set_defaults(fn=cmd_spark_server)

    t = sub.add_parser("tables", help="list the Delta tables and their row counts")
    t.add_argument("--date", type=parse_date, help="count only this run_date's partition where partitioned")
    t.set_defaults(fn=cmd_tables)

    im = sub.add_parser("import", help="convert a public dataset into a source directory", description=(
        "Convert MovieLens (100K u.data, 1M .dat, latest/25M .csv) or Amazon reviews (JSON lines, .gz or not) "
        "into the source format (ratings, items, user_text)."))
    im.add_argument("dataset", choices=["movielens", "amazon-reviews"])
    im.add_argument("path", help="MovieLens directory, or the Amazon reviews .json[.gz] file")
    im.add_argument("--out", required=True, help="source directory to write")
    im.add_argument("--format", choices=["csv", "parquet"], default="csv")
    im.set_defaults(fn=cmd_import)

    d = sub.add_parser("demo-data", help="generate the deterministic demo catalogue", description=(
        "Generate the embedded default: items with titles, descriptions and genres whose words predict "
        "who likes them; ratings spread over --days days ending at --end-date; some user text."))
    d.add_argument("--out", required=True)
    d.add_argument("--users", type=int, default=300)
    d.add_argument("--items", type=int, default=400)
    d.add_argument("--ratings-per-user", type=float, default=30.0, help="mean ratings per user (heavy-tailed)")
    d.add_argument("--days", type=int, default=7, help="days the rating timestamps span")
    d.add_argument("--end-date", type=parse_date, default=DEFAULT_END, help=f"last day with events (default {DEFAULT_END})")
    d.add_argument("--seed", type=int, default=S.SEED)
    d.add_argument("--format", choices=["csv", "parquet"], default=None, help="default: csv, parquet above 2M ratings")
    d.set_defaults(fn=cmd_demo)

    mt = sub.add_parser("maintain", help="table upkeep for a date: constraints, retention, OPTIMIZE, VACUUM", description=(
        "For logical date D: add missing constraints to the contract tables, delete partitions older than "
        "LMREC_SNAPSHOT_RETENTION_DAYS (intermediate tables) or LMREC_RESULT_RETENTION_DAYS (recommendations, "
        "model_ledger) before D, OPTIMIZE D's partitions (recommendations Z-ordered by user_id) and VACUUM "
        "(files unreferenced for the tables' 7-day retention). The DAG lmrec_table_maintenance runs it daily."))
    mt.add_argument("--date", required=True, type=parse_date, help="logical date D (retention counts back from D)")
    mt.add_argument("--no-vacuum", action="store_true", help="skip VACUUM")
    mt.set_defaults(fn=cmd_maintain)
    q = sub.add_parser("query", help="read the lmrec tables with SQL (read-only; DuckDB, no JVM)", description=(
        "Run one read-only statement (SELECT, WITH, SHOW, DESCRIBE) over the lmrec tables by name, e.g. "
        "lmrec query \"SELECT run_date, count(*) FROM recommendations GROUP BY run_date\". Anything else "
        "(DELETE, INSERT, COPY, tables given by path, table functions) is refused with exit status 1 and "
        "changes nothing. The raw user text is not exposed; quarantine is shown without raw_record."))
    q.add_argument("sql", help="the statement")
    q.add_argument("--engine", choices=["duckdb", "spark"], default="duckdb",
                   help="duckdb: delta-rs + DuckDB, starts no JVM (default); spark: Spark SQL")
    q.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format (default table)")
    q.add_argument("--limit", type=int, default=None, help="rows at most (default: 50 for table, all for csv/json)")
    q.set_defaults(fn=cmd_query)
    r = sub.add_parser("recs", help="print a user's recommendations with titles and reasons")
    r.add_argument("user_id")
    r.add_argument("--date", type=parse_date, help="run date (default: the latest)")
    r.set_defaults(fn=cmd_recs)
    s = sub.add_parser("summary", help="print tables, the champion's metrics and sample recommendations for a date")
    s.add_argument("--date", required=True, type=parse_date)
    s.set_defaults(fn=cmd_summary)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
        args.fn(args)
    except Exception as exc:  # clear one-line error for users; the traceback with -v
        if getattr(args, "verbose", False):
            raise
        log.error("%s: %s", type(exc).__name__, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())
