"""A real backfill: `airflow backfill create` over six dates, four runs at a time, under a real
scheduler (`airflow standalone`: LocalExecutor, every task in its own process). Its partitions of
`recommendations` equal those of the same dates run one at a time (`lmrec pipeline`, oldest first).

Slow (about 100 minutes on 2 cores: 81 for the backfill, 19 for the reference; run it alone):
`make test-all` or `pytest -m slow tests/dags/test_backfill.py`.
Model versions are compared by the date they were trained for (their `run_date` tag): the version
numbers themselves depend on what else registered models meanwhile (the nightly run that unpausing
the DAG starts)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmrec.core import schema as S
from lmrec.core.spark import free_port
from lmrec.data.demo import write_demo

pytestmark = [pytest.mark.slow, pytest.mark.airflow]
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAST = dt.date(2024, 6, 30)
DATES = [LAST - dt.timedelta(days=n) for n in range(5, -1, -1)]
LMREC_ENV = {"LMREC_SPARK_UI": "0", "LMREC_SHUFFLE_PARTITIONS": "2", "LMREC_DRIVER_MEMORY": "2g",
             "LMREC_TRAIN_EPOCHS": "2", "LMREC_TRAIN_ALS": "0", "LMREC_OPTIMIZE": "0", "LMREC_TASK_RETRIES": "0",
             "LMREC_SOURCE_WAIT_MINUTES": "0"}


def _recommendations(home: Path) -> dict:
    """run_date -> sorted rows, the model version replaced by the date it was trained for."""
    import mlflow
    from deltalake import DeltaTable

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    trained_for = {str(v.version): v.tags.get("run_date")
                   for v in client.search_model_versions(f"name='{S.MODEL_NAME}'")}
    df = DeltaTable(str(home / "warehouse" / S.RECOMMENDATIONS)).to_pandas()
    df[S.COL_MODEL_VERSION] = df[S.COL_MODEL_VERSION].map(lambda v: trained_for.get(v, v))
    df[S.COL_SCORE] = df[S.COL_SCORE].round(9)
    return {str(d): sorted(map(tuple, g.drop(columns=[S.COL_RUN_DATE]).astype(str).itertuples(index=False)))
            for d, g in df.groupby(S.COL_RUN_DATE)}


def _wait_for_api(port: int, server: subprocess.Popen, seconds: float = 600) -> None:
    """Until the API server (which also serves the tasks' execution API) answers its health check."""
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, "airflow standalone exited; see standalone.log"
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/api/v2/monitor/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(5)
    pytest.fail("the Airflow API server did not come up")


def _runs(env) -> list[dict]:
    out = subprocess.run([str(BIN / "airflow"), "dags", "list-runs", S.DAG_ID, "-o", "json"], env=env,
                         capture_output=True, text=True, timeout=120)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[{") or ln.strip() == "[]"]
    return json.loads(lines[-1]) if lines else []


def test_backfill_of_six_dates_four_at_a_time_equals_one_at_a_time(tmp_path):
    src = tmp_path / "source"
    write_demo(src, users=60, items=80, ratings_per_user=18, days=6, end_date=LAST)

    home = tmp_path / "backfill"
    port = free_port()
    env = {**os.environ, **LMREC_ENV, "LMREC_HOME": str(home), "LMREC_SOURCE": str(src),
           "AIRFLOW_HOME": str(home / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
           "AIRFLOW__CORE__PARALLELISM": "8", "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
           "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120", "PATH": f"{BIN}:{os.environ['PATH']}"}
    airflow = str(BIN / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    subprocess.run([airflow, "pools", "set", "lmrec_spark", "2", "lmrec Spark jobs"], env=env, check=True,
                   capture_output=True, timeout=120)
    # The DAG serialized and unpaused and the backfill created before the scheduler starts (SQLite
    # metadata: one writer at a time), then `airflow standalone` runs it.
    subprocess.run([airflow, "dags", "reserialize"], env=env, check=True, capture_output=True, timeout=600)
    subprocess.run([airflow, "dags", "unpause", S.DAG_ID], env=env, check=True, capture_output=True, timeout=120)
    out = subprocess.run([airflow, "backfill", "create", "--dag-id", S.DAG_ID, "--from-date", str(DATES[0]),
                          "--to-date", str(DATES[-1]), "--max-active-runs", "4", "--reprocess-behavior", "failed",
                          "--dag-run-conf", json.dumps({"source": str(src), "top_k": 4})],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    log = (tmp_path / "standalone.log").open("w")
    server = subprocess.Popen([airflow, "standalone"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    started = time.monotonic()
    try:
        _wait_for_api(port, server)
        wanted = {str(d) for d in DATES}
        deadline = time.monotonic() + 3 * 3600
        while time.monotonic() < deadline:
            runs = [r for r in _runs(env) if str(r.get("logical_date", ""))[:10] in wanted
                    and str(r.get("run_id", "")).startswith("backfill")]
            states = {str(r["logical_date"])[:10]: r["state"] for r in runs}
            assert "failed" not in states.values(), f"a backfill run failed: {states}; see {log.name}"
            if len(states) == len(wanted) and set(states.values()) == {"success"}:
                break
            time.sleep(20)
        else:
            pytest.fail(f"backfill not done after 3 h: {states}")
        minutes = (time.monotonic() - started) / 60
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()

    # The reference: the same dates one at a time, oldest first, without Airflow.
    ref = tmp_path / "one-at-a-time"
    ref_env = {**os.environ, **LMREC_ENV, "LMREC_HOME": str(ref)}
    for day in DATES:
        subprocess.run([str(BIN / "lmrec"), "pipeline", "--date", str(day), "--source", str(src), "--top-k", "4"],
                       env=ref_env, cwd=REPO, check=True, capture_output=True, timeout=1800)

    # Runs overlapped: at least two were running at the same time.
    spans = [(r["start_date"], r["end_date"]) for r in runs]
    overlap = max(sum(1 for s2, e2 in spans if s2 < e and s < e2) for s, e in spans)
    print(f"backfill of {len(DATES)} dates, 4 at a time: {minutes:.1f} min, at most {overlap} runs at once")
    assert overlap >= 2
    got, want = _recommendations(home), _recommendations(ref)
    for day in DATES:
        assert got[str(day)] == want[str(day)], f"{day}: the backfill's partition differs from the one-at-a-time run"
