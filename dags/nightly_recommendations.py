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

Params: `source` (source directory), `top_k` (1–1000), `full_refresh` (re-embed every text, score every user),
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
from airflow.sdk import Asset, AsyncCallback, DeadlineAlert, DeadlineReference, Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from lmrec.core import schema as S
from lmrec.alerts import FailureAlert, deadline_missed, run_failed
from lmrec.core.settings import Settings
from lmrec.pipeline import JOBS

CFG = Settings.from_env()
if CFG.runner == "spark-submit" and CFG.spark_remote:
    raise ValueError("LMREC_SPARK_REMOTE (one shared Spark Connect server) is for LMREC_RUNNER=local: with "
                     "LMREC_RUNNER=spark-submit every task starts a driver of its own. Unset one of the two.")


def asset(table: str) -> Asset:
    """The Airflow Asset of a Delta table, so analysts' DAGs can be scheduled on it."""
    root = CFG.warehouse if "://" in CFG.warehouse else Path(CFG.warehouse).resolve().as_uri()
    return Asset(name=f"lmrec.{table}", uri=f"{root.rstrip('/')}/{table}")


def job_task(job):
    """One pipeline job (a row of lmrec.pipeline.JOBS) for {{ ds }}: in-process, or spark-submit
    to the configured cluster."""
    common = dict(task_id=job.name, execution_timeout=dt.timedelta(minutes=job.timeout_minutes),
                  outlets=[asset(t) for t in job.outputs], pool=CFG.spark_pool, depends_on_past=job.in_date_order,
                  # train of D also waits for the gate of D-1 (its direct downstream): the champion
                  # as of D is only known once the previous date's gate has decided.
                  wait_for_downstream=job.after_previous_downstream)
    if CFG.runner == "spark-submit":
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

        from lmrec.core.spark import spark_conf
        from lmrec.pipeline import spark_submit_args

        conf = {k: v for k, v in spark_conf(CFG, f"lmrec-{job.name}", gpu=job.gpu).items()
                if k not in ("spark.master", "spark.app.name")}
        return SparkSubmitOperator(application=str(Path(CFG.jobs_dir) / f"{job.name}.py"), conn_id="spark_default",
                                   conf=conf, application_args=spark_submit_args(job.name),
                                   name=f"lmrec-{job.name}", **common)

    @task(**common)
    def run_in_process(ds=None, params=None):
        from airflow.sdk.exceptions import AirflowFailException

        from lmrec.core.errors import PermanentError
        from lmrec.pipeline import run_job, setup_logging

        setup_logging()
        options = {o: params[o] for o in job.options if o in params}
        try:
            return _reference(run_job(job.name, dt.date.fromisoformat(ds), source=params["source"], **options))
        except PermanentError as exc:  # bad input, a failed check, a bad parameter: a retry would fail again
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return run_in_process()


@task.sensor(task_id="wait_for_source", poke_interval=CFG.source_poke_seconds, timeout=CFG.source_wait_minutes * 60,
             mode="reschedule")
def wait_for_source(params=None):
    """Wait for D's source files (ratings and items), freeing the worker slot between looks; fails
    after LMREC_SOURCE_WAIT_MINUTES with the missing files named in the log."""
    import logging

    from airflow.sdk import PokeReturnValue

    from lmrec.data.source import missing_source_files

    missing = missing_source_files(params["source"])
    if missing:
        logging.getLogger("lmrec").warning("waiting for the source (up to %d min): %s", CFG.source_wait_minutes,
                                           "; ".join(missing))
    return PokeReturnValue(is_done=not missing)


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
    # Transient errors are retried with backoff; lmrec's PermanentError fails a task at once. Every
    # failure, and a run still going LMREC_RUN_DEADLINE_HOURS after it was queued, alerts.
    default_args={"retries": CFG.task_retries, "retry_delay": dt.timedelta(minutes=1), "retry_exponential_backoff": True,
                  "max_retry_delay": dt.timedelta(minutes=30), "on_failure_callback": FailureAlert()},
    on_failure_callback=run_failed,
    deadline=[DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT,
                            interval=dt.timedelta(hours=CFG.run_deadline_hours),
                            callback=AsyncCallback(deadline_missed, kwargs={"hours": CFG.run_deadline_hours}))]
    if CFG.run_deadline_hours > 0 else None,
    params={
        "source": Param(CFG.source, type="string", minLength=1, description="source directory (docs/ARCHITECTURE.md, Source format)"),
        "top_k": Param(CFG.top_k, type="integer", minimum=1, maximum=S.MAX_K, description="recommendations per user"),
        "full_refresh": Param(False, type="boolean", description="re-embed every text (ignoring stored vectors) and score every user (ignoring D-1's lists)"),
        "retrain": Param(CFG.retrain, type="string", enum=["auto", "always"],
                         description="auto: train only when the champion is stale (README, Retraining); always: train tonight"),
    },
)
def nightly_recommendations():
    t = {job.name: job_task(job) for job in JOBS}
    wait_for_source() >> t["ingest"]
    t["ingest"] >> t["rating_matrix"] >> [t["embed_items"], t["embed_users"]] >> t["train"]
    t["train"] >> t["gate"] >> t["score"] >> t["validate"]


nightly_recommendations()
