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
    add_summary_command(sub)


def champion_summary(cfg: Settings) -> tuple[str | None, list[tuple]]:
    """(champion version, [(model, NDCG@10, precision@10, recall@10, MAP@10)]) from its MLflow run."""
    from mlflow.exceptions import MlflowException

    from jobs.train import setup_mlflow

    mlflow = setup_mlflow(cfg)
    client = mlflow.MlflowClient()
    try:
        mv = client.get_model_version_by_alias(S.MODEL_NAME, S.ALIAS_CHAMPION)
    except MlflowException:
        return None, []
    metrics = client.get_run(mv.run_id).data.metrics
    names = sorted({k.split(".", 1)[0] for k in metrics if k.endswith(".ndcg_at_10")})
    rows = [(n, *(round(metrics.get(f"{n}.{m}", float("nan")), 4) for m in ("ndcg_at_10", "precision_at_10", "recall_at_10", "map_at_10")))
            for n in names]
    return str(mv.version), sorted(rows, key=lambda r: -r[1])


def cmd_summary(args) -> None:
    from pyspark.sql import functions as F

    from jobs.cli import print_table, table_counts
    from jobs.io import read_table
    from jobs.spark import get_spark

    cfg = Settings.from_env()
    spark = get_spark(cfg, app_name="lmrec-summary")
    print(f"\nTables under {cfg.warehouse} (rows for {args.date} where partitioned by run_date):")
    print_table([(n, c, p) for n, p, c in table_counts(cfg, spark, args.date)], ["table", "rows", "path"])
    version, rows = champion_summary(cfg)
    print(f"\nChampion: {S.MODEL_NAME} version {version} (MLflow {cfg.mlflow_tracking_uri}); validation metrics:")
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


def add_summary_command(sub) -> None:
    from jobs.cli import parse_date

    s = sub.add_parser("summary", help="print tables, the champion's metrics and sample recommendations for a date")
    s.add_argument("--date", required=True, type=parse_date)
    s.set_defaults(fn=cmd_summary)
