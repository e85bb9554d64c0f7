"""Table upkeep: constraints on the contract tables, retention per table, OPTIMIZE and VACUUM.

Retention is relative to the logical date D of the maintenance run, never to the clock: with
``LMREC_SNAPSHOT_RETENTION_DAYS = N`` the intermediate snapshots (raw tables, quarantine, rating
matrix, embeddings, staging, run summary) keep the partitions D-N+1 .. D (and any later ones);
``recommendations`` and ``model_ledger`` keep ``LMREC_RESULT_RETENTION_DAYS``. A backfill of a date
whose snapshots were removed re-creates them from the source, as its first run did. VACUUM then
removes files no longer referenced and older than the tables' ``deletedFileRetentionDuration``
(7 days): time travel and running readers keep working within that window.
"""

from __future__ import annotations

import datetime as dt
import logging

from lmrec.core import schema as S
from lmrec.core.io import is_table, retry_on_conflict, table_properties
from lmrec.core.settings import Settings

log = logging.getLogger(__name__)

RESULT_TABLES = (S.RECOMMENDATIONS, S.MODEL_LEDGER)
SNAPSHOT_TABLES = (S.RATINGS_RAW, S.ITEMS_RAW, S.USER_TEXT_RAW, S.QUARANTINE, S.RATING_MATRIX, S.ITEM_EMBEDDINGS,
                   S.USER_EMBEDDINGS, S.RECOMMENDATIONS_STAGING, S.RUN_SUMMARY)
# The id maps are append-only and never renumbered: nothing to expire.
# Constraints Delta enforces on every later write (a violating write fails and commits nothing).
# NOT NULL as CHECKs: Delta cannot turn an existing nullable column non-nullable. One CHECK per
# table for all its required columns: each ADD CONSTRAINT is a scan and a commit of its own (eight
# took ~30 s of a first night's validate); a violation's message lists the columns' values.
NOT_NULL = {S.RECOMMENDATIONS: (S.COL_RUN_DATE, S.COL_USER, S.COL_RANK, S.COL_ITEM, S.COL_SCORE, S.COL_MODEL_VERSION),
            S.MODEL_LEDGER: (S.COL_RUN_DATE, S.COL_DECISION)}  # model_version, data_cutoff: null = popularity
CHECKS = {table: {"required_not_null": " AND ".join(f"{c} IS NOT NULL" for c in cols)} for table, cols in NOT_NULL.items()}
CHECKS[S.RECOMMENDATIONS].update({"rank_within_k": f"{S.COL_RANK} >= 1 AND {S.COL_RANK} <= {S.MAX_K}",
                                  "score_finite": f"NOT isnan({S.COL_SCORE}) AND abs({S.COL_SCORE}) < double('inf')"})


def ensure_constraints(spark, cfg: Settings, table: str) -> list[str]:
    """Add the CHECK constraints of ``table`` (NOT NULL columns, ranges) it lacks; returns their
    names."""
    path = cfg.table_path(table)
    if table not in CHECKS or not is_table(spark, cfg, table):
        return []

    def add() -> list[str]:
        props = table_properties(spark, cfg, table)  # delta-rs where it reads: no Spark query on most nights
        added = []
        for name, expr in CHECKS[table].items():
            if f"delta.constraints.{name.lower()}" not in props:
                spark.sql(f"ALTER TABLE delta.`{path}` ADD CONSTRAINT {name} CHECK ({expr})")
                added.append(name)
        return added

    added = retry_on_conflict(add, what=table)
    if added:
        log.info("%s: added constraints %s", table, ", ".join(added))
    return added


def expire(spark, path: str, table: str, run_date: dt.date, keep_days: int) -> int:
    """Delete the partitions of the table at ``path`` (``table``, partitioned by run_date) older
    than ``keep_days`` days before ``run_date``; returns rows deleted (the DELETE's metrics)."""
    if keep_days <= 0:
        return 0
    cutoff = run_date - dt.timedelta(days=keep_days - 1)
    before = _last_commit(spark, path)["version"]
    retry_on_conflict(lambda: spark.sql(f"DELETE FROM delta.`{path}` WHERE {S.COL_RUN_DATE} < DATE'{cutoff.isoformat()}'"),
                      what=table)
    last = _last_commit(spark, path)
    # A DELETE that matches no partition commits nothing (or a commit without removed rows).
    n = int((last["operationMetrics"] or {}).get("numDeletedRows", 0)) if last["version"] != before else 0
    if n:
        log.info("%s: removed %d rows of dates before %s (keep %d days)", table, n, cutoff, keep_days)
    return n


def _last_commit(spark, path: str):
    return spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()


def run(run_date: dt.date, *, cfg: Settings, spark, vacuum: bool = True) -> dict:
    """Constraints, retention, OPTIMIZE of D's partitions (recommendations Z-ordered by user) and
    VACUUM for every table; returns what each step did per table. SQL throughout, so a Spark
    Connect session does it as well."""
    out = {}
    for table in S.ALL_TABLES:
        if not is_table(spark, cfg, table):
            continue
        path = cfg.table_path(table)
        dated = S.COL_RUN_DATE in spark.read.format("delta").load(path).columns
        keep = cfg.result_retention_days if table in RESULT_TABLES else (
            cfg.snapshot_retention_days if table in SNAPSHOT_TABLES else 0)
        step = {"constraints_added": ensure_constraints(spark, cfg, table),
                "rows_expired": expire(spark, path, table, run_date, keep) if dated else 0}
        if dated:
            order = f" ZORDER BY ({S.COL_USER})" if table == S.RECOMMENDATIONS else ""
            retry_on_conflict(lambda: spark.sql(f"OPTIMIZE delta.`{path}` WHERE {S.COL_RUN_DATE} = "
                                                f"'{run_date.isoformat()}'{order}"), what=table)
        if vacuum:
            spark.sql(f"VACUUM delta.`{path}`")  # the table's deletedFileRetentionDuration
        out[table] = step
        log.info("maintenance %s %s: %s", run_date, table, step)
    return out
