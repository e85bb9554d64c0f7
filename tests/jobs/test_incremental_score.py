"""The incremental night: D keeps D-1's lists of users whose inputs did not change and gets exactly
the full scoring's rows (real Spark, Delta, MLflow; a demo with a seeded change on D)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs import embed_items, embed_users, gate, ingest, rating_matrix, score, train, validate
from lmrec.core import schema as S
from lmrec.data.demo import generate
from lmrec.data.importers import write_source
from tests.conftest import D3, make_cfg

pytestmark = pytest.mark.spark
D4 = D3 + dt.timedelta(days=1)


def _rows(df) -> pd.DataFrame:
    return df.toPandas().sort_values([S.COL_USER, S.COL_RANK]).reset_index(drop=True)


def test_next_night_keeps_unchanged_users_lists_and_equals_a_full_scoring(spark, tmp_path):
    rng = np.random.default_rng(5)
    ratings, items, text = generate(120, 150, ratings_per_user=20, days=3, end_date=D3, seed=21)
    src = tmp_path / "src"
    # D's night: every job, the model trained, promoted and published.
    write_source(src, ratings, items, text)
    cfg = make_cfg(tmp_path, LMREC_TRAIN_EPOCHS=3, LMREC_TRAIN_ALS=0, LMREC_OPTIMIZE=0)
    for job in (ingest, rating_matrix, embed_items, embed_users, train, gate, score, validate):
        job.run(D3, cfg=cfg, spark=spark, source=str(src))

    # D+1: about 1% new ratings (old and new users, on old and new items), new and changed items, an
    # unlisted item, new user text; no training, so the same model scores D+1.
    ts = int(pd.Timestamp(D4).timestamp()) + 3600
    new_items = pd.DataFrame([{"item_id": f"n{j}", "title": f"Brand new haunted story {j}",
                               "description": "Ghosts and a curse.", "categories": "horror"} for j in range(3)])
    items = items.copy()
    items.loc[items.index[7], "title"] = "A completely different title"
    items = pd.concat([items.drop(items.index[11]), new_items], ignore_index=True)
    who = rng.choice(ratings["user_id"].unique(), 6, replace=False)
    fresh = pd.DataFrame({"user_id": list(who) + ["newcomer", "newcomer"],
                          "item_id": list(rng.choice(items["item_id"], 6)) + ["n0", "i000003"],
                          "rating": rng.integers(1, 6, 8).astype(float), "timestamp": ts})
    text = pd.concat([text, pd.DataFrame([{"user_id": who[0], "text": "I now love ghost stories.", "timestamp": ts}])])
    write_source(src, pd.concat([ratings, fresh], ignore_index=True), items, text)
    for job in (ingest, rating_matrix, embed_items, embed_users):
        job.run(D4, cfg=cfg, spark=spark, source=str(src))

    version, _ = score.model_of(spark, cfg, D4)
    assert version is not None
    inc, v1 = score.build_recommendations(spark, cfg, D4, top_k=cfg.top_k)
    full, v2 = score.build_recommendations(spark, cfg, D4, top_k=cfg.top_k, incremental=False)  # --full-refresh
    got, want = _rows(inc), _rows(full)
    assert v1 == v2 == version
    pd.testing.assert_frame_equal(got.drop(columns=[S.COL_SCORE]), want.drop(columns=[S.COL_SCORE]))
    np.testing.assert_allclose(got[S.COL_SCORE], want[S.COL_SCORE], rtol=1e-5, atol=1e-6)
    assert {"newcomer", *who} <= set(got[S.COL_USER])

    # Most users kept their lists; the changed ones were scored again; another model scores everyone.
    from lmrec.core.io import read_table
    from lmrec.model.baselines import interactions
    from lmrec.model.training_data import load_training_data

    data = load_training_data(spark, cfg, D4)
    users = np.asarray(data.user_ids)
    X = interactions(data.ratings, data.n_users, data.n_items)
    catalogue = set(read_table(spark, cfg, S.ITEMS_RAW, D4).select(S.COL_ITEM).toPandas()[S.COL_ITEM])
    candidate = np.isin(data.item_ids, list(catalogue))
    kept, changed, *_ = score.since_yesterday(spark, cfg, D4, version, cfg.top_k, data, X, candidate, users)
    assert len(users) // 4 < kept.sum() < len(users)  # 47 of 121 here: the demo has only 150 items
    assert not kept[np.isin(users, [*who, "newcomer"])].any()
    pos = {t: i for i, t in enumerate(data.item_ids)}
    assert {pos["n0"], pos["n1"], pos["n2"], pos[items["item_id"].iloc[7]]} <= set(changed.tolist())
    assert score.since_yesterday(spark, cfg, D4, "another", cfg.top_k, data, X, candidate, users) is None


def test_changed_keys_finds_exactly_the_keys_an_exceptall_diff_finds(spark):
    from lmrec.core.pit import changed_keys

    rng = np.random.default_rng(3)
    n = 400
    b = pd.DataFrame({"user_id": [f"u{i % 60}" for i in range(n)], "item_id": [f"i{i}" for i in range(n)],
                      "rating": rng.integers(1, 6, n).astype(float),
                      "event_ts": pd.Timestamp("2024-06-01") + pd.to_timedelta(rng.integers(0, 10**6, n), unit="s")})
    a = b.copy()
    a.loc[3, "rating"] = a.loc[3, "rating"] % 5 + 1                       # a changed rating
    a.loc[70, "event_ts"] += pd.Timedelta(seconds=1)                      # the same rating, rated again later
    a = a.drop(index=[150])                                               # a removed row
    a = pd.concat([a, pd.DataFrame([{"user_id": "new", "item_id": "i1", "rating": 4.0, "event_ts": a.event_ts[0]},
                                    {"user_id": "u5", "item_id": "i9999", "rating": 2.0, "event_ts": a.event_ts[0]}])])
    b = b[b.user_id != "u59"]                                             # a user only today
    a = a[a.user_id != "u58"]                                             # a user only yesterday
    da, db = spark.createDataFrame(a), spark.createDataFrame(b)
    want = {r[0] for r in da.exceptAll(db).unionByName(db.exceptAll(da)).select("user_id").distinct().collect()}
    assert want == {a.user_id[3], a.user_id[70], b.user_id[150], "new", "u5", "u59", "u58"}
    assert changed_keys(a, b, "user_id") == want
    assert changed_keys(a, a, "user_id") == set()
    assert changed_keys(a.sample(frac=1.0, random_state=1), a, "user_id") == set()  # row order does not matter
    # Two rows swapping their ratings within a user still change that user.
    c = b.copy()
    c.loc[[0, 60], "rating"] = [c.rating[0] + 0.5, c.rating[60] - 0.5]   # rows 0 and 60 are both u0's
    assert changed_keys(c, b, "user_id") == {"u0"}
    assert changed_keys(a.iloc[:0], b, "user_id") == set(b.user_id)  # a snapshot emptied
    # By integer ids (the rating matrix's user_idx), each id its own bin; and integers too far apart
    # to be bins, factorised: the same answer.
    ids = {u: i for i, u in enumerate(sorted(set(a.user_id) | set(b.user_id)))}
    for scale in (1, 10**12):
        ai, bi = (f.assign(user_id=f.user_id.map(ids).astype("int64") * scale) for f in (a, b))
        assert changed_keys(ai, bi, "user_id") == {ids[u] * scale for u in want}
    # The same instants in another unit and zone (D-1 read by delta-rs, D from training data) are equal.
    utc_us = a.assign(event_ts=a.event_ts.dt.tz_localize("UTC").astype("datetime64[us, UTC]"))
    assert changed_keys(a, utc_us, "user_id") == set()
