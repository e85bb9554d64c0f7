"""`lmrec query`: only reads of the lmrec tables run, on DuckDB (no JVM) or Spark SQL, with the same
answers; refused statements exit 1 and leave every table as it was."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from lmrec.core import schema as S
from lmrec.query import QueryRefused, check_read_only, connect, run_query

TABLES = [S.RECOMMENDATIONS, S.QUARANTINE, S.MODEL_LEDGER]
REFUSED = [
    "DELETE FROM recommendations WHERE rank > 0",
    "UPDATE recommendations SET score = 0",
    "INSERT INTO recommendations SELECT * FROM recommendations",
    "DROP TABLE recommendations",
    "CREATE TABLE x AS SELECT * FROM recommendations",
    "MERGE INTO recommendations t USING recommendations s ON t.user_id = s.user_id WHEN MATCHED THEN DELETE",
    "SELECT 1; DELETE FROM recommendations",
    "SELECT * FROM user_text_raw",
    "SELECT * FROM nosuchtable",
    "SELECT * FROM other_db.recommendations",
    "SELECT * FROM read_csv('/etc/hostname')",
    "SELECT reflect('java.lang.System', 'getenv', 'HOME')",
    "WITH a AS (SELECT * FROM '/etc/hostname') SELECT * FROM a",
]
DUCKDB_ONLY = ["COPY recommendations TO '/tmp/out.csv'", "ATTACH '/tmp/x.db'", "SET enable_external_access = true",
               "SELECT * INTO x FROM recommendations", "PRAGMA version", "INSTALL httpfs"]
SPARK_ONLY = ["SELECT * FROM text.`/etc/hostname`", "SELECT * FROM delta.`/tmp/warehouse/recommendations`",
              "CACHE TABLE recommendations", "INSERT OVERWRITE DIRECTORY '/tmp/x' SELECT 1", "SET spark.x = 1",
              "REFRESH TABLE recommendations"]
ALLOWED = ["SELECT run_date, count(*) FROM recommendations GROUP BY run_date",
           "WITH a AS (SELECT * FROM recommendations) SELECT count(*) FROM a",
           "SELECT item_id FROM recommendations UNION ALL SELECT item_id FROM quarantine",
           "SELECT * FROM lmrec.recommendations WHERE rank <= 3",
           "DESCRIBE recommendations", "SHOW TABLES"]


@pytest.mark.parametrize("dialect", ["duckdb", "spark"])
@pytest.mark.parametrize("sql", REFUSED)
def test_writes_paths_hidden_tables_and_table_functions_are_refused(sql, dialect):
    with pytest.raises(QueryRefused):
        check_read_only(sql, dialect=dialect, tables=TABLES)


@pytest.mark.parametrize("sql,dialect", [(q, "duckdb") for q in DUCKDB_ONLY] + [(q, "spark") for q in SPARK_ONLY])
def test_engine_specific_writes_and_paths_are_refused(sql, dialect):
    with pytest.raises(QueryRefused):
        check_read_only(sql, dialect=dialect, tables=TABLES)


@pytest.mark.parametrize("dialect", ["duckdb", "spark"])
@pytest.mark.parametrize("sql", ALLOWED)
def test_reads_pass(sql, dialect):
    check_read_only(sql, dialect=dialect, tables=TABLES)


@pytest.fixture(scope="module")
def warehouse(spark, tmp_path_factory):
    """recommendations (two dates), quarantine with a raw record, user text: written by delta-spark."""
    from tests.conftest import make_cfg

    cfg = make_cfg(tmp_path_factory.mktemp("query-home"))
    recs = [(f"u{u}", f"i{(u + r) % 7}", r, 1.0 / r, "3", None, dt.date(2024, 6, 29 + d))
            for u in range(5) for r in range(1, 4) for d in range(2)]
    cols = [S.COL_USER, S.COL_ITEM, S.COL_RANK, S.COL_SCORE, S.COL_MODEL_VERSION, S.COL_BECAUSE, S.COL_RUN_DATE]
    spark.createDataFrame(recs, "user_id string, item_id string, rank int, score double, model_version string, "
                                "because_item_id string, run_date date").toDF(*cols) \
        .write.format("delta").partitionBy(S.COL_RUN_DATE).save(cfg.table_path(S.RECOMMENDATIONS))
    spark.createDataFrame([("ratings.csv", 7, "rating is not a number", "u1,i1,PRIVATE TEXT", dt.date(2024, 6, 30))],
                          "source_file string, line long, reason string, raw_record string, run_date date") \
        .write.format("delta").save(cfg.table_path(S.QUARANTINE))
    spark.createDataFrame([("u1", "PRIVATE TEXT")], "user_id string, text string") \
        .write.format("delta").save(cfg.table_path(S.USER_TEXT_RAW))
    return cfg


def _versions(cfg) -> dict:
    from deltalake import DeltaTable

    return {t: (DeltaTable(cfg.table_path(t)).version(), len(DeltaTable(cfg.table_path(t)).to_pandas()))
            for t in (S.RECOMMENDATIONS, S.QUARANTINE, S.USER_TEXT_RAW)}


COUNTS = "SELECT run_date, count(*) AS n, round(sum(score), 6) AS s FROM recommendations GROUP BY run_date ORDER BY run_date"


@pytest.mark.spark
def test_duckdb_and_spark_give_the_same_answers(warehouse):
    cols, rows = run_query(COUNTS, cfg=warehouse, engine="duckdb")
    assert cols == ["run_date", "n", "s"]
    assert [(str(d), n) for d, n, _ in rows] == [("2024-06-29", 15), ("2024-06-30", 15)]
    _, spark_rows = run_query(COUNTS, cfg=warehouse, engine="spark")
    assert [tuple(map(str, r)) for r in spark_rows] == [tuple(map(str, r)) for r in rows]
    _, tables = run_query("SHOW TABLES", cfg=warehouse)
    assert sorted(t[0] for t in tables) == [S.QUARANTINE, S.RECOMMENDATIONS]  # no user text, no internals


@pytest.mark.spark
@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_quarantine_is_shown_without_the_raw_record(warehouse, engine):
    cols, rows = run_query("SELECT * FROM quarantine", cfg=warehouse, engine=engine)
    assert S.COL_RAW_RECORD not in cols and rows and "PRIVATE TEXT" not in str(rows)
    with pytest.raises(QueryRefused, match="user_text_raw"):
        run_query("SELECT * FROM user_text_raw", cfg=warehouse, engine=engine)


@pytest.mark.spark
@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_refused_statements_exit_1_and_change_nothing(warehouse, engine, monkeypatch, capsys):
    from lmrec.cli import main

    for key, value in {"LMREC_HOME": warehouse.home, "LMREC_SPARK_UI": "0", "SPARK_MASTER": "local[2]"}.items():
        monkeypatch.setenv(key, value)
    before = _versions(warehouse)
    for sql in ["DELETE FROM recommendations WHERE rank > 0", "SELECT * FROM text.`/etc/hostname`",
                "DROP TABLE recommendations", "SELECT * FROM read_csv('/etc/hostname')"]:
        assert main(["query", sql, "--engine", engine]) == 1, sql
    assert _versions(warehouse) == before
    assert main(["query", COUNTS, "--format", "json", "--engine", engine]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["n"] for r in out] == [15, 15]


@pytest.mark.spark
def test_duckdb_connection_cannot_touch_files_even_past_the_check(warehouse):
    """The sandbox alone: statements sent to the connection directly (no check) cannot read or write files."""
    import duckdb

    con = connect(warehouse)
    for sql in ["SELECT * FROM read_csv('/etc/hostname')", "COPY recommendations TO '/tmp/lmrec-leak.csv'",
                "SET enable_external_access = true"]:
        with pytest.raises(duckdb.Error):
            con.sql(sql)
    assert con.execute("SELECT count(*) FROM recommendations").fetchall() == [(30,)]
    assert con.sql("SELECT count(*) FROM recommendations").df().iloc[0, 0] == 30  # pandas from the same views
