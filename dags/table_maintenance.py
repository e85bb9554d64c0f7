"""
### lmrec_table_maintenance

Daily upkeep of lmrec's Delta tables for logical date **D** (`{{ ds }}`), after the nightly run:

* constraints on the contract tables (`recommendations`: NOT NULL columns, `1 <= rank <= 1000`,
  finite `score`; `model_ledger`: NOT NULL run_date, decision);
* retention counted back from D (never from the clock): intermediate snapshots keep
  `LMREC_SNAPSHOT_RETENTION_DAYS` dates, `recommendations` and `model_ledger`
  `LMREC_RESULT_RETENTION_DAYS`;
* OPTIMIZE of D's partitions (`recommendations` Z-ordered by `user_id` for per-user lookups);
* VACUUM of files unreferenced for longer than the tables' 7-day `deletedFileRetentionDuration`.

The same from a shell: `lmrec maintain --date D`.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from lmrec.alerts import FailureAlert
from lmrec.core.settings import Settings

CFG = Settings.from_env()


@task(pool=CFG.spark_pool, execution_timeout=dt.timedelta(hours=2))
def maintain(ds=None):
    """Constraints, retention, OPTIMIZE and VACUUM for every lmrec table; returns what each step did."""
    from lmrec.core import maintenance
    from lmrec.core.spark import get_spark
    from lmrec.pipeline import setup_logging

    setup_logging()
    run_date = dt.date.fromisoformat(ds)
    out = maintenance.run(run_date, cfg=CFG, spark=get_spark(CFG, app_name=f"lmrec-maintain-{ds}"))
    return {t: {"rows_expired": s["rows_expired"], "constraints_added": len(s["constraints_added"])} for t, s in out.items()}


@dag(
    dag_id="lmrec_table_maintenance",
    # Day D's upkeep starts at 06:00 UTC on D + 1, after the nightly run of D (00:00 UTC).
    schedule=CronDataIntervalTimetable("0 6 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one VACUUM at a time
    tags=["lmrec", "maintenance"],
    doc_md=__doc__,
    default_args={"retries": CFG.task_retries, "retry_delay": dt.timedelta(minutes=5), "on_failure_callback": FailureAlert()},
)
def lmrec_table_maintenance():
    maintain()


lmrec_table_maintenance()
