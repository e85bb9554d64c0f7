"""ingest: real Spark + Delta. One bad row per rejection reason, reconciled counts, clear errors."""

from __future__ import annotations

import json

import pytest

from lmrec.core import schema as S
from jobs.ingest import RejectionRateError, run
from lmrec.core.errors import SourceError
from lmrec.core.io import read_table
from tests.conftest import D1, make_cfg, write_csv

pytestmark = pytest.mark.spark

SECRET = "my private review words"

ITEMS = (
    "item_id,title,description,categories,year\n"
    "i1,Alien,space horror,Sci-Fi|Horror,1979\n"
    "i2,Aliens,more space horror,Sci-Fi,1986\n"
    "i3,Heat,a heist,Crime,1995\n"
    ",No Id,missing id,Drama,2000\n"  # missing_id
    "i4,\"Title with, comma\",ok,Drama,2001\n"
)
RATINGS = (
    "user_id,item_id,rating,timestamp\n"
    "u1,i1,4.0,1719532800\n"
    "u1,i2,5,2024-06-28T10:00:00Z\n"
    "u2,i3,3.5,1719532800\n"
    "u2,i4,2,1719532800\n"
    ",i1,4,1719532800\n"  # missing_id
    "u3,i1,great,1719532800\n"  # unparseable_rating
    "u3,i2,4,yesterday\n"  # unparseable_timestamp
    "u3,i3,9,1719532800\n"  # rating_out_of_scale
    "u1,i1,4.0,1719532800\n"  # exact_duplicate
    "u3,nope,4,1719532800\n"  # unknown_item
    "u3,i1,4\n"  # malformed_line (too few fields)
)


@pytest.fixture(scope="module")
def bad_source(tmp_path_factory):
    src = tmp_path_factory.mktemp("bad") / "source"
    write_csv(src / "items.csv", ITEMS)
    write_csv(src / "ratings.csv", RATINGS)
    long_text = "x" * 200
    text = ("user_id,item_id,text,timestamp\n"
            f"u1,i1,{SECRET},1719532800\n"
            'u3,i2,"a review over\ntwo lines",1719532800\n'  # one record, lines 3-4
            f"u2,i3,{long_text},1719532800\n").encode() + b"u2,i3,bad \xff\xfe bytes,1719532800\n"
    write_csv(src / "user_text.csv", text)
    return src


@pytest.fixture(scope="module")
def ingested(spark, bad_source, tmp_path_factory):
    cfg = make_cfg(tmp_path_factory.mktemp("wh"), LMREC_REJECT_THRESHOLD=1.0, LMREC_MAX_TEXT_CHARS=100)
    counts = run(D1, cfg=cfg, spark=spark, source=str(bad_source))
    q = read_table(spark, cfg, S.QUARANTINE, D1).toPandas()
    return cfg, counts, q


@pytest.mark.parametrize("stem,reason,raw_fragment", [
    ("items", S.REASON_MISSING_ID, "No Id"),
    ("ratings", S.REASON_MISSING_ID, '"rating":"4"'),
    ("ratings", S.REASON_BAD_RATING, "great"),
    ("ratings", S.REASON_BAD_TIMESTAMP, "yesterday"),
    ("ratings", S.REASON_RATING_SCALE, '"rating":"9"'),
    ("ratings", S.REASON_DUPLICATE, '"item_id":"i1"'),
    ("ratings", S.REASON_UNKNOWN_ITEM, "nope"),
    ("ratings", S.REASON_MALFORMED, "u3,i1,4"),
    ("user_text", S.REASON_TEXT_TOO_LONG, "xxxx"),
    ("user_text", S.REASON_INVALID_UTF8, "bytes"),
])
def test_each_reason_is_quarantined(ingested, stem, reason, raw_fragment):
    _, _, q = ingested
    rows = q[(q[S.COL_REASON] == reason) & q[S.COL_SOURCE_FILE].str.endswith(f"{stem}.csv")]
    assert len(rows) == 1, q[[S.COL_SOURCE_FILE, S.COL_REASON]].to_string()
    assert raw_fragment in rows.iloc[0][S.COL_RAW_RECORD]


