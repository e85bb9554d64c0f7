"""Beyond one machine, for real: a Spark standalone cluster (a master and two workers started from
the installed pyspark on 127.0.0.1) running the jobs with the warehouse on an S3-compatible
object store (moto's server on loopback) through s3a:// (hadoop-aws), against the same jobs on
``local[2]`` with a local warehouse. The outputs must be the same."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmrec.core import schema as S
from tests.conftest import D3
from tests.infra.conftest import S3_KEYS

REPO = Path(__file__).resolve().parents[2]
JOBS = "ingest,rating_matrix,embed_items,embed_users,train,gate,score,validate"
pytestmark = pytest.mark.spark


def _start_jobs(home: Path, source: Path, jobs: str = JOBS, **env) -> subprocess.Popen:
    """Start ``jobs`` (default: every job) for D3 in one ``lmrec pipeline`` process (stderr appended
    to ``home/pipeline.log``)."""
    home.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, "LMREC_HOME": str(home), "LMREC_SPARK_UI": "0", "LMREC_SHUFFLE_PARTITIONS": "2",
            "LMREC_TRAIN_EPOCHS": "2", "LMREC_TRAIN_ALS": "0", "LMREC_OPTIMIZE": "0", "LMREC_DRIVER_MEMORY": "2g",
            "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_HOSTNAME": "127.0.0.1", **env}
    return subprocess.Popen([sys.executable, "-m", "lmrec.cli", "pipeline", "--date", str(D3), "--source", str(source),
                             "--jobs", jobs], env=full, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=(home / "pipeline.log").open("a"))


def _wait(proc: subprocess.Popen, home: Path) -> None:
    rc = proc.wait(timeout=1800)
    assert rc == 0, f"pipeline in {home} failed:\n{(home / 'pipeline.log').read_text()[-5000:]}"


def _table(uri: str, s3: str | None = None) -> pd.DataFrame:
    """Read a Delta table with delta-rs (an independent reader), from disk or from the S3 server."""
    from deltalake import DeltaTable

    opts = None
    if s3:
        opts = {"AWS_ENDPOINT_URL": s3, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    df = DeltaTable(uri, storage_options=opts).to_pandas()
    return df[df[S.COL_RUN_DATE].astype(str) == str(D3)] if S.COL_RUN_DATE in df.columns else df


def _completed_apps(status_url: str, wait_s: float = 60, want: int = 1) -> list[str]:
    """Names of the master's completed applications, once there are ``want`` or after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        with urllib.request.urlopen(status_url, timeout=5) as r:
            names = [a["name"] for a in json.load(r)["completedapps"]]
        if len(names) >= want or time.monotonic() > deadline:
            return names
        time.sleep(1)


def _compose_connect_server(log: Path, **env):
    """The compose stack's ``spark-connect`` service as a process group (a context manager yielding
    its URL and process): its entrypoint and flags read from ``infra/docker-compose.yml``, the port
    swapped for a free one."""
    import yaml

    from lmrec.core.spark import spark_server

    argv = list(yaml.safe_load((REPO / "infra" / "docker-compose.yml").read_text())["services"]["spark-connect"]["entrypoint"])
    assert argv[0] == "lmrec"
    full = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_HOSTNAME": "127.0.0.1", "LMREC_SPARK_UI": "0",
            "LMREC_SHUFFLE_PARTITIONS": "2", "LMREC_DRIVER_MEMORY": "3g", **env}
    return spark_server(full, log, argv=argv[1:], timeout=300)


# 8.5 of make test's 28 minutes: in the slow set (make test-all), like the production-parity test that
# runs the whole DAG on the same cluster.
@pytest.mark.slow
def test_standalone_cluster_on_object_storage_equals_local(tmp_path, demo_source, spark_cluster, s3_server):
    """Three runs (independent homes): on ``local[2]``, beside the two on the cluster (most of their
    time is JVM and Delta latency, not CPU); on the cluster with a driver of the jobs' own; then on
    the cluster through the compose stack's Spark Connect server (its flags read from
    docker-compose.yml), the jobs in two processes as tasks would run them."""
    s3 = {"LMREC_S3_ENDPOINT": s3_server, **S3_KEYS}
    local_run = _start_jobs(tmp_path / "local", demo_source, SPARK_MASTER="local[2]")
    cluster_run = _start_jobs(tmp_path / "cluster", demo_source, SPARK_MASTER=spark_cluster["url"],
                              LMREC_WAREHOUSE="s3a://lmrec/warehouse", **s3)
    # A standalone application takes every free core: the server starts once the first one is done.
    _wait(cluster_run, tmp_path / "cluster")
    with _compose_connect_server(tmp_path / "connect-server.log", SPARK_MASTER=spark_cluster["url"],
                                 LMREC_HOME=str(tmp_path / "connect-server"), **s3) as (url, _):
        for jobs in (JOBS.split(",")[:4], JOBS.split(",")[4:]):  # as tasks do: processes of their own
            _wait(_start_jobs(tmp_path / "connect", demo_source, ",".join(jobs), LMREC_SPARK_REMOTE=url,
                              LMREC_WAREHOUSE="s3a://lmrec/connect", **s3), tmp_path / "connect")
    _wait(local_run, tmp_path / "local")
    # The jobs really ran as applications of the cluster: the pipeline's own driver, and the server
    # (one application for both job processes). The master moves an application to "completed"
    # asynchronously after its driver exits, so poll for a while.
    assert sorted(_completed_apps(spark_cluster["status"], want=2)) == ["lmrec-pipeline-" + str(D3), "lmrec-spark-server"]

    local = str(tmp_path / "local" / "warehouse")
    for (name, key), where in itertools.product(
            [(S.RATING_MATRIX, ["user_id", "item_id"]), (S.RECOMMENDATIONS, ["user_id", "rank"]), (S.QUARANTINE, None),
             (S.ITEM_EMBEDDINGS, ["item_id"]), (S.USER_EMBEDDINGS, ["user_id"])], ("warehouse", "connect")):
        a = _table(f"{local}/{name}")
        b = _table(f"s3://lmrec/{where}/{name}", s3_server)
        assert len(a) == len(b), f"{name}: {len(a)} rows locally, {len(b)} on the cluster ({where})"
        if key is None:
            continue
        a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
        if name in (S.ITEM_EMBEDDINGS, S.USER_EMBEDDINGS):
            # Executors run torch with other thread counts: the same vectors up to float rounding.
            assert (a[key[0]] == b[key[0]]).all() and (a["text_sha256"] == b["text_sha256"]).all()
            np.testing.assert_allclose(np.stack(a["vector"]), np.stack(b["vector"]), atol=1e-5)
        elif name == S.RECOMMENDATIONS:
            cols = ["user_id", "rank", "item_id", "model_version"]
            pd.testing.assert_frame_equal(a[cols], b[cols])
            np.testing.assert_allclose(a["score"], b["score"], rtol=1e-4, atol=1e-5)
        else:
            pd.testing.assert_frame_equal(a, b, check_like=True)
    assert len(_table(f"{local}/{S.RECOMMENDATIONS}")) > 0
