"""The one Spark session factory: delta-spark configured, master from SPARK_MASTER, defaults
sized for a 2-core, 24 GB machine. One session per process (getOrCreate). The first session
resolves the Delta package through Ivy and lists the jars it got in the Ivy cache; later ones
load those jars directly (``spark.jars``), as long as each is still there.

With ``LMREC_SPARK_REMOTE`` set, a process gets a Spark Connect session on a long-lived server
(:func:`connect_server_args`, ``lmrec spark-server``) instead of starting a JVM of its own: the
server's JVM, its Delta classes and its warm code serve every job of every night. Code that must
work both ways asks ``lmrec.core.io.is_connect``, :func:`master` and :func:`parallelism`, never the
``SparkContext`` (a Connect session has none)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Sequence
from importlib import metadata
from urllib.parse import urlparse
from pathlib import Path

from lmrec.core.io import TABLE_PROPERTIES
from lmrec.core.settings import Settings


def _pyspark_dir() -> Path:
    import importlib.util

    return Path(importlib.util.find_spec("pyspark").origin).parent


def hadoop_version() -> str:
    """Hadoop version of the installed pyspark (from its hadoop-client-api jar)."""
    jars = sorted((_pyspark_dir() / "jars").glob("hadoop-client-api-*.jar"))
    if not jars:
        raise RuntimeError(f"no hadoop-client-api jar in {_pyspark_dir() / 'jars'}: is pyspark installed whole?")
    return jars[-1].name.removeprefix("hadoop-client-api-").removesuffix(".jar")


def spark_packages(cfg: Settings) -> list[str]:
    """Maven coordinates the jobs need: Delta for this pyspark, hadoop-aws (same Hadoop version as
    pyspark's) when the warehouse is on s3a://, and any in LMREC_SPARK_PACKAGES. Resolved once
    into the ivy cache (LMREC_IVY_DIR); an image resolves them at build time."""
    spark_mm = ".".join(metadata.version("pyspark").split(".")[:2])
    packages = [f"io.delta:delta-spark_{spark_mm}_2.13:{metadata.version('delta-spark')}"]
    if cfg.warehouse.startswith("s3a://") or cfg.s3_endpoint:
        packages.append(f"org.apache.hadoop:hadoop-aws:{hadoop_version()}")
    packages += [p.strip() for p in cfg.spark_packages.split(",") if p.strip()]
    return packages


def s3_conf(cfg: Settings) -> dict[str, str]:
    """s3a settings for an S3-compatible endpoint (path-style; TLS as the URL says). Credentials
    come from the standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, instance roles)."""
    if not cfg.s3_endpoint:
        return {}
    return {
        "spark.hadoop.fs.s3a.endpoint": cfg.s3_endpoint,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(cfg.s3_endpoint.startswith("https")).lower(),
        "spark.hadoop.fs.s3a.endpoint.region": os.environ.get("AWS_REGION", "us-east-1"),
    }


def spark_conf(cfg: Settings, app_name: str = "lmrec", *, gpu: bool = False) -> dict[str, str]:
    """The Spark configuration lmrec uses, as a plain dict (also what spark-submit gets). ``gpu``:
    a GPU job (embedding, training), which gets the GPU executor settings when any are set."""
    conf = {
        "spark.app.name": app_name,
        "spark.master": cfg.spark_master,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.default.parallelism": str(cfg.shuffle_partitions),
        # Delta replays a table's log into its state with this many tasks each time a job opens
        # it; Delta's 50 made a one-row replaceWhere 13 s and a MERGE 9 s on a fresh session on 2
        # cores, against 6 s and 3 s with 1 (BENCHMARKS.md, a job's fixed cost). A table of
        # millions of files in a cluster wants more.
        "spark.databricks.delta.snapshotPartitions": str(cfg.delta_snapshot_partitions),
        # VACUUM lists the table's directories with this many tasks (Spark's default: 10,000, which
        # made a VACUUM of a small table take 15-18 s instead of 5 s on 2 cores).
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(cfg.shuffle_partitions),
        "spark.driver.memory": cfg.driver_memory,
        "spark.ui.enabled": str(cfg.spark_ui).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.jars.ivy": cfg.ivy_cache,
        "spark.jars.packages": ",".join(spark_packages(cfg)),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.sql.warehouse.dir": f"{cfg.home}/spark-warehouse",
        # Python workers are reused so the text encoder loads once per executor process.
        "spark.python.worker.reuse": "true",
    }
    for key, value in TABLE_PROPERTIES.items():
        conf["spark.databricks.delta.properties.defaults." + key.removeprefix("delta.")] = value
    conf.update(s3_conf(cfg))
    if cfg.spark_master.startswith("local"):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    if gpu:  # the torch jobs: workers fork from a daemon that has torch and transformers imported
        conf["spark.python.daemon.module"] = "lmrec.core.spark_daemon"
    if gpu and cfg.executor_gpus:
        conf["spark.executor.resource.gpu.amount"] = str(cfg.executor_gpus)
        conf["spark.task.resource.gpu.amount"] = str(cfg.task_gpus or 1)
        if cfg.gpu_discovery_script:
            conf["spark.executor.resource.gpu.discoveryScript"] = cfg.gpu_discovery_script
        if cfg.spark_master.startswith("k8s://"):
            conf["spark.executor.resource.gpu.vendor"] = "nvidia.com"
        if cfg.gpu_image:
            conf["spark.kubernetes.executor.container.image"] = cfg.gpu_image
        if cfg.gpu_pod_template:
            conf["spark.kubernetes.executor.podTemplateFile"] = cfg.gpu_pod_template
    return conf


def get_spark(cfg: Settings | None = None, app_name: str = "lmrec", *, gpu: bool = False):
    """Return this process's SparkSession, creating it (with Delta) on first call."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    cfg = cfg or Settings.from_env()
    if cfg.spark_remote:
        return connect_session(cfg)
    os.environ.setdefault("PYSPARK_PYTHON", _python())
    from filelock import FileLock

    base = spark_conf(cfg, app_name, gpu=gpu)
    conf, manifest, listed = with_listed_jars(cfg, base)
    if listed:  # resolved by an earlier session: the jar files themselves, no Ivy resolution (~5 s)
        spark = _builder(SparkSession, conf).getOrCreate()
    else:
        # The JVM resolves spark.jars.packages into the shared Ivy cache as it starts; two jobs doing
        # that at once (a backfill's parallel runs on a fresh machine) corrupt each other's downloads.
        Path(cfg.ivy_cache).mkdir(parents=True, exist_ok=True)
        with FileLock(str(Path(cfg.ivy_cache) / ".lmrec-resolve.lock")):
            conf, manifest, listed = with_listed_jars(cfg, base)  # the job we waited for may have listed them
            spark = _builder(SparkSession, conf).getOrCreate()
            if not listed:
                _write_manifest(manifest, spark.sparkContext.getConf().get("spark.jars", ""))
    spark.sparkContext.setLogLevel("ERROR")
    import delta.exceptions  # noqa: F401  (Delta's conflicts now raise as delta.exceptions classes)

    return spark


