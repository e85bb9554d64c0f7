"""The job runner records each job's outcome in ``run_summary`` (one row per date and job)."""

from __future__ import annotations

import json

import pytest

from lmrec.core import schema as S
from lmrec.core.errors import SourceError
from lmrec.core.io import read_table
from lmrec.pipeline import run_job
from tests.conftest import D3

pytestmark = pytest.mark.spark


def test_run_summary_has_one_row_per_date_and_job(spark, cfg, demo_source, tmp_path):
    run_job("ingest", D3, cfg=cfg, spark=spark, source=str(demo_source))
    run_job("ingest", D3, cfg=cfg, spark=spark, source=str(demo_source))  # a rerun replaces its row
    with pytest.raises(SourceError):
        run_job("ingest", D3.replace(day=29), cfg=cfg, spark=spark, source=str(tmp_path / "missing"))
    rows = {(str(r[S.COL_RUN_DATE]), r["job"]): r for r in read_table(spark, cfg, S.RUN_SUMMARY).collect()}
    assert set(rows) == {(str(D3), "ingest"), (str(D3.replace(day=29)), "ingest")}
    ok = rows[(str(D3), "ingest")]
    assert ok["status"] == "succeeded" and ok["seconds"] > 0 and ok["error"] is None
    files = {f["source_file"].rsplit("/", 1)[-1]: f for f in json.loads(ok["detail"])}
    assert files["ratings.csv"]["rows_in"] == files["ratings.csv"]["accepted"] + sum(files["ratings.csv"]["rejected"].values())
    failed = rows[(str(D3.replace(day=29)), "ingest")]
    assert failed["status"] == "failed" and failed["error"] == "SourceError"
