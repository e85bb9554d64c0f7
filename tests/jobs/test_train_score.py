"""train → gate → score → validate on a small demo source: real Spark, Delta, MLflow (SQLite)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs import embed_items, embed_users, gate, ingest, rating_matrix, score, train, validate
from lmrec.core import schema as S
from lmrec.data.demo import generate
from lmrec.data.importers import write_source
from lmrec.core.io import read_table, table_version, write_partition
from tests.conftest import D3, make_cfg

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def pipeline(spark, tmp_path_factory):
    home = tmp_path_factory.mktemp("pipe")
    ratings, items, text = generate(100, 120, ratings_per_user=20, days=3, end_date=D3, seed=11)
    items = pd.concat([items, pd.DataFrame([{"item_id": "cold1", "title": "The Haunted Zombie Cellar",
                                             "description": "A horror story of ghost and curse.", "categories": "horror"}])])
    ts = int(pd.Timestamp(D3).timestamp())
    text = pd.concat([text, pd.DataFrame([{"user_id": "textonly", "text": "I love haunted ghost films with a curse.", "timestamp": ts},
                                          {"user_id": "silent", "text": "", "timestamp": ts}])])
    write_source(home / "src", ratings, items, text)
    cfg = make_cfg(home, LMREC_TRAIN_EPOCHS=3, LMREC_OPTIMIZE=1)
    for job in (ingest, rating_matrix, embed_items, embed_users):
        job.run(D3, cfg=cfg, spark=spark, source=str(home / "src"))
    return cfg


def _partition(spark, cfg, table):
    return sorted(tuple(r) for r in read_table(spark, cfg, table, D3).drop(S.COL_RUN_DATE).collect())


def test_no_champion_means_popularity_for_everyone(spark, pipeline):
    cfg = pipeline
    recs, version = score.build_recommendations(spark, cfg, D3, top_k=5)
    assert version is None
    assert {r[0] for r in recs.select(S.COL_MODEL_VERSION).distinct().collect()} == {S.POPULARITY_VERSION}


def test_train_gate_score_validate(spark, pipeline):
    import mlflow

    cfg = pipeline
    res = train.run(D3, cfg=cfg, spark=spark)
    m = res["metrics"]
    assert m["scorer"]["ndcg_at_10"] > m["popularity"]["ndcg_at_10"]
    assert {"popularity", "item_knn", "ease", "text_only", "als_implicit", "als_explicit"} <= set(m)
    client = mlflow.MlflowClient()
    run = client.get_run(res["run_id"])
    assert run.data.params["scorer.dim"] == "64" and run.data.tags["run_date"] == str(D3)
    side = client.get_model_version(S.MODEL_NAME, res["version"]).tags["ease_side_weight"]  # what the refit used
    assert float(side) == pytest.approx(float(run.data.params["scorer.chosen_ease_side_weight"]), rel=1e-5)
    assert {a.path for a in client.list_artifacts(res["run_id"])} >= {"metrics.csv", "ndcg_recall_at_k.png", "training_curve.png"}
    g = gate.run(D3, cfg=cfg, spark=spark)
    assert g["decision"] == "promoted" and "first version" in g["reason"]
    assert g["texts"] == "train's"  # the held-out-free vectors train built, not encoded again
    _gate_takes_trains_vectors_only_while_they_hold(spark, cfg, client.get_model_version(S.MODEL_NAME, res["version"]))

    # A broken candidate (shuffled ratings, item texts given to other items) is not promoted; the champion stays.
    bad = train.run(D3, cfg=cfg, spark=spark, shuffle_ratings=True, with_als=False)
    g2 = gate.run(D3, cfg=cfg, spark=spark)
    assert g2["decision"] == "kept_champion" and g2["champion_version"] == res["version"]
    assert g2["texts"] == "rebuilt"  # train split the shuffled ratings: other held-out pairs than the gate's
    tags = client.get_model_version(S.MODEL_NAME, bad["version"]).tags
    assert tags["gate.decision"] == "kept_champion" and tags["gate.champion_ndcg_at_10"]
    assert tags["text_model"] == read_table(spark, cfg, S.ITEM_EMBEDDINGS, D3).first()[S.COL_MODEL_ID]
    # A candidate is judged once: the gate again changes nothing.
    again = gate.run(D3, cfg=cfg, spark=spark)
    assert again["decision"] == "unchanged" and "kept_champion" in again["reason"]

    # Under LMREC_RETRAIN=auto a champion trained on D's data is kept: nothing new is registered.
    kept = train.run(D3, cfg=cfg, spark=spark)
    assert kept["decision"] == "skipped" and kept["version"] is None and kept["champion_version"] == res["version"]
    assert "0 new ratings" in kept["reason"]
    assert str(client.get_model_version_by_alias(S.MODEL_NAME, S.ALIAS_CANDIDATE).version) == bad["version"]
    # Had the champion been trained on the day before, D's own ratings (after its cutoff, UTC) are new.
    client.set_model_version_tag(S.MODEL_NAME, res["version"], "run_date", str(D3 - dt.timedelta(days=1)))
    try:
        go, why, _ = train._should_train(spark, cfg, D3, "auto", train.text_model_of(spark, cfg, D3))
    finally:
        client.set_model_version_tag(S.MODEL_NAME, res["version"], "run_date", str(D3))
    ts = read_table(spark, cfg, S.RATING_MATRIX, D3).select(S.COL_EVENT_TS).toPandas()[S.COL_EVENT_TS]
    n_new = int((ts >= pd.Timestamp(D3)).sum())
    assert go and 0 < n_new < len(ts) and why.startswith(f"{n_new} ratings after the champion's cutoff")

    # A good one, trained the same way, is promoted (equal within the tolerance).
    good = train.run(D3, cfg=cfg, spark=spark, with_als=False, retrain="always")
    assert good["decision"] == "trained" and good["reason"] == "LMREC_RETRAIN=always"
    assert gate.run(D3, cfg=cfg, spark=spark)["decision"] == "promoted"

    # Scoring uses the champion; every row records it; checks pass and D is published.
    s = score.run(D3, cfg=cfg, spark=spark, top_k=5)
    assert s["model_version"] == good["version"]
    v = validate.run(D3, cfg=cfg, spark=spark, top_k=5)
    assert all(n == 0 for n in v["checks"].values())
    recs = read_table(spark, cfg, S.RECOMMENDATIONS, D3).toPandas()
    per_user = recs.groupby(S.COL_USER).size()
    assert per_user.max() == 5
    seen = read_table(spark, cfg, S.RATING_MATRIX, D3).select(S.COL_USER, S.COL_ITEM).toPandas()
    assert recs.merge(seen, on=[S.COL_USER, S.COL_ITEM]).empty
    by_user = {u: g for u, g in recs.groupby(S.COL_USER)}
    assert (by_user["textonly"][S.COL_MODEL_VERSION] == good["version"]).all()
    assert by_user["textonly"][S.COL_BECAUSE].isna().all()  # text-only user: no history to explain by
    assert (by_user["silent"][S.COL_MODEL_VERSION] == S.POPULARITY_VERSION).all()
    rated = recs[recs[S.COL_MODEL_VERSION] == good["version"]]
    assert rated[rated[S.COL_USER] != "textonly"][S.COL_BECAUSE].notna().all()

    # Same D again: identical partition.
    before = _partition(spark, cfg, S.RECOMMENDATIONS)
    score.run(D3, cfg=cfg, spark=spark, top_k=5)
    validate.run(D3, cfg=cfg, spark=spark, top_k=5)
    assert _partition(spark, cfg, S.RECOMMENDATIONS) == before


def test_cold_item_can_be_recommended(spark, pipeline):
    recs, _ = score.build_recommendations(spark, pipeline, D3, top_k=1000)
    assert recs.where(f"{S.COL_ITEM} = 'cold1'").count() > 0


def test_pyfunc_matches_in_memory_model(spark, pipeline):
    import mlflow.pyfunc

    from lmrec.model.training_data import load_training_data
    from lmrec.model.scorer import histories, make_score_fn

    from lmrec.model.registry import setup_mlflow

    cfg = pipeline
    setup_mlflow(cfg)  # this module's registry (never a ./mlflow.db), whatever ran before
    model = mlflow.pyfunc.load_model(f"models:/{S.MODEL_NAME}@{S.ALIAS_CHAMPION}")
    data = load_training_data(spark, cfg, D3)
    params = model.unwrap_python_model().params
    H, X = histories(data.ratings, data.n_users, data.n_items, rating_max=data.rating_max, recency_weight=params.recency_weight)
    ref = make_score_fn(params, H, X, data.item_text, data.user_text, data.n_items)
    users = ["u000001", "u000002", "textonly"]
    items = ["i000003", "cold1", "cold1"]
    out = model.predict(pd.DataFrame({S.COL_USER: users, S.COL_ITEM: items}))
    assert list(out.columns) == [S.COL_SCORE, S.COL_RATING] and out.notna().all().all()
    upos = {u: i for i, u in enumerate(data.user_ids)}
    ipos = {t: i for i, t in enumerate(data.item_ids)}
    expect = [ref(np.array([upos[u]]))[0, ipos[i]] for u, i in zip(users, items)]
    np.testing.assert_allclose(out[S.COL_SCORE].to_numpy(), expect, rtol=1e-4, atol=1e-5)
    # The rating output is the rating model's (checked against the formula by hand in
    # tests/model/test_rating.py), on the source's scale.
    rp = model.unwrap_python_model().rating_params
    rated = rp.predict([upos[u] for u in users], [ipos[i] for i in items], X, data.item_text, data.user_text)
    np.testing.assert_allclose(out[S.COL_RATING].to_numpy(), rated, rtol=1e-6)
    assert ((rated >= rp.r_min) & (rated <= data.rating_max)).all()


LOAD_OUTSIDE = """
import json, sys
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
import lmrec
out = model.predict(pd.DataFrame(json.loads(sys.argv[2])))
print(json.dumps({"lmrec": lmrec.__file__, "score": out["score"].tolist(), "rating": out["rating"].tolist()}))
"""


def test_registered_model_loads_outside_the_repository(spark, pipeline, tmp_path):
    """A fresh process that cannot import this checkout's lmrec (no site .pth files, so no editable
    install; cwd elsewhere) loads the champion from the registry and predicts what this process does."""
    import json
    import subprocess
    import sys
    import sysconfig

    import mlflow.pyfunc

    uri = f"models:/{S.MODEL_NAME}@{S.ALIAS_CHAMPION}"
    rows = {S.COL_USER: ["u000001", "textonly"], S.COL_ITEM: ["i000003", "cold1"]}
    here = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame(rows))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": sysconfig.get_paths()["purelib"],
           "MLFLOW_TRACKING_URI": pipeline.mlflow_tracking_uri, "HOME": str(tmp_path)}
    blocked = subprocess.run([sys.executable, "-S", "-c", "import lmrec"], env=env, cwd=tmp_path, capture_output=True)
    assert blocked.returncode != 0  # the check below is meaningful: lmrec is not importable there
    proc = subprocess.run([sys.executable, "-S", "-c", LOAD_OUTSIDE, uri, json.dumps(rows)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "/code/lmrec/" in out["lmrec"]  # the package that travelled with the model
    np.testing.assert_allclose(out["score"], here[S.COL_SCORE], rtol=1e-6)
    np.testing.assert_allclose(out["rating"], here[S.COL_RATING], rtol=1e-6)
    meta = mlflow.models.get_model_info(uri)
    assert meta.saved_input_example_info is not None and meta.signature is not None


def test_failed_validation_publishes_nothing(spark, pipeline):
    import pyarrow as pa
    import pyarrow.compute as pc

    from lmrec.core.io import read_arrow

    cfg = pipeline
    before_version = table_version(spark, cfg, S.RECOMMENDATIONS)
    before = _partition(spark, cfg, S.RECOMMENDATIONS)
    staged = read_arrow(spark, cfg, S.RECOMMENDATIONS_STAGING, D3, list(validate.PUBLISHED))[0]
    rank = staged.column(S.COL_RANK)
    broken = staged.set_column(staged.schema.get_field_index(S.COL_RANK), S.COL_RANK,
                               pc.if_else(pc.equal(rank, 2), pa.scalar(7, rank.type), rank))
    with pytest.raises(validate.ValidationError, match=r"ranks_not_contiguous: \d+ user\(s\)"):
        validate.publish(broken, spark, cfg, D3, top_k=5)
    assert table_version(spark, cfg, S.RECOMMENDATIONS) == before_version
    assert _partition(spark, cfg, S.RECOMMENDATIONS) == before



def test_an_unknown_scoring_place_stops_the_score_job_before_it_reads(tmp_path):
    """LMREC_SCORE_WHERE is checked when the job starts, not after the night's data is read."""
    from lmrec.core.errors import ParameterError

    cfg = make_cfg(tmp_path, LMREC_SCORE_WHERE="gpu")
    with pytest.raises(ParameterError, match="LMREC_SCORE_WHERE must be one of auto, driver, tasks, got 'gpu'"):
        score.build_recommendations(None, cfg, D3, top_k=10)  # no Spark session: nothing is read


