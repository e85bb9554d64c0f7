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


def wrote_by(text, run_date: dt.date):
    """The distinct users of ``text`` (an Arrow table of user_id, event_ts: a ``user_text_raw``
    partition read into the driver) who wrote by the end of D."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ts = text.column(S.COL_EVENT_TS)
    bound = cutoff(run_date) if ts.type.tz else cutoff(run_date).replace(tzinfo=None)
    return pc.unique(text.column(S.COL_USER).filter(pc.less(ts, pa.scalar(bound, type=ts.type))))


def known_ids(spark, cfg, run_date: dt.date, ratings=None):
    """(users, items) D knows, one column each (``user_id`` / ``item_id``, not distinct): users with
    ratings or text by the end of D, items in D's catalogue or rated by D. ``ratings``: D's rating
    matrix (read from ``rating_matrix`` when not given), or any frame with D's rated pairs (D's raw
    ratings as of D: the same ids). ``rating_matrix`` gives exactly these ids a
    stable index, and train, gate and score read the index restricted to them, so what a date sees
    never depends on which later dates ran first."""
    from lmrec.core.io import read_table

    if ratings is None:
        ratings = read_table(spark, cfg, S.RATING_MATRIX, run_date)
    wrote = as_of(read_table(spark, cfg, S.USER_TEXT_RAW, run_date), run_date).select(S.COL_USER)
    users = ratings.select(S.COL_USER).unionByName(wrote)
    items = read_table(spark, cfg, S.ITEMS_RAW, run_date).select(S.COL_ITEM).unionByName(ratings.select(S.COL_ITEM))
    return users, items


def active_users(rated, text, run_date: dt.date) -> set:
    """ids of users with ratings or text by the end of D, in the driver: ``rated``, the user_id
    column of D's rating matrix; ``text``, D's ``user_text_raw`` partition (see :func:`wrote_by`)."""
    import pyarrow.compute as pc

    return set(pc.unique(rated).to_pylist()) | set(wrote_by(text, run_date).to_pylist())


def changed_keys(today, yesterday, key: str) -> set:
    """The values of ``key`` whose rows differ between two snapshots of a table (pandas frames with
    the same columns): rows added, removed or changed. Each side is reduced in NumPy to one digest
    per key: the row count and the sums of three bit fields of a 64-bit hash of each whole row (its
    columns' ``pandas.util.hash_array`` combined), exact in float64 ``np.bincount`` (22 bits x fewer
    than 2^31 rows a key): order-free, exact up to a hash collision. A key of non-negative integers
    (the stable ids) is its own bin; other keys are factorised first. Run in the driver on snapshots
    read through delta-rs (:func:`lmrec.core.io.read_arrow`); Spark's version of the same digests
    paid seconds of Delta planning per table and a shuffle (``benchmarks/snapshot_diff.py``)."""
    import numpy as np
    import pandas as pd

    a, b = today[key].to_numpy(), yesterday[key].to_numpy()
    dense = (a.dtype.kind in "iu" and b.dtype.kind in "iu" and min(a.min(initial=0), b.min(initial=0)) >= 0
             and max(a.max(initial=0), b.max(initial=0)) < 4 * (len(a) + len(b)) + 1024)  # ids, not arbitrary integers
    if dense:
        ca, cb = a.astype(np.int64, copy=False), b.astype(np.int64, copy=False)
        n, uniques = int(max(ca.max(initial=-1), cb.max(initial=-1))) + 1, None
    else:
        codes, uniques = pd.factorize(pd.concat([today[key], yesterday[key]], ignore_index=True))
        ca, cb, n = codes[:len(a)], codes[len(a):], len(uniques)

    def row_hashes(df) -> np.ndarray:
        # Column by column (pandas.util.hash_array), combined in NumPy: hash_pandas_object took
        # 5-7 s on 25M rows of a frame from Arrow where its four columns hash in 0.6 s; timestamps
        # as int64 nanoseconds whatever their unit and zone (a tz-aware column went through Python objects).
        h = np.zeros(len(df), dtype=np.uint64)
        for name in df.columns:
            col = df[name]
            if pd.api.types.is_datetime64_any_dtype(col.dtype):
                col = col.dt.tz_convert(None) if col.dt.tz is not None else col
                values = col.to_numpy().astype("datetime64[ns]").view(np.int64)
            else:
                values = col.to_numpy()
            h = (h * np.uint64(0x100000001B3)) ^ pd.util.hash_array(values)  # uint64: wraps modulo 2^64
        return h

    def digest(df, c) -> np.ndarray:
        out = np.zeros((4, n), dtype=np.float64)
        out[0] = np.bincount(c, minlength=n)
        if len(c):
            h = row_hashes(df)
            for row, (shift, bits) in enumerate(((0, 22), (22, 21), (43, 21)), start=1):
                field = ((h >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.float64)
                out[row] = np.bincount(c, weights=field, minlength=n)
        return out

    differs = (digest(today, ca) != digest(yesterday[today.columns], cb)).any(axis=0)
    found = np.flatnonzero(differs)
    return set((found if uniques is None else uniques[found]).tolist())
