"""The nightly DAG with real Airflow: import hygiene, wiring, and `airflow dags test` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmrec.core import schema as S
from tests.conftest import D2, D3

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.airflow


def _env(home: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update({"LMREC_HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "LMREC_SPARK_UI": "0", "LMREC_SHUFFLE_PARTITIONS": "2",
                "LMREC_TRAIN_EPOCHS": "2", "LMREC_DRIVER_MEMORY": "3g", "LMREC_TASK_RETRIES": "0",
                "LMREC_TRAIN_ALS": "0", "LMREC_OPTIMIZE": "0", "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
                "LMREC_SOURCE_WAIT_MINUTES": "0"})
    env.update(extra)
    return env


def _airflow(env, *args, check=True):
    proc = subprocess.run([str(Path(sys.executable).parent / "airflow"), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"airflow {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def test_dag_imports_nothing_heavy_and_wires_tasks(tmp_path):
    code = (
        "import sys, json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"b = DagBag({str(REPO / 'dags')!r})\n"
        "d = b.dags.get('nightly_recommendations')\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pyspark', 'torch', 'mlflow', 'transformers'})\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in b.import_errors.items()}, 'heavy': heavy,\n"
        "  'edges': {t.task_id: sorted(t.downstream_task_ids) for t in d.tasks}, 'catchup': d.catchup,\n"
        "  'ordered': sorted(t.task_id for t in d.tasks if t.depends_on_past),\n"
        "  'after_downstream': sorted(t.task_id for t in d.tasks if t.wait_for_downstream),\n"
        "  'schedule': type(d.timetable).__name__, 'cron': d.timetable._expression, 'start': str(d.start_date), 'params': sorted(d.params.keys())}))\n")
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["errors"] == {}
    assert info["heavy"] == []
    assert info["edges"] == {
        "wait_for_source": ["ingest"],
        "ingest": ["rating_matrix"], "rating_matrix": ["embed_items", "embed_users"], "embed_items": ["train"],
        "embed_users": ["train"], "train": ["gate"], "gate": ["score"], "score": ["validate"], "validate": []}
    assert info["catchup"] is False and info["start"].startswith("1995")
    # Date order (found by the six-date backfill): rating_matrix numbers new ids as one-at-a-time
    # runs do; train of D waits for the gate of D-1 (it ran before that gate had promoted).
    assert info["ordered"] == ["embed_items", "embed_users", "gate", "rating_matrix", "train"]
    assert info["after_downstream"] == ["train"]
    # The run for D starts after D ends (data interval = day D), never while D is still running.
    assert info["schedule"] == "CronDataIntervalTimetable" and info["cron"] == "0 0 * * *"
    assert info["params"] == ["full_refresh", "retrain", "source", "top_k"]


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory):
    """A run for D3 with a source path that does not exist (fails waiting for it), then the input
    fixed and the same date run again, as an engineer would after clearing the failed task."""
    from lmrec.data.demo import write_demo

    home = tmp_path_factory.mktemp("dag") / "home"
    src = home / "source"
    env = _env(home)
    _airflow(env, "db", "migrate")
    _airflow(env, "pools", "set", "lmrec_spark", "2", "Spark jobs of lmrec (make airflow-db sets the same)")
    missing = home / "no-such-source"
    bad = _airflow(env, "dags", "test", S.DAG_ID, str(D3), "--conf", json.dumps({"source": str(missing)}), check=False)
    write_demo(src, users=60, items=80, ratings_per_user=15, days=3, end_date=D3)
    conf = json.dumps({"source": str(src), "top_k": 4})
    _airflow(env, "dags", "test", S.DAG_ID, str(D3), "--conf", conf)
    return {"home": home, "env": env, "conf": conf, "bad": bad, "missing": missing}


def test_bad_source_fails_at_the_source_wait_then_rerun_publishes_k_per_user(spark, dag_run):
    from lmrec.core.io import read_table
    from tests.conftest import make_cfg

    bad = dag_run["bad"]
    out = bad.stdout + bad.stderr
    assert f"source directory {dag_run['missing']} does not exist" in out
    # LMREC_SOURCE_WAIT_MINUTES=0: one look, then the wait fails and names what is missing; ingest never runs.
    assert "task_id=wait_for_source" in out and ("state=failed" in out or bad.returncode != 0)
    assert "LMREC ALERT" in out  # the failure notifier's log line
    cfg = make_cfg(dag_run["home"])
    recs = read_table(spark, cfg, S.RECOMMENDATIONS, D3).toPandas()
    active = read_table(spark, cfg, S.RATING_MATRIX, D3).select(S.COL_USER).distinct().count()
    counts = recs.groupby(S.COL_USER).size()
    assert len(counts) >= active and (counts == 4).all()


@pytest.mark.slow
def test_maintenance_dag_runs_on_the_nightly_tables(spark, dag_run):
    """`airflow dags test lmrec_table_maintenance D3` after the nightly run: the contract constraints
    are on `recommendations` (validate added them), D3 is inside every retention window, and the
    run summary shows each job of the night."""
    from delta.tables import DeltaTable

    from lmrec.core.io import read_table
    from tests.conftest import make_cfg

    cfg = make_cfg(dag_run["home"])
    before = read_table(spark, cfg, S.RECOMMENDATIONS, D3).count()
    out = _airflow(dag_run["env"], "dags", "test", "lmrec_table_maintenance", str(D3))
    assert "state=failed" not in out.stdout
    assert read_table(spark, cfg, S.RECOMMENDATIONS, D3).count() == before > 0
    props = DeltaTable.forPath(spark, cfg.table_path(S.RECOMMENDATIONS)).detail().first()["properties"]
    assert {"delta.constraints.rank_within_k", "delta.constraints.score_finite", "delta.constraints.required_not_null"} <= set(props)
    jobs = {r["job"] for r in read_table(spark, cfg, S.RUN_SUMMARY, D3).where("status = 'succeeded'").collect()}
    assert jobs == {"ingest", "rating_matrix", "embed_items", "embed_users", "train", "gate", "score", "validate"}


@pytest.mark.slow
def test_second_date_then_first_again(spark, dag_run):
    """D3, then D2, then D3 again: D2's partition is untouched by the rerun of D3, and D3 gets
    the same users and row counts again."""
    from lmrec.core.io import read_table
    from tests.conftest import make_cfg

    cfg = make_cfg(dag_run["home"])
    env, conf = dag_run["env"], dag_run["conf"]
    d3 = read_table(spark, cfg, S.RECOMMENDATIONS, D3).toPandas()
    _airflow(env, "dags", "test", S.DAG_ID, str(D2), "--conf", conf)
    d2 = sorted(map(tuple, read_table(spark, cfg, S.RECOMMENDATIONS, D2).collect()))
    assert d2 and sorted(map(tuple, read_table(spark, cfg, S.RECOMMENDATIONS, D3).toPandas().itertuples(index=False))) \
        == sorted(map(tuple, d3.itertuples(index=False)))
    _airflow(env, "dags", "test", S.DAG_ID, str(D3), "--conf", conf)
    assert sorted(map(tuple, read_table(spark, cfg, S.RECOMMENDATIONS, D2).collect())) == d2
    again = read_table(spark, cfg, S.RECOMMENDATIONS, D3).toPandas()
    assert len(again) == len(d3) and set(again[S.COL_USER]) == set(d3[S.COL_USER])


@pytest.mark.spark
def test_permanent_errors_fail_the_task_at_once(spark, tmp_path, monkeypatch):
    """An error no retry can fix (here a missing source) fails the task with AirflowFailException,
    so Airflow skips its retries; the message names the file, never user text."""
    for k, v in _env(tmp_path).items():
        monkeypatch.setenv(k, v)
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import AirflowFailException

    dag = DagBag(str(REPO / "dags")).dags[S.DAG_ID]
    ingest = dag.get_task("ingest")
    with pytest.raises(AirflowFailException, match=r"SourceError: source directory .*nope does not exist"):
        ingest.python_callable(ds=str(D3), params={"source": str(tmp_path / "nope"), "top_k": 3})
    score = dag.get_task("score")
    with pytest.raises(AirflowFailException, match="ParameterError: top_k must be between 1 and 1000"):
        score.python_callable(ds=str(D3), params={"source": str(tmp_path), "top_k": 0})


def test_alerts_reach_the_webhook_and_the_log(caplog):
    """A failure alert is one log line and a JSON POST to LMREC_ALERT_WEBHOOK."""
    import http.server
    import threading

    from lmrec.alerts import build_alert, send_alert
    from lmrec.core.settings import Settings

    got = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.handle_request, daemon=True).start()
    cfg = Settings.from_env({"LMREC_HOME": "/tmp/lmrec-alert-test",
                             "LMREC_ALERT_WEBHOOK": f"http://127.0.0.1:{server.server_port}/hook"})

    class TI:
        dag_id, run_id, task_id, try_number = S.DAG_ID, "manual__2024-06-30", "ingest", 1

    alert = build_alert({"ti": TI(), "ds": "2024-06-30", "exception": RuntimeError("source missing")}, "task failed")
    assert send_alert(alert, cfg) == ["log", "webhook"]
    server.server_close()
    assert got and got[0]["task_id"] == "ingest" and got[0]["error"] == "RuntimeError: source missing"
    assert "LMREC ALERT" in caplog.text
