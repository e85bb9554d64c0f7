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
