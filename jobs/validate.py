"""validate: check D's staged recommendations and publish them to ``recommendations`` in one
Delta commit (``replaceWhere`` on run_date = D), then compact D's partition.

Checks: ranks 1..n contiguous per user, no duplicate (user, item), no item the user rated by D,
scores non-increasing by rank, at most top_k rows per user, every active user present. On a
failure nothing is published and the error names the check and how many users fail it.
"""

from __future__ import annotations

import datetime as dt
import logging

from lmrec.core import schema as S
from lmrec.core.errors import ValidationError
from lmrec.core.settings import Settings

log = logging.getLogger(__name__)


def check_recommendations(recs, seen, active, *, top_k: int) -> dict[str, int]:
    """Users failing each check (0 = pass).

    Args:
        recs: user_id, rank, item_id, score; seen: user_id, item_id rated by D; active: user_id.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy(S.COL_USER).orderBy(S.COL_RANK)
    per_user = recs.groupBy(S.COL_USER).agg(
        F.count("*").alias("n"), F.min(S.COL_RANK).alias("lo"), F.max(S.COL_RANK).alias("hi"),
        F.countDistinct(S.COL_RANK).alias("ranks"), F.countDistinct(S.COL_ITEM).alias("items"))
    bad_order = (recs.withColumn("_prev", F.lag(S.COL_SCORE).over(w))
                 .where(F.col("_prev") < F.col(S.COL_SCORE)).select(S.COL_USER).distinct())
    seen_hits = recs.join(seen, [S.COL_USER, S.COL_ITEM], "inner").select(S.COL_USER).distinct()
    missing = active.join(recs.select(S.COL_USER).distinct(), S.COL_USER, "left_anti")
    counts = per_user.agg(
        F.sum(((F.col("lo") != 1) | (F.col("hi") != F.col("n")) | (F.col("ranks") != F.col("n"))).cast("int")).alias("ranks_not_contiguous"),
        F.sum((F.col("items") != F.col("n")).cast("int")).alias("duplicate_items"),
        F.sum((F.col("n") > top_k).cast("int")).alias("more_than_top_k"),
    ).first().asDict()
    counts = {k: int(v or 0) for k, v in counts.items()}
    counts["scores_increase_with_rank"] = bad_order.count()
    counts["seen_items_recommended"] = seen_hits.count()
    counts["active_users_missing"] = missing.count()
    return counts


def publish(recs, spark, cfg: Settings, run_date: dt.date, *, top_k: int) -> dict:
    """Validate ``recs`` for ``run_date`` and, only if every check passes, publish them."""
    from lmrec.core.io import read_table, write_partition
    from lmrec.core.maintenance import ensure_constraints
    from lmrec.core.pit import active_users

    seen = read_table(spark, cfg, S.RATING_MATRIX, run_date).select(S.COL_USER, S.COL_ITEM)
    recs = recs.select(S.COL_USER, S.COL_RANK, S.COL_ITEM, S.COL_SCORE, S.COL_MODEL_VERSION, S.COL_BECAUSE).cache()
    try:
        failures = check_recommendations(recs, seen, active_users(spark, cfg, run_date), top_k=top_k)
        bad = {k: v for k, v in failures.items() if v}
        if bad:
            raise ValidationError(f"recommendations for {run_date} not published: "
                                  + "; ".join(f"{k}: {v} user(s)" for k, v in bad.items()))
        write_partition(recs, cfg, S.RECOMMENDATIONS, run_date)
    finally:
        recs.unpersist()
    path = cfg.table_path(S.RECOMMENDATIONS)
    ensure_constraints(spark, cfg, S.RECOMMENDATIONS)  # from the first night on: NOT NULL, rank within k, finite score
    if cfg.optimize:  # compact D's partition, clustered by user for per-user lookups
        spark.sql(f"OPTIMIZE delta.`{path}` WHERE {S.COL_RUN_DATE} = '{run_date.isoformat()}' ZORDER BY ({S.COL_USER})")
    published = read_table(spark, cfg, S.RECOMMENDATIONS, run_date)
    out = {"rows": published.count(), "users": published.select(S.COL_USER).distinct().count(), "checks": failures}
    log.info("validate %s: published %d rows for %d users to %s", run_date, out["rows"], out["users"], path)
    return out


def run(run_date: dt.date, *, cfg: Settings, spark, source: str | None = None, top_k: int | None = None) -> dict:
    """Validate the staged recommendations of ``run_date`` and publish them."""
    from lmrec.core.io import read_table

    staged = read_table(spark, cfg, S.RECOMMENDATIONS_STAGING, run_date)
    return publish(staged, spark, cfg, run_date, top_k=S.MAX_K if top_k is None else top_k)


def main(argv: list[str] | None = None) -> None:
    from lmrec.pipeline import job_entry

    job_entry("validate", argv)


if __name__ == "__main__":
    main()
