"""rating_matrix: the ratings as of D (latest per user and item, events before D + 1 day UTC)
with stable integer ids, written to ``rating_matrix`` (partition D); new ids are appended to
``user_index`` / ``item_index``, which are never renumbered."""

from __future__ import annotations

import datetime as dt
import logging
import time

from jobs import schema as S
from jobs.io import is_concurrency_error, is_table, read_table, write_partition
from jobs.settings import Settings

log = logging.getLogger(__name__)


def cutoff(run_date: dt.date) -> dt.datetime:
    """Exclusive upper bound of what a run for ``run_date`` may see: D + 1 day, 00:00 UTC."""
    return dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(0), tzinfo=dt.timezone.utc)


def as_of(df, run_date: dt.date, *, col_ts: str = S.COL_EVENT_TS):
    """Rows of ``df`` with ``col_ts`` before the end of ``run_date`` (UTC)."""
    from pyspark.sql import functions as F

    return df.where(F.col(col_ts) < F.lit(cutoff(run_date).replace(tzinfo=None)).cast("timestamp"))


def build_rating_matrix(ratings_raw, run_date: dt.date, *, col_user: str = S.COL_USER,
                        col_item: str = S.COL_ITEM, col_ts: str = S.COL_EVENT_TS):
    """The latest rating per (user, item) among events before the end of ``run_date``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    for c in (col_user, col_item, S.COL_RATING, col_ts):
        if c not in ratings_raw.columns:
            raise ValueError(f"rating_matrix: input is missing column {c!r}")
    w = Window.partitionBy(col_user, col_item).orderBy(F.col(col_ts).desc(), F.col(S.COL_RATING).desc())
    return (as_of(ratings_raw, run_date, col_ts=col_ts)
            .withColumn("_rn", F.row_number().over(w)).where("_rn = 1")
            .select(col_user, col_item, S.COL_RATING, col_ts))


def build_new_index_rows(existing, ids, *, col_id: str, col_idx: str):
    """Rows (id, idx) for ids not yet in ``existing``: the next free integers, in id order."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    start = existing.agg(F.max(col_idx)).first()[0] if existing is not None else None
    start = -1 if start is None else int(start)
    new = ids.select(col_id).distinct()
    if existing is not None:
        new = new.join(existing.select(col_id), col_id, "left_anti")
    # One global ordering: index assignment is small (new ids only) and must be deterministic.
    w = Window.orderBy(col_id)
    return new.withColumn(col_idx, (F.row_number().over(w) + F.lit(start)).cast("long"))


def update_index(spark, cfg: Settings, table: str, ids, *, col_id: str, col_idx: str, retries: int = 8) -> int:
    """Give every id in ``ids`` a stable integer in ``table``; returns how many were new.

    Insert-only MERGE on the id: a concurrent run that added ids first makes this commit fail
    with a Delta concurrency error, and the new rows are recomputed against the winner's table.
    """
    from delta.tables import DeltaTable

    path = cfg.table_path(table)
    for attempt in range(retries):
        existing = read_table(spark, cfg, table) if is_table(spark, cfg, table) else None
        new = build_new_index_rows(existing, ids, col_id=col_id, col_idx=col_idx).cache()
        n_new = new.count()
        try:
            if existing is None:
                new.write.format("delta").mode("errorifexists").save(path)
            elif n_new:
                (DeltaTable.forPath(spark, path).alias("t")
                 .merge(new.alias("s"), f"t.{col_id} = s.{col_id}")
                 .whenNotMatchedInsertAll().execute())
            return n_new
        except Exception as exc:
            text = type(exc).__name__ + str(exc)[:800]
            if not (is_concurrency_error(exc) or "already exists" in text or "PATH_ALREADY_EXISTS" in text) or attempt == retries - 1:
                raise
            log.warning("%s: concurrent update, retrying (%d)", table, attempt + 1)
            time.sleep(0.5 + attempt)
        finally:
            new.unpersist()
    return 0


def run(run_date: dt.date, *, cfg: Settings, spark, source: str | None = None) -> dict:
    """Build the rating matrix for ``run_date``; returns users, items, non-zeros and density."""
    from pyspark.sql import functions as F

    ratings = build_rating_matrix(read_table(spark, cfg, S.RATINGS_RAW, run_date), run_date).cache()
    items = read_table(spark, cfg, S.ITEMS_RAW, run_date).select(S.COL_ITEM)
    texts = as_of(read_table(spark, cfg, S.USER_TEXT_RAW, run_date), run_date).select(S.COL_USER)
    users = ratings.select(S.COL_USER).unionByName(texts)
    new_users = update_index(spark, cfg, S.USER_INDEX, users, col_id=S.COL_USER, col_idx=S.COL_USER_IDX)
    new_items = update_index(spark, cfg, S.ITEM_INDEX, items.unionByName(ratings.select(S.COL_ITEM)),
                             col_id=S.COL_ITEM, col_idx=S.COL_ITEM_IDX)
    uidx = read_table(spark, cfg, S.USER_INDEX)
    iidx = read_table(spark, cfg, S.ITEM_INDEX)
    matrix = ratings.join(F.broadcast(iidx), S.COL_ITEM).join(uidx, S.COL_USER).select(
        S.COL_USER_IDX, S.COL_ITEM_IDX, S.COL_USER, S.COL_ITEM, S.COL_RATING, S.COL_EVENT_TS)
    write_partition(matrix, cfg, S.RATING_MATRIX, run_date)
    stats = ratings.agg(F.countDistinct(S.COL_USER).alias("users"), F.countDistinct(S.COL_ITEM).alias("items"),
                        F.count("*").alias("nnz")).first().asDict()
    stats["density"] = stats["nnz"] / max(1, stats["users"] * stats["items"])
    stats["new_users"], stats["new_items"] = new_users, new_items
    log.info("rating_matrix %s: %d users x %d items, %d non-zeros, density %.5f (%d new users, %d new items)",
             run_date, stats["users"], stats["items"], stats["nnz"], stats["density"], new_users, new_items)
    ratings.unpersist()
    return stats


def main(argv: list[str] | None = None) -> None:
    from jobs.cli import job_entry

    job_entry("rating_matrix", argv)


if __name__ == "__main__":
    main()
