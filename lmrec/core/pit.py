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
    """The values of ``key`` whose rows differ between two snapshots of a table (pandas frames with
    the same columns): rows added, removed or changed. Each side is reduced in NumPy to one digest
    per key, the row count and the sum modulo 2^64 of a 64-bit hash of each whole row (its
    columns' ``pandas.util.hash_array`` combined): order-free, exact up to a hash collision. Run in the
    driver on snapshots read through delta-rs (:func:`lmrec.core.io.read_arrow`); Spark's
    version of the same digests paid seconds of Delta planning per table and a shuffle
    (``benchmarks/snapshot_diff.py``)."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(pd.concat([today[key], yesterday[key]], ignore_index=True))
    n = len(uniques)

    def row_hashes(df) -> np.ndarray:
        # Column by column (pandas.util.hash_array), combined in NumPy: hash_pandas_object took
        # 5-7 s on 25M rows of a frame from Arrow where its four columns hash in 0.6 s; timestamps
        # as their int64 ticks (a tz-aware column went through Python objects).
        h = np.zeros(len(df), dtype=np.uint64)
        for name in df.columns:
            col = df[name]
            if pd.api.types.is_datetime64_any_dtype(col.dtype):
                col = col.dt.tz_convert(None) if col.dt.tz is not None else col
                values = col.to_numpy().view(np.int64)
            else:
                values = col.to_numpy()
            h = (h * np.uint64(0x100000001B3)) ^ pd.util.hash_array(values)  # uint64: wraps modulo 2^64
        return h

    def digest(df, c):
        count = np.bincount(c, minlength=n)
        total = np.zeros(n, dtype=np.uint64)
        if len(c):
            h = row_hashes(df)
            order = np.argsort(c, kind="stable")
            c = c[order]
            starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
            total[c[starts]] = np.add.reduceat(h[order], starts)  # uint64: wraps modulo 2^64
        return count, total

    (ca, ha), (cb, hb) = digest(today, codes[:len(today)]), digest(yesterday[today.columns], codes[len(today):])
    return set(uniques[(ca != cb) | (ha != hb)].tolist())
