"""embed_items / embed_users: real Spark, Delta and MiniLM; incremental and point in time."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from jobs import embed_items, embed_users, ingest, rating_matrix
from lmrec.core import schema as S
from lmrec.core.io import read_table
from lmrec.text.builders import build_item_text, build_user_text
from tests.conftest import D1, D2, make_cfg, write_csv

pytestmark = pytest.mark.spark

ITEMS = ("item_id,title,description,categories\n"
         "i1,Toy Story (1995),toys come alive,Animation|Comedy\n"
         "i2,Toy Story 2 (1999),the toys again,Animation|Comedy\n"
         "i3,Heat (1995),a heist in LA,Crime\n"
         "i4,,,\n")
RATINGS = "user_id,item_id,rating,timestamp\nu1,i1,5,1719532800\nu1,i3,2,1719532800\nu2,i3,4,1719532800\n"
TEXT = ("user_id,item_id,text,summary,timestamp\n"
        "u1,i1,loved the toys,Great fun,1719532800\n"
        "u3,i4,sturdy strings,Solid strings,1719532800\n"
        "u3,i4,later words,Later,1719705600\n")  # 2024-06-30: after D2


def _vecs(spark, cfg, table, d, col):
    return {r[col]: np.array(r[S.COL_VECTOR]) for r in read_table(spark, cfg, table, d).collect()}


@pytest.fixture(scope="module")
def setup(spark, tmp_path_factory):
    home = tmp_path_factory.mktemp("emb")
    src = home / "src"
    write_csv(src / "items.csv", ITEMS)
    write_csv(src / "ratings.csv", RATINGS)
    write_csv(src / "user_text.csv", TEXT)
    cfg = make_cfg(home)
    for d in (D1,):
        ingest.run(d, cfg=cfg, spark=spark, source=str(src))
        rating_matrix.run(d, cfg=cfg, spark=spark)
    return cfg, src


def test_item_text_template_and_point_in_time(spark, setup):
    cfg, _ = setup
    items = read_table(spark, cfg, S.ITEMS_RAW, D1)
    texts = read_table(spark, cfg, S.USER_TEXT_RAW, D1)
    got = {r[0]: r[1] for r in build_item_text(items, texts, D1).collect()}
    assert got["i1"] == "Toy Story (1995). toys come alive. Categories: Animation, Comedy"
    assert got["i4"] == "Reviewed as: Solid strings"  # no own text: what reviews said by D, not later
    later = {r[0]: r[1] for r in build_item_text(items, texts, dt.date(2024, 6, 30)).collect()}
    assert later["i4"] == "Reviewed as: Later; Solid strings"


def test_user_text_point_in_time(spark, setup):
    cfg, _ = setup
    args = (read_table(spark, cfg, S.USER_TEXT_RAW, D1), read_table(spark, cfg, S.RATING_MATRIX, D1),
            read_table(spark, cfg, S.ITEMS_RAW, D1))
    d1 = {r[0]: r[1] for r in build_user_text(*args, D1).collect()}
    assert d1["u1"] == "loved the toys. Liked: Toy Story (1995); Heat (1995)"
    assert d1["u3"] == "sturdy strings"  # "later words" is dated after D1
    assert d1["u2"] == "Liked: Heat (1995)"  # ratings, no words of their own
    without_titles = {r[0]: r[1] for r in build_user_text(*args, D1, top_titles=0).collect()}
    assert without_titles == {"u1": "loved the toys", "u3": "sturdy strings"}  # u2 has no text then


def test_embed_matches_encoder_and_is_incremental(spark, setup):
    from lmrec.text.encoder import TextEncoder

    cfg, src = setup
    s1 = embed_items.run(D1, cfg=cfg, spark=spark)
    assert (s1["computed"], s1["reused"]) == (4, 0)
    v1 = _vecs(spark, cfg, S.ITEM_EMBEDDINGS, D1, S.COL_ITEM)
    ref = TextEncoder(device="cpu").encode(["Toy Story (1995). toys come alive. Categories: Animation, Comedy"])[0]
    assert float(v1["i1"] @ ref) > 0.99999
    # Rerun: nothing recomputed, identical vectors.
    assert embed_items.run(D1, cfg=cfg, spark=spark)["computed"] == 0
    v1b = _vecs(spark, cfg, S.ITEM_EMBEDDINGS, D1, S.COL_ITEM)
    assert all(np.array_equal(v1[k], v1b[k]) for k in v1)
    # Next night, one item's text changed: exactly one re-embedded.
    write_csv(src / "items.csv", ITEMS.replace("a heist in LA", "a heist in Los Angeles"))
    ingest.run(D2, cfg=cfg, spark=spark, source=str(src))
    s2 = embed_items.run(D2, cfg=cfg, spark=spark)
    assert (s2["computed"], s2["reused"]) == (1, 3)
    # A different model id (int8) re-embeds everything and never mixes vector spaces.
    qcfg = make_cfg(cfg.home, LMREC_QUANTIZE=1)
    s3 = embed_items.run(D2, cfg=qcfg, spark=spark)
    assert s3["computed"] == 4 and s3["model_id"].endswith("/int8")
    assert {r[0] for r in read_table(spark, cfg, S.ITEM_EMBEDDINGS, D2).select(S.COL_MODEL_ID).distinct().collect()} == {s3["model_id"]}


def test_user_vector_ignores_later_text(spark, setup):
    cfg, _ = setup
    embed_users.run(D1, cfg=cfg, spark=spark)
    rating_matrix.run(D1, cfg=cfg, spark=spark)
    u = _vecs(spark, cfg, S.USER_EMBEDDINGS, D1, S.COL_USER)
    assert set(u) == {"u1", "u3"}  # u2 has ratings but no text of its own (titles are off by default)
    from lmrec.text.encoder import TextEncoder
    ref = TextEncoder(device="cpu").encode(["sturdy strings"])[0]
    assert float(u["u3"] @ ref) > 0.99999


def test_held_out_pairs_texts_reach_no_vector(spark, setup):
    """train and gate select and judge on vectors built without the texts about held-out pairs:
    none held out gives D's stored vectors (reused, not re-encoded); holding out u1's rating of i1
    drops u1's review of it (u1 has no other text), and leaves every other vector as stored."""
    import pandas as pd

    from lmrec.model.training_data import load_training_data, without_held_out_texts

    cfg, _ = setup
    for job in (embed_items, embed_users):
        job.run(D1, cfg=cfg, spark=spark)
    data = load_training_data(spark, cfg, D1)
    none = without_held_out_texts(spark, cfg, D1, data, data.ratings.iloc[:0])
    assert np.array_equal(none.item_text, data.item_text) and np.array_equal(none.user_text, data.user_text)
    u1, i1 = list(data.user_ids).index("u1"), list(data.item_ids).index("i1")
    held = pd.DataFrame({S.COL_USER_IDX: [u1], S.COL_ITEM_IDX: [i1]})
    out = without_held_out_texts(spark, cfg, D1, data, held)
    assert np.abs(data.user_text[u1]).sum() > 0 and not out.user_text[u1].any()
    others = np.arange(data.n_users) != u1
    assert np.array_equal(out.user_text[others], data.user_text[others])
    assert np.array_equal(out.item_text, data.item_text)  # i1 is known by its own title
    assert out.ratings is data.ratings and out.user_ids is data.user_ids


def test_driver_and_tasks_encode_alike(spark, setup):
    """A few texts to encode are encoded in the driver (LMREC_EMBED_IN_DRIVER_MAX), more in Spark
    tasks: the same vectors either way, and the stats say where."""
    cfg, _ = setup
    in_tasks = make_cfg(cfg.home, LMREC_EMBED_IN_DRIVER_MAX=0)
    a = embed_items.run(D1, cfg=in_tasks, spark=spark, full_refresh=True)
    va = _vecs(spark, cfg, S.ITEM_EMBEDDINGS, D1, S.COL_ITEM)
    b = embed_items.run(D1, cfg=cfg, spark=spark, full_refresh=True)
    vb = _vecs(spark, cfg, S.ITEM_EMBEDDINGS, D1, S.COL_ITEM)
    assert (a["computed"], a["where"], b["computed"], b["where"]) == (4, "tasks", 4, "driver")
    assert set(va) == set(vb) and all(np.allclose(va[k], vb[k], atol=1e-5) for k in va)