CONNECT_PORT = 15002  # Spark Connect's default port


def connect_session(cfg: Settings):
    """A Spark Connect session on the server at ``cfg.spark_remote`` (``sc://host:port``); a
    server that does not answer stops the job with the address and what to do, at once (the
    client's own retries would wait minutes)."""
    from pyspark.sql import SparkSession

    url = urlparse(cfg.spark_remote)
    if url.scheme != "sc" or not url.hostname:
        raise ValueError(f"LMREC_SPARK_REMOTE must look like sc://host:port, got {cfg.spark_remote!r}")
    try:
        socket.create_connection((url.hostname, url.port or CONNECT_PORT), timeout=10).close()
    except OSError as exc:
        raise ConnectionError(
            f"no Spark Connect server answers at {cfg.spark_remote} ({exc.strerror or type(exc).__name__}); "
            "start one with `lmrec spark-server`, or unset LMREC_SPARK_REMOTE to start Spark in this process") from None
    import warnings

    import delta.exceptions  # noqa: F401

    # The server's plan warnings arrive as Python warnings here; a session of our own logs them at
    # WARN, below the ERROR level lmrec sets (the index's one global window is on purpose).
    warnings.filterwarnings("ignore", message="WARN WindowExpression: No Partition Defined", category=UserWarning)
    return SparkSession.builder.remote(cfg.spark_remote).getOrCreate()


