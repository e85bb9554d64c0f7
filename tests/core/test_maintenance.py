"""Table upkeep on real Delta tables: retention counted back from the logical date, constraints that
reject bad rows and commit nothing, OPTIMIZE and VACUUM."""

from __future__ import annotations

import datetime as dt

import pytest

from lmrec.core import maintenance
from lmrec.core import schema as S
from lmrec.core.io import read_table
from tests.conftest import D3, make_cfg

pytestmark = pytest.mark.spark
DATES = [D3 - dt.timedelta(days=n) for n in range(4, -1, -1)]  # D3-4 .. D3
RECS = "user_id string, rank int, item_id string, score double, model_version string, because_item_id string"


def _recs(spark, dates):
    rows = [(u, r, f"i{r}", 1.0 / r, "7", None, d) for d in dates for u in ("u1", "u2") for r in (1, 2)]
    return spark.createDataFrame(rows, RECS + ", run_date date")


def _write(spark, cfg, table, dates):
    """All dates in one commit (fast to set up; the tables look as after several nights)."""
    _recs(spark, dates).write.format("delta").partitionBy(S.COL_RUN_DATE).save(cfg.table_path(table))


@pytest.fixture
def warehouse(spark, tmp_path):
    cfg = make_cfg(tmp_path, LMREC_SNAPSHOT_RETENTION_DAYS=2, LMREC_RESULT_RETENTION_DAYS=3)
    for table in (S.RECOMMENDATIONS, S.RECOMMENDATIONS_STAGING):
        _write(spark, cfg, table, DATES)
    return cfg


@pytest.fixture(scope="module")
def constrained(spark, tmp_path_factory):
    cfg = make_cfg(tmp_path_factory.mktemp("constrained"))
    _write(spark, cfg, S.RECOMMENDATIONS, [D3])
    assert len(maintenance.ensure_constraints(spark, cfg, S.RECOMMENDATIONS)) == 3  # required_not_null, rank_within_k, score_finite
    return cfg


def _dates(spark, cfg, table):
    return sorted({r[0] for r in read_table(spark, cfg, table).select(S.COL_RUN_DATE).collect()})


def test_retention_counts_back_from_the_logical_date(spark, warehouse):
    out = maintenance.run(D3 - dt.timedelta(days=1), cfg=warehouse, spark=spark, vacuum=False)  # VACUUM: the DAG test
    # D3-1 keeps 2 snapshot dates (D3-2, D3-1) and 3 result dates (D3-3 .. D3-1); later dates stay.
    assert _dates(spark, warehouse, S.RECOMMENDATIONS_STAGING) == DATES[2:]
    assert _dates(spark, warehouse, S.RECOMMENDATIONS) == DATES[1:]
    assert out[S.RECOMMENDATIONS_STAGING]["rows_expired"] == 8 and out[S.RECOMMENDATIONS]["rows_expired"] == 4
    assert len(out[S.RECOMMENDATIONS]["constraints_added"]) == 3
    again = maintenance.run(D3 - dt.timedelta(days=1), cfg=warehouse, spark=spark, vacuum=False)  # idempotent
    assert again[S.RECOMMENDATIONS] == {"constraints_added": [], "rows_expired": 0}


@pytest.mark.parametrize("bad", [
    "SELECT 'u9' AS user_id, 0 AS rank, 'i1' AS item_id, 1.0D AS score, '7' AS model_version",
    f"SELECT 'u9' AS user_id, {S.MAX_K + 1} AS rank, 'i1' AS item_id, 1.0D AS score, '7' AS model_version",
    "SELECT 'u9' AS user_id, 1 AS rank, 'i1' AS item_id, double('NaN') AS score, '7' AS model_version",
    "SELECT 'u9' AS user_id, 1 AS rank, 'i1' AS item_id, double('inf') AS score, '7' AS model_version",
    "SELECT 'u9' AS user_id, 1 AS rank, CAST(NULL AS STRING) AS item_id, 1.0D AS score, '7' AS model_version",
])
def test_constraints_reject_bad_rows_and_commit_nothing(spark, constrained, bad):
    from delta.tables import DeltaTable

    path = constrained.table_path(S.RECOMMENDATIONS)
    version = DeltaTable.forPath(spark, path).history(1).first()["version"]
    row = spark.sql(bad + f", CAST(NULL AS STRING) AS because_item_id, DATE'{D3}' AS run_date")
    with pytest.raises(Exception, match="(?i)constraint|null"):
        row.write.format("delta").mode("append").save(path)
    assert DeltaTable.forPath(spark, path).history(1).first()["version"] == version
    assert maintenance.ensure_constraints(spark, constrained, S.RECOMMENDATIONS) == []  # already there
