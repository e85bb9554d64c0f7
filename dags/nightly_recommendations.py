"""
### nightly_recommendations

Every night, for logical date **D** (`{{ ds }}`), lmrec turns the source (ratings, items, user
text) into top-k recommendations in the Delta table `recommendations` (partition `run_date = D`):

`ingest` → `rating_matrix` → `embed_items` ∥ `embed_users` → `train` → `gate` → `score` → `validate`

* **ingest** validates the source into bronze tables; bad rows go to `quarantine`.
* **rating_matrix** builds the point-in-time ratings (events before D + 1 day, UTC) with stable ids.
* **embed_items / embed_users** embed texts with a BERT-family encoder, only what changed.
* **train** fits the scorer, evaluates it against baselines, registers `lmrec-scorer@candidate`;
  under `retrain: auto` (default) it keeps a fresh champion instead (under a week old, new ratings
  under 5% of those it saw, same text model) and the gate then changes nothing.
* **gate** moves `champion` to the candidate only if it is at least as good; otherwise the run
  goes on with the old champion (the gate task's return value says `kept_champion`).
* **score** + **validate** write top-k per user and publish them atomically after checks.

Params: `source` (source directory), `top_k` (1–1000), `full_refresh` (re-embed every text),
`retrain` (`auto` | `always`).
Every task only touches its own date's partition, so reruns, clears and backfills
(`airflow backfill create --dag-id nightly_recommendations --from-date … --to-date …`) are safe,
also with several runs at once. Runner: `LMREC_RUNNER=local` runs the jobs in the worker
process on `local[*]`; `LMREC_RUNNER=spark-submit` submits them through the `spark_default`
connection.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pendulum
from airflow.sdk import Asset, Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from jobs import schema as S
from jobs.settings import Settings

CFG = Settings.from_env()
JOBS_DIR = Path(__file__).resolve().parents[1] / "jobs"
TIMEOUTS = {"ingest": 60, "rating_matrix": 60, "embed_items": 180, "embed_users": 180, "train": 180,
            "gate": 60, "score": 120, "validate": 60}  # minutes
OUTPUTS = {"ingest": [S.RATINGS_RAW, S.ITEMS_RAW, S.USER_TEXT_RAW, S.QUARANTINE],
           "rating_matrix": [S.RATING_MATRIX, S.USER_INDEX, S.ITEM_INDEX],
           "embed_items": [S.ITEM_EMBEDDINGS], "embed_users": [S.USER_EMBEDDINGS],
           "score": [S.RECOMMENDATIONS_STAGING], "validate": [S.RECOMMENDATIONS]}


def asset(table: str) -> Asset:
    """The Airflow Asset of a Delta table, so analysts' DAGs can be scheduled on it."""
    root = CFG.warehouse if "://" in CFG.warehouse else Path(CFG.warehouse).resolve().as_uri()
    return Asset(name=f"lmrec.{table}", uri=f"{root.rstrip('/')}/{table}")


def job_task(name: str):
    """One pipeline job for {{ ds }}: in-process, or spark-submit to the configured cluster."""
    common = dict(task_id=name, execution_timeout=dt.timedelta(minutes=TIMEOUTS[name]),
                  outlets=[asset(t) for t in OUTPUTS.get(name, [])])
    if CFG.runner == "spark-submit":
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

        from jobs.spark import spark_conf

        conf = {k: v for k, v in spark_conf(CFG, f"lmrec-{name}", gpu=name in S.GPU_JOBS).items()
                if k not in ("spark.master", "spark.app.name")}
        return SparkSubmitOperator(application=str(JOBS_DIR / f"{name}.py"), conn_id="spark_default", conf=conf,
                                   application_args=["--date", "{{ ds }}", "--source", "{{ params.source }}",
                                                     "--top-k", "{{ params.top_k }}", "--retrain", "{{ params.retrain }}",
                                                     "--full-refresh", "{{ params.full_refresh }}"],
                                   name=f"lmrec-{name}", **common)

    @task(**common)
    def run_in_process(ds=None, params=None):
        from jobs.cli import run_job, setup_logging

        setup_logging()
        # The run's options go to every task, as spark-submit's arguments do; run_job hands each
        # job those its run() takes (score and validate top_k, train retrain, embedding full_refresh).
        result = run_job(name, dt.date.fromisoformat(ds), source=params["source"], top_k=int(params["top_k"]),
                         retrain=params.get("retrain", CFG.retrain), full_refresh=bool(params.get("full_refresh")))
        return _reference(result)

    return run_in_process()


def _reference(result):
    """What a task hands on: small references and counts, never data."""
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if k != "metrics"}
    if isinstance(result, list):
        return [getattr(c, "__dict__", str(c)) for c in result]
    return result


@dag(
    dag_id=S.DAG_ID,
    # One run per day D (logical date D 00:00 UTC, data interval = the day D), started at 00:00 UTC
    # on D + 1, when D is complete. `{{ ds }}` is D, and backfill --from-date/--to-date are
    # inclusive of exactly the days named. (A trigger timetable would start "D" while D is still
    # running.)
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(1995, 1, 1, tz="UTC"),  # public datasets are old: backfills reach back
    catchup=False,
    max_active_runs=4,  # safe: every task writes only its own run_date partition
    tags=["lmrec", "recommendations"],
    doc_md=__doc__,
    default_args={"retries": CFG.task_retries, "retry_delay": dt.timedelta(minutes=1), "retry_exponential_backoff": True,
                  "max_retry_delay": dt.timedelta(minutes=30)},
    params={
        "source": Param(CFG.source, type="string", minLength=1, description="source directory (DESIGN.md source format)"),
        "top_k": Param(CFG.top_k, type="integer", minimum=1, maximum=S.MAX_K, description="recommendations per user"),
        "full_refresh": Param(False, type="boolean", description="re-embed every text, ignoring stored vectors"),
        "retrain": Param(CFG.retrain, type="string", enum=["auto", "always"],
                         description="auto: train only when the champion is stale (README, Retraining); always: train tonight"),
    },
)
def nightly_recommendations():
    t = {name: job_task(name) for name in ("ingest", "rating_matrix", "embed_items", "embed_users", "train",
                                            "gate", "score", "validate")}
    t["ingest"] >> t["rating_matrix"] >> [t["embed_items"], t["embed_users"]] >> t["train"]
    t["train"] >> t["gate"] >> t["score"] >> t["validate"]


nightly_recommendations()
