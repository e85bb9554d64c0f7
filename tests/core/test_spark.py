"""The Spark configuration the jobs get: Delta for the installed pyspark, hadoop-aws for s3a://,
GPU resources and the torch daemon only for the GPU jobs."""

from __future__ import annotations

from importlib import metadata

from lmrec.core.spark import _write_manifest, hadoop_version, jars_manifest, resolved_jars, spark_conf
from tests.conftest import make_cfg


def test_local_default_has_delta_and_nothing_else(tmp_path):
    conf = spark_conf(make_cfg(tmp_path))
    spark_mm = ".".join(metadata.version("pyspark").split(".")[:2])
    assert conf["spark.jars.packages"] == f"io.delta:delta-spark_{spark_mm}_2.13:{metadata.version('delta-spark')}"
    assert not any("s3a" in k or ".gpu." in k for k in conf)
    assert "spark.python.daemon.module" not in conf
    assert conf["spark.sql.session.timeZone"] == "UTC"
    # Delta's log replay in one task, not Delta's 50 (seconds per table opened on 2 cores)
    assert conf["spark.databricks.delta.snapshotPartitions"] == "1"
    assert spark_conf(make_cfg(tmp_path, LMREC_DELTA_SNAPSHOT_PARTITIONS="16"))["spark.databricks.delta.snapshotPartitions"] == "16"


def test_s3a_warehouse_adds_hadoop_aws_of_pysparks_hadoop_and_endpoint(tmp_path):
    cfg = make_cfg(tmp_path, LMREC_WAREHOUSE="s3a://bucket/wh", LMREC_S3_ENDPOINT="http://127.0.0.1:9000")
    conf = spark_conf(cfg)
    assert f"org.apache.hadoop:hadoop-aws:{hadoop_version()}" in conf["spark.jars.packages"].split(",")
    assert hadoop_version().count(".") == 2
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    # AWS itself: hadoop-aws, but no endpoint override
    aws = spark_conf(make_cfg(tmp_path, LMREC_WAREHOUSE="s3a://bucket/wh"))
    assert "hadoop-aws" in aws["spark.jars.packages"] and "spark.hadoop.fs.s3a.endpoint" not in aws


def test_gpu_settings_reach_only_gpu_jobs(tmp_path):
    cfg = make_cfg(tmp_path, LMREC_EXECUTOR_GPUS="1", LMREC_TASK_GPUS="0.5", LMREC_GPU_DISCOVERY_SCRIPT="/d.sh",
                   SPARK_MASTER="k8s://https://k8s", LMREC_GPU_IMAGE="lmrec-gpu:1", LMREC_GPU_POD_TEMPLATE="/t.yaml",
                   LMREC_SPARK_PACKAGES="org.example:extra:1.0")
    gpu, cpu = spark_conf(cfg, gpu=True), spark_conf(cfg, gpu=False)
    assert gpu["spark.executor.resource.gpu.amount"] == "1.0" and gpu["spark.task.resource.gpu.amount"] == "0.5"
    assert gpu["spark.executor.resource.gpu.discoveryScript"] == "/d.sh"
    assert gpu["spark.executor.resource.gpu.vendor"] == "nvidia.com"
    assert gpu["spark.kubernetes.executor.container.image"] == "lmrec-gpu:1"
    assert gpu["spark.kubernetes.executor.podTemplateFile"] == "/t.yaml"
    assert gpu["spark.python.daemon.module"] == "lmrec.core.spark_daemon"
    assert not any(".gpu." in k or "kubernetes" in k or "daemon" in k for k in cpu)
    assert cpu["spark.jars.packages"].endswith(",org.example:extra:1.0")


