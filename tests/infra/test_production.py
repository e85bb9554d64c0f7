"""Production parity, as processes on loopback (no Docker engine here): the MLflow server the compose
file and the Kubernetes manifests run (their flags and environment names, read from
infra/docker-compose.yml; only the port and the values differ) with PostgreSQL as its backend
store (initdb/pg_ctl; the database made by infra/postgres/init-mlflow.sh), artifacts served from S3
(moto), basic authentication and allowed hosts; the pipeline's user made by
infra/mlflow/create_users.py; the whole DAG (`airflow dags test`) on the Spark standalone cluster
with the warehouse on S3; then the champion loaded by a fresh process outside the repository, as
an analyst who can read the registry and cannot move the alias.

Slow (~10 minutes on 2 cores): `make test-all` or `pytest -m slow tests/infra/test_production.py`."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from lmrec.core import schema as S
from lmrec.core.spark import free_port
from tests.conftest import D3
from tests.infra.conftest import S3_KEYS

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.airflow]
REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
BIN = Path(sys.executable).parent


def compose_mlflow() -> tuple[list[str], dict]:
    svc = yaml.safe_load((INFRA / "docker-compose.yml").read_text())["services"]["mlflow"]
    return list(svc["command"]), dict(svc["environment"])


def _as_postgres(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """PostgreSQL refuses to run as root: run its binaries as the postgres user then."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def backend_store():
    """MLflow's backend store URI: PostgreSQL made by infra/postgres/init-mlflow.sh when its binaries
    are here, else SQLite (the test says which)."""
    if not (shutil.which("initdb") and shutil.which("pg_ctl") and shutil.which("psql")):
        d = Path(tempfile.mkdtemp(prefix="lmrec-mlflow-"))
        yield f"sqlite:///{d / 'mlflow.db'}"
        return
    d = Path(tempfile.mkdtemp(prefix="lmrec-pg-"))
    os.chmod(d, 0o755)
    if os.geteuid() == 0:
        shutil.chown(d, "postgres", "postgres")
    port = free_port()
    _as_postgres(["initdb", "-D", str(d / "data"), "-U", "postgres", "--auth=trust"])
    _as_postgres(["pg_ctl", "-D", str(d / "data"), "-l", str(d / "pg.log"), "-w", "-o",
                  f"-p {port} -k {d} -c listen_addresses=127.0.0.1", "start"])
    try:
        password = secrets.token_urlsafe(12)
        env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(port), "POSTGRES_USER": "postgres",
               "POSTGRES_DB": "postgres", "MLFLOW_DB_PASSWORD": password}
        subprocess.run(["sh", str(INFRA / "postgres" / "init-mlflow.sh")], env=env, check=True, capture_output=True)
        yield f"postgresql+psycopg2://mlflow:{password}@127.0.0.1:{port}/mlflow"
    finally:
        _as_postgres(["pg_ctl", "-D", str(d / "data"), "-m", "fast", "stop"])


