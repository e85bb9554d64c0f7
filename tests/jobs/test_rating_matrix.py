"""rating_matrix: point in time, latest rating wins, stable indices, idempotent reruns."""

from __future__ import annotations

import pytest

from jobs import ingest, rating_matrix
from lmrec.core import schema as S
from lmrec.core.io import read_table
from tests.conftest import D1, D2, D3, write_csv

pytestmark = pytest.mark.spark


def _rows(spark, cfg, table, run_date=None):
    df = read_table(spark, cfg, table, run_date)
    return sorted(tuple(r) for r in df.collect())


def _pipeline(spark, cfg, source, d):
    ingest.run(d, cfg=cfg, spark=spark, source=str(source))
    return rating_matrix.run(d, cfg=cfg, spark=spark)


def test_build_rating_matrix_point_in_time_latest_wins(spark):
    import datetime as dt

    ts = lambda s: dt.datetime.fromisoformat(s)  # noqa: E731
    df = spark.createDataFrame([
        ("u1", "a", 1.0, ts("2024-06-28 08:00:00")),
        ("u1", "a", 4.0, ts("2024-06-28 23:59:59")),  # latest by end of D1
        ("u1", "a", 2.0, ts("2024-06-29 00:00:00")),  # D1 + 1 day: not visible to D1
        ("u2", "b", 3.0, ts("2024-06-29 12:00:00")),
        ("u3", "c", 2.5, ts("2024-06-28 10:00:00")),
        ("u3", "c", 3.5, ts("2024-06-28 10:00:00")),  # the same time: the higher rating, whatever the order
        ("u3", "c", 1.0, ts("2024-06-28 09:00:00")),
    ], [S.COL_USER, S.COL_ITEM, S.COL_RATING, S.COL_EVENT_TS])
    d1 = {(r[0], r[1]): (r[2], r[3]) for r in rating_matrix.build_rating_matrix(df, D1).collect()}
    d2 = {(r[0], r[1]): r[2] for r in rating_matrix.build_rating_matrix(df, D2).collect()}
    assert d1 == {("u1", "a"): (4.0, ts("2024-06-28 23:59:59")), ("u3", "c"): (3.5, ts("2024-06-28 10:00:00"))}
    assert d2 == {("u1", "a"): 2.0, ("u2", "b"): 3.0, ("u3", "c"): 3.5}


def test_missing_column_is_named(spark):
    df = spark.createDataFrame([("u", "i")], [S.COL_USER, S.COL_ITEM])
    with pytest.raises(ValueError, match="'rating'"):
        rating_matrix.build_rating_matrix(df, D1)


def test_nightly_runs_idempotent_and_stable(spark, cfg, demo_source):
    s1 = _pipeline(spark, cfg, demo_source, D1)
    m1 = _rows(spark, cfg, S.RATING_MATRIX, D1)
    uidx1 = dict(_rows(spark, cfg, S.USER_INDEX))
    # Point in time: D1 sees only day-one events; D3 sees all.
    s3 = _pipeline(spark, cfg, demo_source, D3)
    assert 0 < s1["nnz"] < s3["nnz"]
    assert s3["nnz"] == read_table(spark, cfg, S.RATINGS_RAW, D3).count()
    uidx3 = dict(_rows(spark, cfg, S.USER_INDEX))
    assert all(uidx3[u] == i for u, i in uidx1.items())  # never renumbered
    assert sorted(uidx3.values()) == list(range(len(uidx3)))  # dense, no duplicates
    m3 = _rows(spark, cfg, S.RATING_MATRIX, D3)
    raw = {name: _rows(spark, cfg, name) for name in (S.RATINGS_RAW, S.ITEMS_RAW, S.USER_TEXT_RAW, S.ITEM_INDEX)}
    # D1 again after D3 (a backfill of an earlier date): D1 as it was, D3 untouched, nothing renumbered.
    _pipeline(spark, cfg, demo_source, D1)
    assert _rows(spark, cfg, S.RATING_MATRIX, D1) == m1
    assert _rows(spark, cfg, S.RATING_MATRIX, D3) == m3
    assert dict(_rows(spark, cfg, S.USER_INDEX)) == uidx3
    assert {name: _rows(spark, cfg, name) for name in raw} == raw


