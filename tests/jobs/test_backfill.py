"""Point-in-time models and reproducible dates: D2, then a backfill of D1, then D2 again, every job
in this process on a small demo (real Spark, Delta, MLflow). D1 is scored by a model trained on
data up to D1 only, the global champion alias never moves back, and rerunning D2 reproduces its
partition row for row."""

from __future__ import annotations

import datetime as dt

import pytest

from jobs import embed_items, embed_users, gate, ingest, rating_matrix, score, train, validate
from lmrec.core import schema as S
from lmrec.core.io import read_table
from lmrec.data.demo import write_demo
from tests.conftest import D1, D2, D3, make_cfg

pytestmark = pytest.mark.spark
NIGHT = (ingest, rating_matrix, embed_items, embed_users, train, gate, score, validate)


def _night(spark, cfg, day, src):
    out = {}
    for job in NIGHT:
        kw = {"top_k": 5} if job in (score, validate) else {}
        out[job.__name__.split(".")[-1]] = job.run(day, cfg=cfg, spark=spark, source=str(src), **kw)
    return out


def _rows(spark, cfg, table, day):
    return sorted(tuple(r) for r in read_table(spark, cfg, table, day).drop(S.COL_RUN_DATE).collect())


def test_backfill_uses_the_model_of_its_date_and_reruns_reproduce(spark, tmp_path):
    import mlflow

    src = tmp_path / "src"
    write_demo(src, users=50, items=60, ratings_per_user=16, days=3, end_date=D3)
    cfg = make_cfg(tmp_path / "home", LMREC_TRAIN_EPOCHS=1, LMREC_TRAIN_ALS=0, LMREC_OPTIMIZE=0)
    first = _night(spark, cfg, D2, src)
    client = mlflow.MlflowClient()  # the jobs set the tracking URI
    v2 = first["train"]["version"]
    assert first["train"]["decision"] == "trained" and first["gate"]["decision"] == "promoted"
    d2 = _rows(spark, cfg, S.RECOMMENDATIONS, D2)
    assert str(client.get_model_version_by_alias(S.MODEL_NAME, S.ALIAS_CHAMPION).version) == v2

    # A backfill of the day before: no model existed by D1, so D1 trains its own on data up to D1.
    back = _night(spark, cfg, D1, src)
    v1 = back["train"]["version"]
    assert back["train"]["decision"] == "trained" and f"no champion as of {D1}" in back["train"]["reason"]
    assert client.get_model_version(S.MODEL_NAME, v1).tags["data_cutoff"] == f"{D2}T00:00:00Z"
    assert back["gate"]["champion_alias_moved"] is False  # the global alias never moves back in time
    assert str(client.get_model_version_by_alias(S.MODEL_NAME, S.ALIAS_CHAMPION).version) == v2
    used = {r[0] for r in read_table(spark, cfg, S.RECOMMENDATIONS, D1).select(S.COL_MODEL_VERSION).distinct().collect()}
    assert v2 not in used and used <= {v1, S.POPULARITY_VERSION}
    ledger = read_table(spark, cfg, S.MODEL_LEDGER).toPandas().set_index(S.COL_RUN_DATE)
    assert ledger.loc[D2, S.COL_MODEL_VERSION] == v2 and ledger.loc[D2, S.COL_DATA_CUTOFF] == f"{D3}T00:00:00Z"
    assert ledger.loc[D1, S.COL_CANDIDATE_VERSION] == v1
    assert ledger.loc[D1, S.COL_DECISION] in ("promoted", "kept_champion") and ledger.loc[D1, S.COL_REASON]
    # The D2 partition is untouched by the backfill.
    assert _rows(spark, cfg, S.RECOMMENDATIONS, D2) == d2

    # D2 again: the champion as of D2 is D2's own (fresh): nothing is trained, the same rows come back.
    again = _night(spark, cfg, D2, src)
    assert again["train"]["decision"] == "skipped" and again["train"]["champion_version"] == v2
    assert again["gate"]["decision"] == "unchanged" and again["gate"]["champion_version"] == v2
    assert _rows(spark, cfg, S.RECOMMENDATIONS, D2) == d2
    # Point in time (contract): every row's model has data_cutoff <= D + 1 day.
    for day in (D1, D2):
        for (v,) in read_table(spark, cfg, S.RECOMMENDATIONS, day).select(S.COL_MODEL_VERSION).distinct().collect():
            if v != S.POPULARITY_VERSION:
                cut = client.get_model_version(S.MODEL_NAME, v).tags["data_cutoff"]
                assert cut <= f"{day + dt.timedelta(days=1)}T00:00:00Z", (day, v, cut)