@pytest.fixture(scope="module")
def mlflow_server(backend_store, s3_server, tmp_path_factory):
    """The compose file's MLflow server; yields its URL, port and credentials."""
    flags, compose_env = compose_mlflow()
    d = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    flags = [f"--port={port}" if f.startswith("--port=") else f for f in flags]
    ini = (INFRA / "mlflow" / "basic_auth.ini").read_text().replace(
        "sqlite:////mlflow-auth/basic_auth.db", f"sqlite:///{d / 'basic_auth.db'}")
    (d / "basic_auth.ini").write_text(ini)
    admin = ("admin", secrets.token_urlsafe(12))
    values = {"MLFLOW_BACKEND_STORE_URI": backend_store, "MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow",
              "MLFLOW_SERVER_ALLOWED_HOSTS": f"mlflow:{port},127.0.0.1:{port}",
              "MLFLOW_AUTH_CONFIG_PATH": str(d / "basic_auth.ini"), "MLFLOW_AUTH_ADMIN_USERNAME": admin[0],
              "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1], "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
              "MLFLOW_S3_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": S3_KEYS["AWS_ACCESS_KEY_ID"],
              "AWS_SECRET_ACCESS_KEY": S3_KEYS["AWS_SECRET_ACCESS_KEY"]}
    assert set(values) == set(compose_env), "the test sets exactly the compose file's MLflow environment"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update(values, AWS_REGION="us-east-1")
    log = (d / "server.log").open("w")
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", *flags], env=env, cwd=d, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, (d / "server.log").read_text()[-3000:]
                time.sleep(1)
        else:
            raise AssertionError("MLflow server did not answer /health: " + (d / "server.log").read_text()[-3000:])
        yield {"url": url, "port": port, "admin": admin, "log": d / "server.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _get(url: str, *, host: str | None = None, auth: tuple[str, str] | None = None) -> int:
    req = urllib.request.Request(url)
    if host:
        req.add_header("Host", host)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _create_user(server, name: str) -> tuple[str, str]:
    password = secrets.token_urlsafe(12)
    env = {**os.environ, "MLFLOW_TRACKING_URI": server["url"], "MLFLOW_AUTH_ADMIN_USERNAME": server["admin"][0],
           "MLFLOW_AUTH_ADMIN_PASSWORD": server["admin"][1], "MLFLOW_PIPELINE_USERNAME": name,
           "MLFLOW_PIPELINE_PASSWORD": password}
    proc = subprocess.run([sys.executable, str(INFRA / "mlflow" / "create_users.py")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert password not in proc.stdout + proc.stderr
    return name, password


def test_server_checks_hosts_and_credentials(mlflow_server):
    url, port, admin = mlflow_server["url"], mlflow_server["port"], mlflow_server["admin"]
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(api, host=f"mlflow:{port}", auth=admin) == 200  # the compose service name is an allowed host
    assert _get(api, host="attacker.example", auth=admin) == 403  # DNS rebinding protection
    assert _get(api, host=f"mlflow:{port}") == 401  # no credentials
    assert _get(api, host=f"mlflow:{port}", auth=(admin[0], "wrong")) == 401


def test_dag_through_the_production_stack(mlflow_server, spark_cluster, s3_server, demo_source, tmp_path):
    import boto3

    pipeline_user = _create_user(mlflow_server, "lmrec-pipeline")
    analyst = _create_user(mlflow_server, "analyst")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update({"LMREC_HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120", "LMREC_SPARK_UI": "0", "LMREC_SHUFFLE_PARTITIONS": "2",
                "LMREC_TRAIN_EPOCHS": "2", "LMREC_DRIVER_MEMORY": "2g", "LMREC_TASK_RETRIES": "0", "LMREC_TRAIN_ALS": "0",
                "LMREC_OPTIMIZE": "0", "LMREC_SOURCE_WAIT_MINUTES": "0", "SPARK_MASTER": spark_cluster["url"],
                "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_HOSTNAME": "127.0.0.1",
                "LMREC_WAREHOUSE": "s3a://lmrec/warehouse", "LMREC_S3_ENDPOINT": s3_server, **S3_KEYS,
                "MLFLOW_TRACKING_URI": mlflow_server["url"], "MLFLOW_TRACKING_USERNAME": pipeline_user[0],
                "MLFLOW_TRACKING_PASSWORD": pipeline_user[1]})
    airflow = str(BIN / "airflow")
    for args in (["db", "migrate"], ["pools", "set", "lmrec_spark", "2", "Spark jobs of lmrec"],
                 ["dags", "test", S.DAG_ID, str(D3), "--conf", json.dumps({"source": str(demo_source)})]):
        proc = subprocess.run([airflow, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0 and "state=failed" not in proc.stdout, \
            f"airflow {args[:2]}:\n{proc.stdout[-5000:]}\n{proc.stderr[-3000:]}"
    assert pipeline_user[1] not in proc.stdout + proc.stderr  # no credential in the task logs

    # Artifacts went through the server to S3, not to the training process's disk.
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", **{
        k.lower(): v for k, v in S3_KEYS.items() if k != "AWS_REGION"}).list_objects_v2(Bucket="mlflow").get("Contents", [])]
    assert any(k.endswith("MLmodel") for k in keys) and any(k.endswith("params.npz") for k in keys)
    assert not (home / "mlartifacts").exists()

    # A fresh process outside the repository (lmrec not importable: no site .pth files), logged in as
    # an analyst: loads the champion and predicts; moving the alias is refused.
    outside = tmp_path / "outside"
    outside.mkdir()
    code = ("import json, mlflow, mlflow.pyfunc, pandas as pd\n"
            f"m = mlflow.pyfunc.load_model('models:/{S.MODEL_NAME}@{S.ALIAS_CHAMPION}')\n"
            "c = mlflow.MlflowClient()\n"
            f"v = c.get_model_version_by_alias('{S.MODEL_NAME}', '{S.ALIAS_CHAMPION}')\n"
            f"out = m.predict(pd.DataFrame({{'user_id': ['u000001'], 'item_id': ['i000003']}}))\n"
            "try:\n"
            f"    c.set_registered_model_alias('{S.MODEL_NAME}', '{S.ALIAS_CHAMPION}', '1'); moved = True\n"
            "except mlflow.exceptions.MlflowException as e:\n"
            "    moved = 'PERMISSION_DENIED' in str(e) or '403' in str(e)\n"
            "    moved = not moved\n"
            "print(json.dumps({'score': float(out['score'][0]), 'moved': moved, 'version': v.version}))\n")
    outside_env = {"PATH": "/usr/bin:/bin", "HOME": str(outside), "PYTHONPATH": sysconfig.get_paths()["purelib"],
                   "MLFLOW_TRACKING_URI": mlflow_server["url"], "MLFLOW_TRACKING_USERNAME": analyst[0],
                   "MLFLOW_TRACKING_PASSWORD": analyst[1]}
    proc = subprocess.run([sys.executable, "-S", "-c", code], env=outside_env, cwd=outside, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["score"] == out["score"] and out["moved"] is False  # a finite score; the alias did not move