def _gate_takes_trains_vectors_only_while_they_hold(spark, cfg, cand):
    from lmrec.model.harness import protocol_split, scorer_config
    from lmrec.model.training_data import load_training_data, without_held_out_texts

    data = load_training_data(spark, cfg, D3)
    _, val, test = protocol_split(data.ratings, scorer_config(cfg))
    held = pd.concat([val, test])
    got, source = gate._held_out_free(spark, cfg, D3, data, held, cand)
    want = without_held_out_texts(spark, cfg, D3, data, held)
    assert source == "train's"
    np.testing.assert_allclose(got.user_text, want.user_text, atol=1e-5)
    np.testing.assert_allclose(got.item_text, want.item_text, atol=1e-5)
    # Other held-out pairs, or a table written since train (a rerun of a job for D): built again.
    assert gate._held_out_free(spark, cfg, D3, data, held.iloc[1:], cand)[1] == "rebuilt"
    # Another date's partitions written since (a backfill beside this run): D's are the same, kept.
    for table in (S.RATING_MATRIX, S.USER_EMBEDDINGS, S.ITEM_EMBEDDINGS, S.USER_TEXT_RAW, S.ITEMS_RAW):
        write_partition(read_table(spark, cfg, table, D3).drop(S.COL_RUN_DATE), cfg, table, dt.date(2024, 6, 1))
    beside = load_training_data(spark, cfg, D3)
    assert beside.versions != data.versions
    assert gate._held_out_free(spark, cfg, D3, beside, held, cand)[1] == "train's"
    embed_users.run(D3, cfg=cfg, spark=spark)
    again = load_training_data(spark, cfg, D3)
    assert gate._held_out_free(spark, cfg, D3, again, held, cand)[1] == "rebuilt"
