"""Point in time: what a run for logical date D may see (events before D + 1 day, UTC)."""

from __future__ import annotations

import datetime as dt

from lmrec.core import schema as S


def cutoff(run_date: dt.date) -> dt.datetime:
    """Exclusive upper bound of what a run for ``run_date`` may see: D + 1 day, 00:00 UTC."""
    return dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(0), tzinfo=dt.timezone.utc)


def cutoff_iso(run_date: dt.date) -> str:
    """:func:`cutoff` as the ISO-8601 text of the ``data_cutoff`` model tag (``D+1T00:00:00Z``)."""
    return f"{run_date + dt.timedelta(days=1)}T00:00:00Z"


def as_of(df, run_date: dt.date, *, col_ts: str = S.COL_EVENT_TS):
    """Rows of ``df`` with ``col_ts`` before the end of ``run_date`` (UTC)."""
    from pyspark.sql import functions as F

    return df.where(F.col(col_ts) < F.lit(cutoff(run_date).replace(tzinfo=None)).cast("timestamp"))


def known_ids(spark, cfg, run_date: dt.date, ratings=None):
    """(users, items) D knows, one column each (``user_id`` / ``item_id``, not distinct): users with
    ratings or text by the end of D, items in D's catalogue or rated by D. ``ratings``: D's rating
    matrix (read from ``rating_matrix`` when not given). ``rating_matrix`` gives exactly these ids a
    stable index, and train, gate and score read the index restricted to them, so what a date sees
    never depends on which later dates ran first."""
    from lmrec.core.io import read_table

    if ratings is None:
        ratings = read_table(spark, cfg, S.RATING_MATRIX, run_date)
    wrote = as_of(read_table(spark, cfg, S.USER_TEXT_RAW, run_date), run_date).select(S.COL_USER)
    users = ratings.select(S.COL_USER).unionByName(wrote)
    items = read_table(spark, cfg, S.ITEMS_RAW, run_date).select(S.COL_ITEM).unionByName(ratings.select(S.COL_ITEM))
    return users, items


def active_users(spark, cfg, run_date: dt.date):
    """ids of users with ratings or text by the end of D (one column ``user_id``)."""
    return known_ids(spark, cfg, run_date)[0].distinct()


def changed_keys(today, yesterday, key: str) -> set:
    """The values of ``key`` whose rows differ between two snapshots of a table (same columns):
    rows added, removed or changed. Each side is reduced to one digest per key (the row count
    and the sums of two independent hashes of the whole row, Murmur3 and the high half of
    xxHash64: about 63 bits, order-free, no overflow below 2^31 rows per key) and only the
    digests are joined: one aggregation per snapshot instead of shuffling every row of both to
    compare them (``exceptAll``), which at 25M ratings took minutes."""
    from pyspark.sql import functions as F

    def digest(df):
        cols = [F.col(c) for c in df.columns]
        return df.groupBy(key).agg(F.count(F.lit(1)).alias("_n"),
                                   F.sum(F.hash(*cols).cast("long")).alias("_h1"),
                                   F.sum(F.shiftright(F.xxhash64(*cols), 32)).alias("_h2"))

    a, b = digest(today).alias("a"), digest(yesterday).alias("b")
    same = F.lit(True)
    for c in ("_n", "_h1", "_h2"):
        same = same & F.col(f"a.{c}").eqNullSafe(F.col(f"b.{c}"))
    joined = a.join(b, F.col(f"a.{key}") == F.col(f"b.{key}"), "full_outer")
    return {r[0] for r in joined.where(~same).select(F.coalesce(F.col(f"a.{key}"), F.col(f"b.{key}"))).collect()}
