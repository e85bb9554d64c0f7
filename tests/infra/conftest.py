"""Servers the infrastructure tests start on loopback: a Spark standalone cluster and moto's S3."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from lmrec.core.spark import free_port

S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def _spark_class(*args: str, log: Path) -> subprocess.Popen:
    import pyspark

    home = Path(pyspark.__file__).parent
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_HOSTNAME": "127.0.0.1"}
    return subprocess.Popen([str(home / "bin" / "spark-class"), *args], env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    """A standalone master and two 1-core workers (master URL, status URL); stopped at teardown."""
    d = tmp_path_factory.mktemp("cluster")
    port, ui = free_port(), free_port()
    procs = [_spark_class("org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                          "--webui-port", str(ui), log=d / "master.log")]
    url = f"spark://127.0.0.1:{port}"
    for w in (1, 2):
        procs.append(_spark_class("org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
                                  "--memory", "3g", "--webui-port", str(free_port()), "--work-dir", str(d / f"work{w}"),
                                  url, log=d / f"worker{w}.log"))
    try:
        alive = 0
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as r:
                    alive = json.load(r).get("aliveworkers", 0)
            except OSError:
                pass
            if alive == 2:
                break
            time.sleep(1)
        assert alive == 2, f"cluster did not start: {alive} workers alive; logs in {d}"
        yield {"url": url, "status": f"http://127.0.0.1:{ui}/json/"}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on loopback with buckets ``lmrec`` (warehouse) and ``mlflow`` (artifacts); yields its URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    for bucket in ("lmrec", "mlflow"):
        s3.create_bucket(Bucket=bucket)
    yield endpoint
    server.stop()
