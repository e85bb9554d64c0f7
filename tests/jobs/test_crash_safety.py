"""Crash-safe jobs: a job killed with SIGKILL between its Delta commits (or in the middle of its
only one), then rerun, leaves every table it writes exactly as an uninterrupted run does: nothing
lost, nothing duplicated. Each job runs as a real `lmrec job` process on a copy of the warehouse as
it was before that job; the kill lands right after a chosen commit appears in a table's log."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import embed_items, embed_users, gate, ingest, rating_matrix, score, train, validate
from lmrec.core import schema as S
from lmrec.data.demo import write_demo
from tests.conftest import D3, make_cfg

pytestmark = [pytest.mark.spark, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
ENV = {"LMREC_SPARK_UI": "0", "LMREC_SHUFFLE_PARTITIONS": "2", "SPARK_MASTER": "local[2]", "LMREC_DRIVER_MEMORY": "2g",
       "LMREC_TRAIN_EPOCHS": "2", "LMREC_TRAIN_ALS": "0", "LMREC_OPTIMIZE": "1"}
ORDER = (ingest, rating_matrix, embed_items, embed_users, train, gate, score, validate)
WRITES = {"ingest": (S.QUARANTINE, S.RATINGS_RAW, S.ITEMS_RAW, S.USER_TEXT_RAW),
          "rating_matrix": (S.USER_INDEX, S.ITEM_INDEX, S.RATING_MATRIX),
          "score": (S.RECOMMENDATIONS_STAGING,), "validate": (S.RECOMMENDATIONS,)}
# (job, table whose next commit triggers the kill, how many of its new commits to wait for)
KILLS = [("ingest", S.QUARANTINE, 1), ("ingest", S.RATINGS_RAW, 1), ("ingest", S.ITEMS_RAW, 1),
         ("rating_matrix", S.USER_INDEX, 1), ("rating_matrix", S.ITEM_INDEX, 1),
         ("score", S.RECOMMENDATIONS_STAGING, 0), ("validate", S.RECOMMENDATIONS, 1)]


def _snapshot(home: Path) -> dict:
    """Every table's rows (as sorted tuples), read without a JVM."""
    from deltalake import DeltaTable

    out = {}
    for t in (home / "warehouse").iterdir():
        if (t / "_delta_log").is_dir():
            df = DeltaTable(str(t)).to_pandas()
            out[t.name] = sorted(map(repr, df.astype(str).itertuples(index=False, name=None)))
    return out


def _commits(table: Path) -> int:
    log = table / "_delta_log"
    return len(list(log.glob("*.json"))) if log.is_dir() else 0


@pytest.fixture(scope="module")
def stages(spark, tmp_path_factory):
    """The warehouse (and MLflow store) copied before each job of a night, and the tables after it."""
    root = tmp_path_factory.mktemp("crash")
    src = root / "src"
    write_demo(src, users=60, items=80, ratings_per_user=15, days=3, end_date=D3)
    home = root / "home"
    cfg = make_cfg(home, **{f: v for f, v in ENV.items() if f.startswith("LMREC_")})
    before, after = {}, {}
    for job in ORDER:
        name = job.__name__.split(".")[-1]
        before[name] = root / f"before-{name}"
        if home.exists():
            shutil.copytree(home, before[name])
        else:
            before[name].mkdir()
        kw = {"top_k": 5} if name in ("score", "validate") else {}
        job.run(D3, cfg=cfg, spark=spark, source=str(src), **kw)
        after[name] = _snapshot(home)
    return {"src": src, "before": before, "after": after, "root": root}


def _job(name: str, home: Path, src: Path) -> subprocess.Popen:
    env = {**os.environ, **ENV, "LMREC_HOME": str(home)}
    args = [sys.executable, "-m", "lmrec.cli", "job", name, "--date", str(D3), "--source", str(src)]
    if name in ("score", "validate"):
        args += ["--top-k", "5"]
    return subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.mark.parametrize("name,table,after_commits", KILLS)
def test_killed_job_rerun_leaves_tables_as_an_uninterrupted_run(stages, tmp_path, name, table, after_commits):
    home = tmp_path / "home"
    shutil.copytree(stages["before"][name], home)
    log_dir = home / "warehouse" / table
    start = _commits(log_dir)
    proc = _job(name, home, stages["src"])
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        n = _commits(log_dir) - start
        if n >= after_commits and (after_commits or (home / "warehouse" / table).exists()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"{name} finished before the kill point: {proc.stderr.read()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)  # the Python driver, its JVM and workers at once
    proc.wait()
    rerun = _job(name, home, stages["src"])
    _, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err[-3000:]
    got, want = _snapshot(home), stages["after"][name]
    for t in WRITES[name]:
        assert got[t] == want[t], f"{t} differs after {name} was killed at {table} commit {after_commits} and rerun"