def test_resolved_jars_are_reused_only_while_every_jar_exists(tmp_path):
    cfg = make_cfg(tmp_path, LMREC_IVY_DIR=str(tmp_path / "ivy"))
    (tmp_path / "ivy").mkdir()
    manifest = jars_manifest(cfg, "io.delta:delta-spark_4.2_2.13:4.4.0")
    assert manifest != jars_manifest(cfg, "io.delta:delta-spark_4.2_2.13:4.4.0,org.apache.hadoop:hadoop-aws:3.5.0")
    assert resolved_jars(manifest) is None  # nothing resolved yet: Ivy resolves
    jars = [tmp_path / "ivy" / "a.jar", tmp_path / "ivy" / "b.jar"]
    for j in jars:
        j.write_bytes(b"PK")
    _write_manifest(manifest, ",".join(f"file://{j}" for j in jars))
    assert resolved_jars(manifest) == [f"file://{j}" for j in jars]
    jars[1].unlink()  # the cache was cleaned: resolve again rather than start without a jar
    assert resolved_jars(manifest) is None
    _write_manifest(manifest, "")  # a session that listed no jars leaves the manifest as it was
    assert manifest.read_text().count(".jar") == 2


def test_listed_jars_replace_the_packages_only_while_they_exist(tmp_path):
    from lmrec.core.spark import spark_conf, with_listed_jars

    cfg = make_cfg(tmp_path, LMREC_IVY_DIR=str(tmp_path / "ivy"))
    (tmp_path / "ivy").mkdir()
    conf = spark_conf(cfg)
    same, manifest, listed = with_listed_jars(cfg, conf)
    assert not listed and same == conf and manifest == jars_manifest(cfg, conf["spark.jars.packages"])
    jar = tmp_path / "ivy" / "delta.jar"
    jar.write_bytes(b"PK")
    _write_manifest(manifest, f"file://{jar}")
    swapped, _, listed = with_listed_jars(cfg, conf)
    assert listed and swapped["spark.jars"] == f"file://{jar}" and "spark.jars.packages" not in swapped
    assert "spark.jars.packages" in conf  # the caller's conf is not changed
    assert {k: v for k, v in swapped.items() if k != "spark.jars"} == {k: v for k, v in conf.items() if k != "spark.jars.packages"}


def test_a_start_that_waited_for_the_resolve_lock_uses_the_jars_listed_meanwhile(tmp_path, monkeypatch):
    """Two cold starts at once (a backfill's parallel runs on a fresh machine): the second waits on
    the resolve lock while the first resolves Delta's packages and lists the jars; it then starts
    from those jar files instead of resolving again (and leaves the list as it is)."""
    import types

    import filelock
    from pyspark.sql import SparkSession

    from lmrec.core import spark as lspark

    ivy = tmp_path / "ivy"
    ivy.mkdir()
    cfg = make_cfg(tmp_path, LMREC_IVY_DIR=str(ivy))
    manifest = jars_manifest(cfg, spark_conf(cfg)["spark.jars.packages"])
    jar = ivy / "delta.jar"
    jar.write_bytes(b"PK")

    class OtherJobResolvedWhileWeWaited:  # the lock is granted once the first job has listed its jars
        def __init__(self, path):
            pass

        def __enter__(self):
            _write_manifest(manifest, f"file://{jar}")

        def __exit__(self, *exc):
            return False

    started = []

    def builder(_cls, conf):
        started.append(conf)
        context = types.SimpleNamespace(setLogLevel=lambda level: None,
                                        getConf=lambda: types.SimpleNamespace(get=lambda k, d="": "file:///elsewhere.jar"))
        return types.SimpleNamespace(getOrCreate=lambda: types.SimpleNamespace(sparkContext=context))

    monkeypatch.setattr(SparkSession, "getActiveSession", staticmethod(lambda: None))
    monkeypatch.setattr(filelock, "FileLock", OtherJobResolvedWhileWeWaited)
    monkeypatch.setattr(lspark, "_builder", builder)
    lspark.get_spark(cfg)
    (conf,) = started
    assert conf["spark.jars"] == f"file://{jar}" and "spark.jars.packages" not in conf
    assert manifest.read_text().split() == [f"file://{jar}"]