def parse_conf(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` Spark settings (``lmrec spark-server --conf``) as a dict; ValueError naming the
    bad one: not ``spark.``-prefixed ``KEY=VALUE``, or a listening setting (``--host``/``--port``)."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.startswith("spark.") or not value:
            raise ValueError(f"--conf {pair!r}: expected spark.KEY=VALUE")
        if key.startswith("spark.connect.grpc.binding."):
            raise ValueError(f"--conf {key}: use --host and --port")
        out[key] = value
    return out


def connect_server_args(cfg: Settings, *, host: str = "127.0.0.1", port: int = CONNECT_PORT,
                        extra: dict[str, str] | None = None) -> list[str]:
    """The spark-submit command of a Spark Connect server with lmrec's configuration (Delta, the
    master, the torch jobs' Python daemon, the table defaults), listening on ``host:port``, with
    ``extra`` settings last (in Kubernetes: the server pod's name and address). It has no
    authentication: bind it to an address only the jobs reach."""
    conf, _, _ = with_listed_jars(cfg, spark_conf(cfg, "lmrec-spark-server", gpu=True))
    conf.update(extra or {})
    conf["spark.connect.grpc.binding.address"] = host
    conf["spark.connect.grpc.binding.port"] = str(port)
    args = [str(_pyspark_dir() / "bin" / "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer"]
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    return args + ["spark-internal"]


def wait_for_server(url: str, *, proc=None, timeout: float = 180.0) -> float:
    """Wait until the Spark Connect server at ``url`` (``sc://host:port``) accepts connections;
    the seconds waited. Raises ConnectionError naming the URL when ``proc`` (the server's
    ``subprocess.Popen``, if this process started it) exits first or ``timeout`` passes."""
    import time

    parsed = urlparse(url)
    t0 = time.monotonic()
    while True:
        try:
            socket.create_connection((parsed.hostname, parsed.port or CONNECT_PORT), timeout=1).close()
            return time.monotonic() - t0
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise ConnectionError(f"the Spark Connect server for {url} exited with code {proc.returncode} "
                                      "before it listened (see its log)") from None
            if time.monotonic() - t0 > timeout:
                raise ConnectionError(f"no Spark Connect server listened at {url} within {timeout:.0f} s") from None
            time.sleep(0.5)


def free_port() -> int:
    """A TCP port free on loopback now (for a server about to start; the tests' servers too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def spark_server(env: dict, log: Path, *, argv: Sequence[str] = ("spark-server",), port: int | None = None,
                 timeout: float = 180.0):
    """``lmrec <argv>`` (a Spark Connect server: ``lmrec spark-server`` and its flags) on ``port``
    (a free one by default) for the ``with`` block, as a process group of its own with ``env`` and
    its output appended to ``log``. Yields ``(url, proc)`` once it listens; on exit the group gets
    SIGTERM, and SIGKILL after 60 s. A server that does not listen within ``timeout`` is stopped
    and raises ConnectionError with the end of its log (Spark's output: no user data). A Connect
    session opened in this process must be stopped inside the block: once the server is gone, an
    open session's client retries at interpreter exit instead of exiting."""
    import signal
    import subprocess
    import sys

    port = free_port() if port is None else port
    argv = list(argv)
    if "--port" in argv:
        argv[argv.index("--port") + 1] = str(port)
    else:
        argv += ["--port", str(port)]
    url = f"sc://127.0.0.1:{port}"
    with Path(log).open("a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lmrec.cli", *argv], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            try:
                wait_for_server(url, proc=proc, timeout=timeout)
            except ConnectionError as exc:
                out.flush()
                raise ConnectionError(f"{exc}; the end of {log}:\n{Path(log).read_text(errors='replace')[-3000:]}") from None
            yield url, proc
        finally:
            with contextlib.suppress(ProcessLookupError):  # the JVM is a child: the whole group goes
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def master(spark) -> str:
    """The session's master URL (``local[*]``, ``spark://…``), either kind of session."""
    return spark.conf.get("spark.master")


def parallelism(spark) -> int:
    """Tasks a stage gets by default (``spark.default.parallelism``; the cores when unset)."""
    return int(spark.conf.get("spark.default.parallelism", None) or os.cpu_count() or 1)


def _builder(session_cls, conf: dict[str, str]):
    builder = session_cls.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder


def jars_manifest(cfg: Settings, packages: str) -> Path:
    """Where the jar files ``packages`` resolved to are listed (in the Ivy cache, one file per
    package list)."""
    import hashlib

    return Path(cfg.ivy_cache) / f"lmrec-jars-{hashlib.sha256(packages.encode()).hexdigest()[:16]}.txt"


def with_listed_jars(cfg: Settings, conf: dict[str, str]) -> tuple[dict[str, str], Path, bool]:
    """``conf`` with ``spark.jars.packages`` swapped for the jar files an earlier session resolved
    them to (no Ivy resolution at start), when they are all still there; the manifest that lists
    them, and whether the swap was made."""
    manifest = jars_manifest(cfg, conf["spark.jars.packages"])
    jars = resolved_jars(manifest)
    if not jars:
        return conf, manifest, False
    conf = {k: v for k, v in conf.items() if k != "spark.jars.packages"}
    return {**conf, "spark.jars": ",".join(jars)}, manifest, True


def resolved_jars(manifest: Path) -> list[str] | None:
    """The jars an earlier session resolved, when the manifest and every jar in it exist."""
    if not manifest.exists():
        return None
    jars = [j for j in manifest.read_text().split() if j]
    if not jars or not all(Path(j.removeprefix("file://")).exists() for j in jars):
        return None
    return jars


def _write_manifest(manifest: Path, jars: str) -> None:
    listed = [j for j in jars.split(",") if j]
    if listed:
        tmp = manifest.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("\n".join(listed) + "\n")
        tmp.replace(manifest)  # atomic: a parallel job reads the old list or the new one


def _python() -> str:
    import sys

    return sys.executable
