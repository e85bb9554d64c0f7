"""Jobs on a long-lived Spark Connect server (``lmrec spark-server``, ``LMREC_SPARK_REMOTE``): the
same tables as with a Spark session of the job's own, and a clear error when no server answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmrec.core.spark import connect_server_args, connect_session, free_port, parse_conf, spark_server, wait_for_server
from tests.conftest import D3, make_cfg

REPO = Path(__file__).resolve().parents[2]
ENV = {"LMREC_SPARK_UI": "0", "LMREC_SHUFFLE_PARTITIONS": "2", "SPARK_MASTER": "local[2]", "LMREC_DRIVER_MEMORY": "2g",
       "LMREC_TRAIN_ALS": "0", "LMREC_TRAIN_EPOCHS": "2", "LMREC_OPTIMIZE": "0"}


def test_server_command_carries_lmrecs_conf_and_listens_where_told(tmp_path):
    args = connect_server_args(make_cfg(tmp_path), host="0.0.0.0", port=15123)
    assert args[0].endswith("spark-submit") and Path(args[0]).exists()
    assert args[1:3] == ["--class", "org.apache.spark.sql.connect.service.SparkConnectServer"]
    conf = dict(a.split("=", 1) for a in args[3:-1] if a != "--conf")
    assert conf["spark.connect.grpc.binding.address"] == "0.0.0.0"
    assert conf["spark.connect.grpc.binding.port"] == "15123"
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.master"] == "local[2]" and conf["spark.sql.session.timeZone"] == "UTC"
    assert "spark.jars.packages" in conf or "spark.jars" in conf  # Delta's jars, listed or to resolve
    assert args[-1] == "spark-internal"
    # The server's own settings (Kubernetes: its pod's name and address) come last; bad ones are named.
    extra = parse_conf(["spark.kubernetes.driver.pod.name=lmrec-spark-connect-0", "spark.driver.host=10.0.0.7"])
    args = connect_server_args(make_cfg(tmp_path), port=15123, extra=extra)
    conf = dict(a.split("=", 1) for a in args[3:-1] if a != "--conf")
    assert conf["spark.kubernetes.driver.pod.name"] == "lmrec-spark-connect-0" and conf["spark.driver.host"] == "10.0.0.7"
    for bad, message in (("spark.driver.host", "expected spark.KEY=VALUE"), ("driver.host=x", "expected spark.KEY=VALUE"),
                         ("spark.connect.grpc.binding.port=1", "use --host and --port")):
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_conf([bad])


def test_no_server_is_a_clear_error_at_once(tmp_path):
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"sc://127.0.0.1:{port}.*lmrec spark-server.*LMREC_SPARK_REMOTE"):
        connect_session(make_cfg(tmp_path, LMREC_SPARK_REMOTE=f"sc://127.0.0.1:{port}"))
    assert time.monotonic() - t0 < 15
    with pytest.raises(ConnectionError, match=rf"sc://127.0.0.1:{port} within 1 s"):
        wait_for_server(f"sc://127.0.0.1:{port}", timeout=1)
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(ConnectionError, match="exited with code 3 before it listened"):
        wait_for_server(f"sc://127.0.0.1:{port}", proc=dead, timeout=60)
    with pytest.raises(ValueError, match="sc://host:port"):
        connect_session(make_cfg(tmp_path, LMREC_SPARK_REMOTE="http://127.0.0.1:15002"))
    # A server that cannot start: the error carries the end of its log, and nothing is left running.
    with pytest.raises(ConnectionError, match=r"(?s)exited with code 2 before it listened.*--no-such-flag"):
        with spark_server(dict(os.environ), tmp_path / "bad-server.log", argv=("spark-server", "--no-such-flag")):
            pytest.fail("the server should not have started")


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    """``lmrec spark-server`` on a free port, as a process group of its own; yields its URL."""
    tmp_path = tmp_path_factory.mktemp("connect-server")
    env = {**os.environ, **ENV, "LMREC_HOME": str(tmp_path / "server-home")}
    with spark_server(env, tmp_path / "server.log") as (url, _):
        yield url


def _tables(home: Path, name: str, keys: list[str]):
    from deltalake import DeltaTable

    df = DeltaTable(str(home / "warehouse" / name)).to_pandas()
    return df.drop(columns=["run_date"], errors="ignore").sort_values(keys).reset_index(drop=True)


def _remote_jobs(server: str, home: Path, source: Path, jobs) -> None:
    """``lmrec pipeline --jobs ...`` in a process of its own on the server."""
    env = {**os.environ, **ENV, "LMREC_HOME": str(home), "LMREC_SPARK_REMOTE": server}
    out = subprocess.run([sys.executable, "-m", "lmrec.cli", "pipeline", "--date", str(D3), "--source", str(source),
                          "--jobs", ",".join(jobs)], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"Spark Connect {server}" in out.stderr  # the jobs said where they ran


def _same_tables(remote_home: Path, local_home: Path, names) -> None:
    keys = {"rating_matrix": ["user_id", "item_id"], "user_index": ["user_id"], "item_index": ["item_id"],
            "quarantine": ["source_file", "line"], "ratings_raw": ["user_id", "item_id", "event_ts"],
            "recommendations": ["user_id", "rank"]}
    for name in names:
        remote, local = _tables(remote_home, name, keys[name]), _tables(local_home, name, keys[name])
        assert len(remote) == len(local) and (name == "quarantine" or len(remote) > 0), name
        if name == "recommendations":
            cols = ["user_id", "rank", "item_id", "model_version"]
            assert remote[cols].equals(local[cols]), name
            assert ((remote["score"] - local["score"]).abs() < 1e-4).all()
        else:
            assert remote.equals(local), name


@pytest.mark.spark
def test_ingest_and_rating_matrix_through_connect_equal_a_jvm_of_their_own(connect_server, spark, demo_source, tmp_path):
    """Ingest (quarantine, counts) and rating_matrix (the ids' MERGE) on the server write what the
    same jobs write in this process's own session; a rerun on the server changes nothing."""
    from lmrec.pipeline import run_job

    jobs = ["ingest", "rating_matrix"]
    _remote_jobs(connect_server, tmp_path / "remote", demo_source, jobs)
    _remote_jobs(connect_server, tmp_path / "remote", demo_source, jobs)  # rerun: same rows, no new ids
    cfg = make_cfg(tmp_path / "local", **ENV)
    for name in jobs:
        run_job(name, D3, cfg=cfg, spark=spark, source=str(demo_source))
    _same_tables(tmp_path / "remote", tmp_path / "local",
                 ["ratings_raw", "quarantine", "rating_matrix", "user_index", "item_index"])


@pytest.mark.spark
@pytest.mark.slow
def test_night_through_connect_equals_a_jvm_of_its_own(connect_server, spark, demo_source, tmp_path):
    """The whole demo night as two job processes on the server (state crosses processes only
    through the tables and MLflow) writes the same recommendations as the jobs in this process's
    own Spark session."""
    from lmrec.pipeline import JOB_NAMES, run_job

    remote_home = tmp_path / "remote"
    _remote_jobs(connect_server, remote_home, demo_source, JOB_NAMES[:4])
    _remote_jobs(connect_server, remote_home, demo_source, JOB_NAMES[4:])
    local_home = tmp_path / "local"
    cfg = make_cfg(local_home, **ENV)
    for name in JOB_NAMES:
        run_job(name, D3, cfg=cfg, spark=spark, source=str(demo_source))
    _same_tables(remote_home, local_home, ["rating_matrix", "user_index", "item_index", "recommendations"])
    summary = _tables(remote_home, "run_summary", ["job"])
    assert sorted(summary["job"]) == sorted(JOB_NAMES) and set(summary["status"]) == {"succeeded"}
