"""ingest: source files for date D -> bronze tables ``ratings_raw``, ``items_raw``,
``user_text_raw`` (partition D) and every rejected row in ``quarantine`` with its reason.

Nothing is lost: per file, rows in = accepted + rejected, and the job checks it.
"""

from __future__ import annotations

import datetime as dt
import logging

from lmrec.core import schema as S
from lmrec.core.errors import RejectionRateError, SourceError
from lmrec.core.io import find_source_file, path_exists, write_partition
from lmrec.core.settings import Settings
from lmrec.data.source import BRONZE_TABLE, FileCounts, build_ingest, read_source

__all__ = ["run", "RejectionRateError", "FileCounts"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------

def run(run_date: dt.date, *, cfg: Settings, spark, source: str | None = None) -> list[FileCounts]:
    """Ingest ``source`` for ``run_date``; returns the reconciled counts per file."""
    source = source or cfg.source
    if not path_exists(spark, source):
        raise SourceError(f"source directory {source} does not exist")
    raw = {}
    for stem in S.SOURCE_FILES:
        found = find_source_file(spark, source, stem)
        if found is None:
            if stem in S.OPTIONAL_SOURCES:
                continue
            raise SourceError(f"source file {source.rstrip('/')}/{stem}.csv (or .parquet) not found")
        path, fmt = found
        frame = read_source(spark, path, fmt, stem)
        raw[stem] = (path, frame)
    try:
        return _validate_and_write(spark, cfg, run_date, raw)
    finally:
        # Cached frames must not outlive the run: a later run over the same path would
        # otherwise match the cached plan and see yesterday's file.
        spark.catalog.clearCache()


def _validate_and_write(spark, cfg: Settings, run_date: dt.date, raw: dict) -> list[FileCounts]:
    from functools import reduce

    results = build_ingest(raw, cfg=cfg)

    counts = []
    for stem, (_, _, validated) in results.items():
        path, frame = raw[stem]
        rows_in = frame.count()
        # Accepted and rejected counted in one pass over the validated rows (reason null = accepted).
        by_reason = {r[S.COL_REASON]: r["count"] for r in validated.groupBy(S.COL_REASON).count().collect()}
        n_acc = by_reason.pop(None, 0)
        c = FileCounts(path, rows_in, n_acc, by_reason)
        if not c.reconciles:
            raise RuntimeError(f"{path}: counts do not reconcile: {rows_in} in, {n_acc} accepted, {c.rejected_total} rejected")
        log.info("ingest %s: %d rows in = %d accepted + %d rejected %s", path, rows_in, n_acc, c.rejected_total, by_reason or "")
        counts.append(c)

    # Only the files with rejections are validated again for the quarantine (another pass over
    # each); with none, D's quarantine partition is replaced by an empty one.
    rejected = [rej for c, (_, rej, _) in zip(counts, results.values()) if c.rejected_total]
    quarantine = (reduce(lambda a, b: a.unionByName(b), rejected) if rejected
                  else next(iter(results.values()))[1].limit(0))
    write_partition(quarantine, cfg, S.QUARANTINE, run_date)
    bad = [c for c in counts if c.rows_in and c.rejected_total / c.rows_in > cfg.reject_threshold]
    if bad:
        detail = "; ".join(f"{c.source_file}: {c.rejected_total}/{c.rows_in} rejected {c.rejected}" for c in bad)
        raise RejectionRateError(
            f"rejection rate above LMREC_REJECT_THRESHOLD={cfg.reject_threshold:.2%}: {detail}. "
            f"Rejected rows are in the {S.QUARANTINE} table (run_date={run_date}); nothing else was published.")
    for stem, (accepted, _, _) in results.items():
        write_partition(accepted, cfg, BRONZE_TABLE[stem], run_date)
    if "user_text" not in results:
        # No user text this night: an empty partition, so later jobs see "none" rather than stale data.
        from pyspark.sql import types as T
        empty = spark.createDataFrame([], T.StructType([
            T.StructField(S.COL_USER, T.StringType()), T.StructField(S.COL_ITEM, T.StringType()),
            T.StructField(S.COL_TEXT, T.StringType()), T.StructField(S.COL_SUMMARY, T.StringType()),
            T.StructField(S.COL_EVENT_TS, T.TimestampType())]))
        write_partition(empty, cfg, S.USER_TEXT_RAW, run_date)
    return counts


def main(argv: list[str] | None = None) -> None:
    from lmrec.pipeline import job_entry

    job_entry("ingest", argv)


if __name__ == "__main__":
    main()