@pytest.mark.parametrize("stem,reason,line", [
    ("items", S.REASON_MISSING_ID, 5),
    ("ratings", S.REASON_MISSING_ID, 6),
    ("ratings", S.REASON_DUPLICATE, 10),  # the second of two equal lines
    ("ratings", S.REASON_MALFORMED, 12),
    ("user_text", S.REASON_TEXT_TOO_LONG, 5),  # after a record that spans two lines
    ("user_text", S.REASON_INVALID_UTF8, 6),
])
def test_quarantine_line_is_the_line_in_the_source_file(ingested, bad_source, stem, reason, line):
    _, _, q = ingested
    row = q[(q[S.COL_REASON] == reason) & q[S.COL_SOURCE_FILE].str.endswith(f"{stem}.csv")].iloc[0]
    assert row[S.COL_LINE] == line
    text = (bad_source / f"{stem}.csv").read_bytes().decode("utf-8", errors="replace").split("\n")
    if reason != S.REASON_INVALID_UTF8:
        assert text[line - 1].split(",")[0] in row[S.COL_RAW_RECORD]


def test_counts_reconcile(ingested, spark):
    cfg, counts, q = ingested
    by_file = {c.source_file.rsplit("/", 1)[1]: c for c in counts}
    assert all(c.reconciles for c in counts)
    assert (by_file["ratings.csv"].rows_in, by_file["ratings.csv"].accepted) == (11, 4)
    assert (by_file["items.csv"].rows_in, by_file["items.csv"].accepted) == (5, 4)
    assert (by_file["user_text.csv"].rows_in, by_file["user_text.csv"].accepted) == (4, 2)
    assert len(q) == sum(c.rejected_total for c in counts)
    assert read_table(spark, cfg, S.RATINGS_RAW, D1).count() == 4


def test_bronze_types_and_extra_attributes(ingested, spark):
    cfg, _, _ = ingested
    r = {x[S.COL_ITEM]: x for x in read_table(spark, cfg, S.RATINGS_RAW, D1).collect()}
    assert r["i2"][S.COL_RATING] == 5.0 and str(r["i2"][S.COL_EVENT_TS]) == "2024-06-28 10:00:00"
    items = {x[S.COL_ITEM]: x for x in read_table(spark, cfg, S.ITEMS_RAW, D1).collect()}
    assert items["i4"][S.COL_TITLE] == "Title with, comma"
    assert json.loads(items["i1"][S.COL_ATTRIBUTES]) == {"year": "1979"}


def test_rerun_is_identical(ingested, spark, bad_source):
    cfg, _, q = ingested
    before = sorted(map(tuple, read_table(spark, cfg, S.RATINGS_RAW).collect()))
    run(D1, cfg=cfg, spark=spark, source=str(bad_source))
    assert sorted(map(tuple, read_table(spark, cfg, S.RATINGS_RAW).collect())) == before
    assert read_table(spark, cfg, S.QUARANTINE).count() == len(q)


def test_rejection_threshold_fails_after_quarantine(spark, bad_source, tmp_path, caplog):
    cfg = make_cfg(tmp_path, LMREC_MAX_TEXT_CHARS=100)  # default threshold 5%
    with pytest.raises(RejectionRateError, match="ratings.csv: 7/11 rejected") as err:
        run(D1, cfg=cfg, spark=spark, source=str(bad_source))
    assert read_table(spark, cfg, S.QUARANTINE, D1).count() == 10
    from lmrec.core.io import is_table
    assert not is_table(spark, cfg, S.RATINGS_RAW)  # nothing published
    # Privacy: user text never in errors or logs.
    assert SECRET not in str(err.value) and SECRET not in caplog.text


def test_missing_file_names_it(spark, tmp_path, cfg):
    write_csv(tmp_path / "src" / "items.csv", ITEMS)
    with pytest.raises(SourceError, match=r"src/ratings\.csv .*not found"):
        run(D1, cfg=cfg, spark=spark, source=str(tmp_path / "src"))


def test_missing_column_names_it(spark, tmp_path, cfg):
    write_csv(tmp_path / "src" / "items.csv", ITEMS)
    write_csv(tmp_path / "src" / "ratings.csv", "user_id,item_id,timestamp\nu1,i1,1\n")
    with pytest.raises(SourceError, match=r"ratings\.csv: required column\(s\) rating missing"):
        run(D1, cfg=cfg, spark=spark, source=str(tmp_path / "src"))


