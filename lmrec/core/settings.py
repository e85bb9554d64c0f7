"""One settings object, read from the environment (prefix LMREC_, plus MLFLOW_TRACKING_URI and
SPARK_MASTER), with local defaults under one project-local data directory (``var/``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

TRUE_WORDS = ("1", "true", "yes", "on")  # how a boolean setting or option says yes
FALSE_WORDS = ("0", "false", "no", "off")


CHECKOUT = Path(__file__).resolve().parents[2]  # the repository root when lmrec runs from a checkout


def _default_home() -> Path:
    """``var/`` beside pyproject.toml in a source checkout, else ``~/.lmrec``."""
    if (CHECKOUT / "pyproject.toml").exists():
        return CHECKOUT / "var"
    return Path.home() / ".lmrec"


def _default_jobs_dir() -> Path:
    """``jobs/`` of the checkout lmrec runs from, else ``./jobs`` (an image's working directory)."""
    if (CHECKOUT / "jobs" / "ingest.py").exists():
        return CHECKOUT / "jobs"
    return Path.cwd() / "jobs"


@dataclass(frozen=True)
class Settings:
    home: str  # LMREC_HOME: the project-local data directory
    warehouse: str  # LMREC_WAREHOUSE: root of the Delta tables (path or s3a://...)
    source: str  # LMREC_SOURCE: default source directory (the demo catalogue)
    mlflow_tracking_uri: str  # MLFLOW_TRACKING_URI
    spark_master: str  # SPARK_MASTER
    spark_remote: str = ""  # LMREC_SPARK_REMOTE: sc://host:port of a long-lived Spark Connect server (`lmrec spark-server`) the jobs use instead of starting a JVM each; empty = a JVM per process
    jobs_dir: str = ""  # LMREC_JOBS_DIR: the folder of the job modules (default: the checkout's jobs/)
    database: str = "lmrec"  # LMREC_DATABASE: Spark SQL database the tables are registered in
    top_k: int = 10  # LMREC_TOP_K
    score_where: str = "auto"  # LMREC_SCORE_WHERE: auto|driver|tasks: where the scoring kernel runs (auto: the driver when Spark is local[...], else Spark tasks)
    incremental_score: bool = True  # LMREC_INCREMENTAL_SCORE: keep the top-k of users whose inputs did not change since D-1 (same model), merged with changed items
    text_model: str = ""  # LMREC_TEXT_MODEL: HF path or id; empty = packaged all-MiniLM-L6-v2
    device: str = "auto"  # LMREC_DEVICE: auto|cpu|cuda
    embed_batch_size: int = 64  # LMREC_EMBED_BATCH_SIZE
    embed_in_driver_max: int = 1024  # LMREC_EMBED_IN_DRIVER_MAX: at most this many texts to encode are encoded in the driver, without Spark tasks (0 = always in tasks)
    user_text_titles: int = 0  # LMREC_USER_TEXT_TITLES: titles of top-rated items added to user text (0 = none: they would leak held-out items into validation)
    quantize: bool = False  # LMREC_QUANTIZE: int8 dynamic quantization on CPU
    reject_threshold: float = 0.05  # LMREC_REJECT_THRESHOLD: max rejected fraction per file
    rating_min: float = 0.5  # LMREC_RATING_MIN
    rating_max: float = 5.0  # LMREC_RATING_MAX
    max_text_chars: int = 100_000  # LMREC_MAX_TEXT_CHARS: longer user/item texts are rejected
    shuffle_partitions: int = 8  # LMREC_SHUFFLE_PARTITIONS
    delta_snapshot_partitions: int = 1  # LMREC_DELTA_SNAPSHOT_PARTITIONS: tasks Delta rebuilds a table's state (its log) with; Delta's default, 50, spends seconds of tasks on every table a job opens
    driver_memory: str = "8g"  # LMREC_DRIVER_MEMORY
    spark_ui: bool = True  # LMREC_SPARK_UI
    ivy_dir: str = ""  # LMREC_IVY_DIR: cache of the Delta jars (default ~/.cache/lmrec/ivy)
    executor_gpus: float = 0  # LMREC_EXECUTOR_GPUS: spark.executor.resource.gpu.amount
    task_gpus: float = 0  # LMREC_TASK_GPUS: spark.task.resource.gpu.amount
    gpu_discovery_script: str = ""  # LMREC_GPU_DISCOVERY_SCRIPT
    gpu_image: str = ""  # LMREC_GPU_IMAGE: executor image of the GPU jobs on Kubernetes (the lmrec-gpu image)
    gpu_pod_template: str = ""  # LMREC_GPU_POD_TEMPLATE: executor pod template of the GPU jobs (GPU node pool)
    gate_tolerance: float = 0.005  # LMREC_GATE_TOLERANCE: NDCG@10 a candidate may lose
    train_epochs: int = 0  # LMREC_TRAIN_EPOCHS: 0 = the training config's default
    train_epoch_samples: int = 0  # LMREC_TRAIN_EPOCH_SAMPLES: ratings per epoch at most; 0 = config default (2M)
    optimize: bool = True  # LMREC_OPTIMIZE: compact D's recommendations partition after publishing
    train_processes: int = 1  # LMREC_TRAIN_PROCESSES: >1 refits with TorchDistributor (data parallel)
    train_als: bool = True  # LMREC_TRAIN_ALS: include the Spark ALS baselines in the train job
    retrain: str = "auto"  # LMREC_RETRAIN: auto (train only when the champion is stale) | always
    retrain_max_age_days: int = 7  # LMREC_RETRAIN_MAX_AGE_DAYS: auto retrains a champion this many days old
    retrain_min_new: float = 0.05  # LMREC_RETRAIN_MIN_NEW: auto retrains once new ratings reach this fraction of the champion's
    task_retries: int = 2  # LMREC_TASK_RETRIES: Airflow retries per task for transient errors (exponential backoff)
    alert_webhook: str = ""  # LMREC_ALERT_WEBHOOK: URL that gets a JSON POST when a task fails or a run misses its deadline
    alert_email: str = ""  # LMREC_ALERT_EMAIL: address(es) mailed through Airflow's smtp_default connection (comma-separated)
    run_deadline_hours: float = 0.0  # LMREC_RUN_DEADLINE_HOURS: alert when a run is not done this long after it was queued (0: no deadline; `airflow dags test` in Airflow 3.3.2 fails on a DAG with one)
    source_wait_minutes: int = 360  # LMREC_SOURCE_WAIT_MINUTES: how long a run waits for D's source files (0: check once)
    source_poke_seconds: int = 300  # LMREC_SOURCE_POKE_SECONDS: how often the wait looks again (the slot is freed between)
    spark_pool: str = "lmrec_spark"  # LMREC_SPARK_POOL: Airflow pool of the Spark jobs (``airflow pools set lmrec_spark 2 …``)
    snapshot_retention_days: int = 14  # LMREC_SNAPSHOT_RETENTION_DAYS: maintenance keeps this many dates of the intermediate tables (0: all)
    result_retention_days: int = 400  # LMREC_RESULT_RETENTION_DAYS: ... of recommendations and model_ledger (0: all)
    runner: str = "local"  # LMREC_RUNNER: local (in-process) | spark-submit (Airflow)
    s3_endpoint: str = ""  # LMREC_S3_ENDPOINT: S3-compatible endpoint for s3a:// (MinIO, moto); empty = AWS
    spark_packages: str = ""  # LMREC_SPARK_PACKAGES: extra Maven coordinates, comma-separated

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        home = Path(env.get("LMREC_HOME") or _default_home())
        values: dict = {
            "home": str(home),
            "warehouse": env.get("LMREC_WAREHOUSE") or str(home / "warehouse"),
            "source": env.get("LMREC_SOURCE") or str(home / "demo-source"),
            "mlflow_tracking_uri": env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}",
            "spark_master": env.get("SPARK_MASTER") or "local[*]",
            "jobs_dir": env.get("LMREC_JOBS_DIR") or str(_default_jobs_dir()),
        }
        for f in fields(cls):
            key = "LMREC_" + f.name.upper()
            if f.name in values or key not in env or env[key] == "":
                continue
            raw = env[key]
            if f.type in ("bool", bool):
                values[f.name] = raw.strip().lower() in TRUE_WORDS
            elif f.type in ("int", int):
                values[f.name] = int(raw)
            elif f.type in ("float", float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        return cls(**values)

    @property
    def ivy_cache(self) -> str:
        return self.ivy_dir or str(Path.home() / ".cache" / "lmrec" / "ivy")

    @property
    def mlflow_artifacts(self) -> str:
        return str(Path(self.home) / "mlartifacts")

    def table_path(self, name: str) -> str:
        return f"{self.warehouse.rstrip('/')}/{name}"
