"""Analyst access: ``lmrec query "SQL"`` and ``lmrec recs USER_ID`` over the tables registered
in the ``lmrec`` Spark database."""

from __future__ import annotations

import datetime as dt

from jobs import schema as S
from jobs.settings import Settings


def user_recommendations(spark, cfg: Settings, user_id: str, run_date: dt.date | None = None):
    """(run_date, rows) of a user's recommendations with item titles and the explaining title;
    the latest date when ``run_date`` is None."""
    from pyspark.sql import functions as F

    from jobs.io import read_table

    recs = read_table(spark, cfg, S.RECOMMENDATIONS).where(F.col(S.COL_USER) == user_id)
    if run_date is None:
        run_date = recs.agg(F.max(S.COL_RUN_DATE)).first()[0]
        if run_date is None:
            return None, []
    recs = recs.where(F.col(S.COL_RUN_DATE) == F.lit(run_date))
    titles = read_table(spark, cfg, S.ITEMS_RAW, run_date).select(S.COL_ITEM, S.COL_TITLE)
    because = titles.select(F.col(S.COL_ITEM).alias(S.COL_BECAUSE), F.col(S.COL_TITLE).alias("because_title"))
    rows = (recs.join(titles, S.COL_ITEM, "left").join(because, S.COL_BECAUSE, "left")
            .select(S.COL_RANK, S.COL_ITEM, S.COL_TITLE, F.round(S.COL_SCORE, 4).alias(S.COL_SCORE),
                    S.COL_MODEL_VERSION, "because_title").orderBy(S.COL_RANK).collect())
    return run_date, rows


def cmd_query(args) -> None:
    from jobs.cli import print_table
    from jobs.io import register_tables
    from jobs.spark import get_spark

    cfg = Settings.from_env()
    spark = get_spark(cfg, app_name="lmrec-query")
    register_tables(spark, cfg)
    spark.sql(f"USE {cfg.database}")
    df = spark.sql(args.sql)
    rows = df.limit(args.limit).collect()
    print_table([tuple(r) for r in rows], df.columns)


def cmd_recs(args) -> None:
    from jobs.cli import print_table
    from jobs.spark import get_spark

    cfg = Settings.from_env()
    run_date, rows = user_recommendations(get_spark(cfg, app_name="lmrec-recs"), cfg, args.user_id, args.date)
    if not rows:
        raise SystemExit(f"no recommendations for user {args.user_id!r}" + (f" on {args.date}" if args.date else ""))
    print(f"recommendations for user {args.user_id} on {run_date}:")
    print_table([tuple(r) for r in rows], ["rank", "item_id", "title", "score", "model_version", "because you liked"])


def add_commands(sub) -> None:
    from jobs.cli import parse_date

    q = sub.add_parser("query", help="run Spark SQL over the lmrec tables and print a table", description=(
        "Run Spark SQL with every table registered in the lmrec database (LMREC_DATABASE), e.g. "
        "lmrec query \"SELECT run_date, count(*) FROM recommendations GROUP BY run_date\""))
    q.add_argument("sql")
    q.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    q.set_defaults(fn=cmd_query)
    r = sub.add_parser("recs", help="print a user's recommendations with titles and reasons")
    r.add_argument("user_id")
    r.add_argument("--date", type=parse_date, help="run date (default: the latest)")
    r.set_defaults(fn=cmd_recs)