def test_parquet_source(spark, tmp_path, cfg):
    import pandas as pd

    src = tmp_path / "pq"
    src.mkdir()
    pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]}).to_parquet(src / "items.parquet")
    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "rating": [1.0, 7.0],
                  "timestamp": [1719532800, 1719532800]}).to_parquet(src / "ratings.parquet")
    counts = run(D1, cfg=make_cfg(tmp_path / "h", LMREC_REJECT_THRESHOLD=1), spark=spark, source=str(src))
    r = [c for c in counts if c.source_file.endswith("ratings.parquet")][0]
    assert (r.rows_in, r.accepted, r.rejected) == (2, 1, {S.REASON_RATING_SCALE: 1})
    q = read_table(spark, make_cfg(tmp_path / "h"), S.QUARANTINE, D1).collect()
    assert [x[S.COL_LINE] for x in q] == [2]  # Parquet: the row number


def test_delta_race_errors_are_retried():
    """Delta's conflicts arrive as delta-spark's exception classes; only those are retried."""
    from delta.exceptions import ConcurrentAppendException, ProtocolChangedException

    from lmrec.core.io import is_concurrency_error, retry_on_conflict

    assert is_concurrency_error(ProtocolChangedException("[DELTA_PROTOCOL_CHANGED] The protocol version changed"))
    assert is_concurrency_error(ConcurrentAppendException("files were added"))
    assert not is_concurrency_error(ValueError("column rating missing"))
    assert not is_concurrency_error(RuntimeError("io.delta.exceptions.ConcurrentAppendException: as text only"))
    calls = []

    def commit():
        calls.append(1)
        if len(calls) < 3:
            raise ConcurrentAppendException("another run committed first")
        return "ok"

    assert retry_on_conflict(commit, what="t", retries=3) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        retry_on_conflict(lambda: (_ for _ in ()).throw(ValueError("not a conflict")), what="t")


def test_duplicates_first_in_file_wins_across_partitions(spark, tmp_path):
    """Exact duplicates found by the hash pre-pass are the same as by record: the first in the
    file is kept wherever the copies fall (several scan partitions here), nulls are equal to
    nulls but not to "", and a clean rerun of the date empties its quarantine partition."""
    import pandas as pd

    src = tmp_path / "dup"
    src.mkdir()
    pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]}).to_parquet(src / "items.parquet")
    rows = [("u1", "a", 4.0), ("u2", "a", 3.0), ("u1", "b", 2.0), ("u3", "a", 1.0), ("u2", "b", 5.0),
            ("u1", "a", 4.0), ("u4", "a", 1.0), ("u4", "b", 1.0), ("u5", "a", 2.0), ("u1", "a", 4.0)]
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"]).assign(timestamp=1719532800)
    ratings.to_parquet(src / "ratings.parquet", row_group_size=2)
    text = pd.DataFrame({"user_id": ["u1", "u1", "u1", "u2"], "item_id": [None, None, "", None],
                         "text": ["t", "t", "t", "t"], "timestamp": [1719532800] * 4})
    text.to_parquet(src / "user_text.parquet", row_group_size=1)
    cfg = make_cfg(tmp_path / "h", LMREC_REJECT_THRESHOLD=1)
    old = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "512")  # several scan partitions per file
    try:
        assert spark.read.parquet(str(src / "ratings.parquet")).rdd.getNumPartitions() > 1
        counts = {c.source_file.rsplit("/", 1)[1]: c for c in run(D1, cfg=cfg, spark=spark, source=str(src))}
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", old)
    assert counts["ratings.parquet"].rejected == {S.REASON_DUPLICATE: 2}
    assert counts["user_text.parquet"].rejected == {S.REASON_DUPLICATE: 1}  # null == null, null != ""
    q = read_table(spark, cfg, S.QUARANTINE, D1).collect()
    assert sorted((x[S.COL_SOURCE_FILE].rsplit("/", 1)[1], x[S.COL_LINE]) for x in q) == [
        ("ratings.parquet", 6), ("ratings.parquet", 10), ("user_text.parquet", 2)]
    ratings.drop_duplicates().to_parquet(src / "ratings.parquet")
    text.drop_duplicates().to_parquet(src / "user_text.parquet")
    run(D1, cfg=cfg, spark=spark, source=str(src))
    assert read_table(spark, cfg, S.QUARANTINE, D1).count() == 0
    assert read_table(spark, cfg, S.RATINGS_RAW, D1).count() == 8
