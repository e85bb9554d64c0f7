"""All Delta and source-file I/O. Builders never touch storage; jobs call these."""

from __future__ import annotations

import datetime as dt
import logging
import time

from lmrec.core import schema as S
from lmrec.core.errors import SourceError
from lmrec.core.settings import Settings

log = logging.getLogger(__name__)


def path_exists(spark, path: str) -> bool:
    """True when ``path`` exists: a local path asked of this machine, others (s3a://, hdfs://...) of
    Spark's Hadoop file system (through the JVM, or a listing query on a Connect session)."""
    import os

    if "://" not in path or path.startswith("file:"):
        return os.path.exists(path.removeprefix("file://").removeprefix("file:"))
    if is_connect(spark):
        from pyspark.errors import AnalysisException

        try:
            # Only the path column: the binaryFile source then reads no file's bytes.
            spark.read.format("binaryFile").load(path).select("path").limit(1).collect()
            return True
        except AnalysisException:
            return False
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return bool(fs.exists(hpath))


def is_connect(spark) -> bool:
    """Whether ``spark`` is a Spark Connect session (no SparkContext, no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def find_source_file(spark, source: str, stem: str) -> tuple[str, str] | None:
    """Return (path, format) of ``<source>/<stem>.csv|.parquet``, or None when absent."""
    for fmt in ("parquet", "csv"):
        path = f"{source.rstrip('/')}/{stem}.{fmt}"
        if path_exists(spark, path):
            return path, fmt
    return None


def is_table(spark, cfg: Settings, name: str) -> bool:
    """Whether table ``name`` exists: asked of delta-rs where it reads the warehouse (2 ms, no
    JVM work; Spark's ``isDeltaTable`` takes 1.4 s on a fresh session), else of Spark."""
    if _delta_rs_reads(cfg, name):
        from deltalake import DeltaTable as RsTable

        return RsTable.is_deltatable(delta_uri(cfg, name), storage_options=storage_options(cfg))
    from pyspark.errors import AnalysisException

    try:  # SQL, not delta-spark's DeltaTable: the same on a Connect session
        return spark.sql(f"DESCRIBE DETAIL delta.`{cfg.table_path(name)}`").first()["format"] == "delta"
    except AnalysisException:
        return False


def read_table(spark, cfg: Settings, name: str, run_date: dt.date | None = None):
    """The Delta table ``name`` (only partition ``run_date`` when given)."""
    from pyspark.sql import functions as F

    if not is_table(spark, cfg, name):
        raise SourceError(f"table {name!r} does not exist at {cfg.table_path(name)}; run the job that writes it first")
    df = spark.read.format("delta").load(cfg.table_path(name))
    if run_date is not None:
        df = df.where(F.col(S.COL_RUN_DATE) == F.lit(run_date))
    return df


def delta_uri(cfg: Settings, name: str) -> str:
    """Table ``name``'s location as delta-rs names it (``s3://`` for Hadoop's ``s3a://``)."""
    path = cfg.table_path(name)
    return "s3://" + path[len("s3a://"):] if path.startswith("s3a://") else path


def storage_options(cfg: Settings) -> dict[str, str] | None:
    """delta-rs options for an S3-compatible endpoint (credentials from the AWS_* environment)."""
    if not cfg.s3_endpoint:
        return None
    return {"AWS_ENDPOINT_URL": cfg.s3_endpoint, "AWS_ALLOW_HTTP": str(cfg.s3_endpoint.startswith("http:")).lower()}


def read_arrow(spark, cfg: Settings, name: str, run_date: dt.date | None = None, columns: list[str] | None = None):
    """Table ``name`` (partition ``run_date`` when given, only ``columns``) read into the driver
    as Arrow, and the table version read: ``(pyarrow.Table, version)``.

    Local and ``s3a://`` warehouses are read by delta-rs, multi-threaded and without the JVM
    (a 25M-rating partition: 7.5 s against 37.5 s with Spark's ``toPandas``,
    ``benchmarks/driver_read.py``); the version is the one those files belong to. Other file
    systems go through Spark's ``toArrow``."""
    if not is_table(spark, cfg, name):
        raise SourceError(f"table {name!r} does not exist at {cfg.table_path(name)}; run the job that writes it first")
    if _delta_rs_reads(cfg, name):
        table = _rs_table(cfg, name)
        where = [(S.COL_RUN_DATE, "=", run_date)] if run_date is not None else None  # prunes to D's files
        return table.to_pyarrow_table(filters=where, columns=columns), int(table.version())
    df = read_table(spark, cfg, name, run_date)
    version = table_version(spark, cfg, name)
    return (df.select(*columns) if columns else df).toArrow(), version


def _rs_table(cfg: Settings, name: str, version: int | None = None):
    """delta-rs's handle on table ``name`` (its latest version, or ``version``)."""
    from deltalake import DeltaTable

    return DeltaTable(delta_uri(cfg, name), version=version, storage_options=storage_options(cfg))


def _delta_rs_reads(cfg: Settings, name: str) -> bool:
    """Whether delta-rs reads table ``name`` (a local or ``s3a://`` warehouse)."""
    path = cfg.table_path(name)
    return "://" not in path or path.startswith(("s3a://", "file:"))


def partition_files(cfg: Settings, name: str, run_date: dt.date, version: int) -> list[str] | None:
    """The data files of table ``name``'s partition ``run_date`` in table version ``version``,
    sorted. lmrec replaces a partition by writing new files (``replaceWhere``), never edits one in
    place, so equal lists mean equal rows, whatever other dates' runs (a backfill beside this
    one) committed to the table since. None where delta-rs does not read the warehouse."""
    if not _delta_rs_reads(cfg, name):
        return None
    table = _rs_table(cfg, name, version)
    return sorted(table.file_uris(file_pruning_predicate=[(S.COL_RUN_DATE, "=", run_date.isoformat())]))


def table_version(spark, cfg: Settings, name: str) -> int | None:
    if not is_table(spark, cfg, name):
        return None
    if _delta_rs_reads(cfg, name):
        return int(_rs_table(cfg, name).version())
    return int(spark.sql(f"DESCRIBE HISTORY delta.`{cfg.table_path(name)}` LIMIT 1").first()["version"])


def table_properties(spark, cfg: Settings, name: str) -> dict[str, str]:
    """Table ``name``'s properties (``delta.*`` settings, ``delta.constraints.*``) at its latest
    version: from the log through delta-rs where it reads the warehouse, else Spark's DESCRIBE DETAIL."""
    if _delta_rs_reads(cfg, name):
        return dict(_rs_table(cfg, name).metadata().configuration)
    return dict(spark.sql(f"DESCRIBE DETAIL delta.`{cfg.table_path(name)}`").first()["properties"] or {})


# Set on every table lmrec creates (through spark.databricks.delta.properties.defaults.*).
TABLE_PROPERTIES = {
    # Keep 30 days of log and removed files: enough for time travel over a month of nights and
    # for readers of yesterday's snapshot; VACUUM removes what is older.
    "delta.logRetentionDuration": "interval 30 days",
    "delta.deletedFileRetentionDuration": "interval 7 days",
}


def is_concurrency_error(exc: BaseException) -> bool:
    """True for Delta's optimistic-concurrency conflicts (another run committed first), including
    the race of two runs creating the same table (protocol or metadata changed): delta-spark's
    exception classes (``delta.exceptions``), which it raises in place of the JVM's."""
    import delta.exceptions as E

    conflicts = (E.DeltaConcurrentModificationException, E.ConcurrentWriteException, E.MetadataChangedException,
                 E.ProtocolChangedException, E.ConcurrentAppendException, E.ConcurrentDeleteReadException,
                 E.ConcurrentDeleteDeleteException, E.ConcurrentTransactionException)
    # On a Connect session the server's exception arrives as pyspark's, with Delta's error class.
    condition = getattr(exc, "getCondition", lambda: None)() or ""
    return isinstance(exc, conflicts) or condition.startswith(CONFLICT_CONDITIONS)


CONFLICT_CONDITIONS = ("DELTA_CONCURRENT", "DELTA_METADATA_CHANGED", "DELTA_PROTOCOL_CHANGED")


def retry_on_conflict(commit, *, what: str, retries: int = 5, also=None):
    """Run ``commit()`` until it succeeds, retrying Delta concurrency conflicts (and errors for
    which ``also(exc)`` is true) up to ``retries`` times with a growing pause; returns its result.
    ``commit`` must recompute what it writes from the table as it is now."""
    for attempt in range(retries):
        try:
            return commit()
        except Exception as exc:  # Delta raises its conflicts as Spark/Py4J exceptions
            if not (is_concurrency_error(exc) or (also is not None and also(exc))) or attempt == retries - 1:
                raise
            log.warning("%s: concurrent commit (%s), retrying (%d)", what, type(exc).__name__, attempt + 1)
            time.sleep(0.2 * (attempt + 1))


def write_partition(df, cfg: Settings, name: str, run_date: dt.date, *, where: str | None = None,
                    retries: int = 5) -> None:
    """Atomically replace partition ``run_date`` of table ``name`` with ``df`` (only its rows
    matching ``where`` too, when given: e.g. one job's row of the date).

    One Delta commit with ``replaceWhere``: a rerun replaces the date exactly, other dates are
    untouched, readers see the old or the new partition, never half of one. Concurrent runs for
    other dates only conflict on the first commit that creates the table; those are retried.
    """
    from pyspark.sql import functions as F

    df = df.withColumn(S.COL_RUN_DATE, F.lit(run_date).cast("date"))
    replace = f"{S.COL_RUN_DATE} = '{run_date.isoformat()}'" + (f" AND ({where})" if where else "")
    path = cfg.table_path(name)
    retry_on_conflict(lambda: (df.write.format("delta").mode("overwrite").option("replaceWhere", replace)
                               .partitionBy(S.COL_RUN_DATE).save(path)),
                      what=name, retries=retries, also=lambda exc: "already exists" in str(exc).lower())


def table_counts(cfg: Settings, spark, run_date: dt.date | None = None) -> list[tuple[str, str, int]]:
    """(table, path, rows) for every existing table (rows of ``run_date`` where partitioned)."""
    out = []
    for name in S.ALL_TABLES:
        if not is_table(spark, cfg, name):
            continue
        df = read_table(spark, cfg, name)
        if run_date is not None and S.COL_RUN_DATE in df.columns:
            df = read_table(spark, cfg, name, run_date)
        out.append((name, cfg.table_path(name), df.count()))
    return out


def register_tables(spark, cfg: Settings) -> list[str]:
    """Register every existing table under the ``cfg.database`` database; returns their names."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.database}")
    names = []
    for name in S.ALL_TABLES:
        if is_table(spark, cfg, name):
            spark.sql(f"CREATE TABLE IF NOT EXISTS {cfg.database}.{name} USING DELTA LOCATION '{cfg.table_path(name)}'")
            names.append(name)
    return names


def _jsonable(obj):
    """A job's result as JSON-able data (dataclasses, dates, numpy scalars)."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if hasattr(obj, "item"):  # numpy scalar
        return obj.item()
    return str(obj)


def record_run(spark, cfg: Settings, run_date: dt.date, job: str, *, status: str, seconds: float,
               result=None, error: BaseException | None = None) -> None:
    """Replace job ``job``'s row of ``run_date`` in ``run_summary``: its status, seconds, the model
    version it used or made, and its result (counts, decisions) as JSON. The error's class only,
    never its text (which could quote a source row)."""
    import json

    from pyspark.sql import types as T

    detail = _jsonable(result)
    version = None
    if isinstance(detail, dict):
        version = next((str(detail[k]) for k in ("model_version", "version", "candidate_version")
                        if detail.get(k) not in (None, "")), None)
    schema = T.StructType([T.StructField(S.COL_RUN_DATE, T.DateType()), T.StructField("job", T.StringType()),
                           T.StructField("status", T.StringType()), T.StructField("seconds", T.DoubleType()),
                           T.StructField(S.COL_MODEL_VERSION, T.StringType()), T.StructField("error", T.StringType()),
                           T.StructField("detail", T.StringType())])
    row = (run_date, job, status, round(float(seconds), 3), version,
           type(error).__name__ if error is not None else None, json.dumps(detail, sort_keys=True))
    write_partition(spark.createDataFrame([row], schema), cfg, S.RUN_SUMMARY, run_date, where=f"job = '{job}'")