def test_new_ids_get_next_integers(spark, cfg, tmp_path):
    src = tmp_path / "s"
    write_csv(src / "items.csv", "item_id,title\nb,B\na,A\n")
    write_csv(src / "ratings.csv", "user_id,item_id,rating,timestamp\nz,a,1,1719532800\n")
    _pipeline(spark, cfg, src, D1)
    write_csv(src / "items.csv", "item_id,title\nb,B\na,A\nc,C\n0,Zero\n")
    _pipeline(spark, cfg, src, D2)
    assert dict(_rows(spark, cfg, S.ITEM_INDEX)) == {"a": 0, "b": 1, "0": 2, "c": 3}


def test_a_date_reads_the_ids_it_knew_whatever_ran_after_it(spark, cfg, demo_source):
    """A backfill runs later dates' rating_matrix before an earlier date's train: the earlier date
    still reads the indices as they were for it (same shapes, ids and vectors), so the seeded
    training it runs chooses the same epochs and blend as when it ran alone."""
    import numpy as np

    from jobs import embed_items, embed_users
    from lmrec.model.training_data import load_training_data

    _pipeline(spark, cfg, demo_source, D1)
    for job in (embed_items, embed_users):
        job.run(D1, cfg=cfg, spark=spark)
    alone = load_training_data(spark, cfg, D1)
    s3 = _pipeline(spark, cfg, demo_source, D3)
    assert s3["new_users"] > 0 and s3["new_items"] >= 0 and read_table(spark, cfg, S.USER_INDEX).count() > alone.n_users
    after = load_training_data(spark, cfg, D1)
    assert (after.n_users, after.n_items) == (alone.n_users, alone.n_items)
    assert list(after.user_ids) == list(alone.user_ids) and list(after.item_ids) == list(alone.item_ids)
    cols = [S.COL_USER_IDX, S.COL_ITEM_IDX, S.COL_RATING]
    assert after.ratings.sort_values(cols)[cols].values.tolist() == alone.ratings.sort_values(cols)[cols].values.tolist()
    assert np.array_equal(after.item_text, alone.item_text) and np.array_equal(after.user_text, alone.user_text)
    # The Arrow read (delta-rs, no JVM) is what Spark reads: D1's ratings, the indices joined to
    # the ids D1 knows (pit.known_ids), the vectors at their indices.
    from lmrec.core.pit import known_ids

    ref = read_table(spark, cfg, S.RATING_MATRIX, D1).select(*cols, S.COL_EVENT_TS).toPandas()
    ref = ref.sort_values([S.COL_USER_IDX, S.COL_ITEM_IDX]).reset_index(drop=True)
    assert after.ratings[cols + [S.COL_EVENT_TS]].equals(ref[cols + [S.COL_EVENT_TS]])
    assert str(after.ratings[S.COL_EVENT_TS].dtype) == "datetime64[ns]"
    users, items = known_ids(spark, cfg, D1)
    for table, known, col, col_idx, ids in ((S.USER_INDEX, users, S.COL_USER, S.COL_USER_IDX, after.user_ids),
                                            (S.ITEM_INDEX, items, S.COL_ITEM, S.COL_ITEM_IDX, after.item_ids)):
        rows = read_table(spark, cfg, table).join(known.distinct(), col).collect()
        assert sorted((r[col_idx], r[col]) for r in rows) == [(i, t) for i, t in enumerate(ids) if t != ""]
    for table, col, vectors, ids in ((S.ITEM_EMBEDDINGS, S.COL_ITEM, after.item_text, after.item_ids),
                                     (S.USER_EMBEDDINGS, S.COL_USER, after.user_text, after.user_ids)):
        stored = {r[col]: r[S.COL_VECTOR] for r in read_table(spark, cfg, table, D1).collect()}
        pos = {t: i for i, t in enumerate(ids)}
        assert stored and all(np.array_equal(vectors[pos[t]], np.asarray(v, np.float32)) for t, v in stored.items() if t in pos)
        assert all(not vectors[i].any() for t, i in pos.items() if t not in stored)
