"""The one Spark session factory: delta-spark configured, master from SPARK_MASTER, defaults
sized for a 2-core, 24 GB machine. One session per process (getOrCreate)."""

from __future__ import annotations

import os

from jobs.io import TABLE_PROPERTIES
from jobs.settings import Settings


def spark_conf(cfg: Settings, app_name: str = "lmrec") -> dict[str, str]:
    """The Spark configuration lmrec uses, as a plain dict (also what spark-submit gets)."""
    conf = {
        "spark.app.name": app_name,
        "spark.master": cfg.spark_master,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.default.parallelism": str(cfg.shuffle_partitions),
        "spark.driver.memory": cfg.driver_memory,
        "spark.ui.enabled": str(cfg.spark_ui).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.jars.ivy": cfg.ivy_cache,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.sql.warehouse.dir": f"{cfg.home}/spark-warehouse",
        # Python workers are reused so the text encoder loads once per executor process.
        "spark.python.worker.reuse": "true",
    }
    for key, value in TABLE_PROPERTIES.items():
        conf["spark.databricks.delta.properties.defaults." + key.removeprefix("delta.")] = value
    if cfg.spark_master.startswith("local"):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    if cfg.executor_gpus:
        conf["spark.executor.resource.gpu.amount"] = str(cfg.executor_gpus)
        conf["spark.task.resource.gpu.amount"] = str(cfg.task_gpus or 1)
        if cfg.gpu_discovery_script:
            conf["spark.executor.resource.gpu.discoveryScript"] = cfg.gpu_discovery_script
    return conf


def get_spark(cfg: Settings | None = None, app_name: str = "lmrec"):
    """Return this process's SparkSession, creating it (with Delta) on first call."""
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    cfg = cfg or Settings.from_env()
    os.environ.setdefault("PYSPARK_PYTHON", _python())
    builder = SparkSession.builder
    for key, value in spark_conf(cfg, app_name).items():
        builder = builder.config(key, value)
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _python() -> str:
    import sys

    return sys.executable
