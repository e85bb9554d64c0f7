"""What cannot run here (no Docker engine, no Kubernetes) is checked statically: the Dockerfiles
pass hadolint and copy files that exist; the compose stack and the Kubernetes manifests parse and
reference files, images, services, variables, ConfigMaps and Secrets that exist; the DAG in
spark-submit mode hands each job the Spark configuration it needs."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmrec import pipeline

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
INFRA = REPO / "infra"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile*"))
# Image name built from each Dockerfile (the names the compose file and manifests use).
IMAGES = {"Dockerfile": "lmrec", "Dockerfile.gpu": "lmrec-gpu", "Dockerfile.airflow": "lmrec-airflow",
          "Dockerfile.mlflow": "lmrec-mlflow"}


def test_every_dockerfile_has_an_image_name():
    assert {p.name for p in DOCKERFILES} == set(IMAGES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    proc = subprocess.run([hadolint, "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_files_that_exist_and_pins_versions(dockerfile):
    text = dockerfile.read_text()
    for line in re.findall(r"^COPY (.+)$", text, flags=re.M):
        parts = [p for p in line.split() if not p.startswith("--")]
        for src in parts[:-1]:
            assert (REPO / src).exists(), f"{dockerfile.name}: COPY {src}: no such file in the build context"
            assert not any(src.startswith(x) for x in (".venv", "var")), f"{dockerfile.name} copies {src}"
    args = set(re.findall(r"^ARG (\w+)", text, flags=re.M))
    assert args, f"{dockerfile.name}: versions should be build arguments"
    for used in re.findall(r"\$\{(\w+)\}", text):
        assert used in args or re.search(rf"^ENV .*\b{used}=|^\s+{used}=", text, flags=re.M) or used == "PATH", \
            f"{dockerfile.name}: ${{{used}}} is not an ARG or ENV"
    user = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert user and user[-1] not in ("0", "root"), f"{dockerfile.name}: must not run as root"


def test_dockerignore_keeps_local_state_out():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "var", ".git"} <= set(ignored)


def _compose():
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def _variables(obj) -> set[str]:
    """${VAR} references without a default (``$$`` escapes are not references)."""
    text = json.dumps(obj).replace("$$", "")
    return {m for m in re.findall(r"\$\{(\w+)\}", text)}


def test_compose_stack_is_complete_and_consistent():
    c = _compose()
    services = c["services"]
    for needed in ("postgres", "minio", "mlflow", "spark-master", "spark-worker-1", "spark-worker-2",
                   "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        assert needed in services, f"compose stack lacks {needed}"
    env_example = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
                       if line and not line.startswith("#"))
    missing = _variables(c) - set(env_example)
    assert not missing, f"variables used in docker-compose.yml but not in .env.example: {sorted(missing)}"
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        long_running = svc.get("restart") != "no"
        if long_running:
            assert "healthcheck" in svc, f"{name}: long-running service without a health check"
        build = svc.get("build")
        if build:
            context = (INFRA / build["context"]).resolve()
            assert (context / build["dockerfile"]).exists(), f"{name}: {build['dockerfile']} not found"
            image = svc["image"].split(":")[0]
            assert image == IMAGES[Path(build["dockerfile"]).name], f"{name}: image {image} from {build['dockerfile']}"
            assert set(build.get("args", {})) <= set(re.findall(r"^ARG (\w+)", (context / build["dockerfile"]).read_text(), flags=re.M))
        elif svc.get("image", "").split(":")[0] in IMAGES.values():
            built = {s["image"] for s in services.values() if s.get("build")}
            assert svc["image"] in built, f"{name}: image {svc['image']} is built by no service"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (INFRA / src).exists(), f"{name}: bind mount {src} does not exist"
            else:
                assert src in c.get("volumes", {}), f"{name}: named volume {src} not declared"
    # The jobs see the warehouse on the object store and MLflow as a server.
    worker_env = services["spark-worker-1"]["environment"]
    assert worker_env["LMREC_WAREHOUSE"].startswith("s3a://") and worker_env["MLFLOW_TRACKING_URI"].startswith("http://mlflow")
    # Tasks submit their jobs by default; the "connect" profile's server is there to opt into.
    airflow_env = services["airflow-scheduler"]["environment"]
    assert airflow_env["LMREC_RUNNER"] == "${LMREC_RUNNER}" and env_example["LMREC_RUNNER"] == "spark-submit"
    assert airflow_env["LMREC_SPARK_REMOTE"] == "${LMREC_SPARK_REMOTE}" and env_example["LMREC_SPARK_REMOTE"] == ""
    assert not any(s.get("profiles") for n, s in services.items() if n != "spark-connect")


def test_compose_spark_connect_service_is_the_tested_server():
    """The "connect" profile's server: ``lmrec spark-server`` with flags the command accepts, on the
    port the documented LMREC_SPARK_REMOTE names, healthy when it listens, a driver the executors
    reach by name; the DAG's clash check keeps it apart from spark-submit."""
    from lmrec.cli import build_parser

    svc = _compose()["services"]["spark-connect"]
    assert svc["profiles"] == ["connect"] and svc["image"].startswith("lmrec:")
    assert svc["entrypoint"][:2] == ["lmrec", "spark-server"]
    args = build_parser().parse_args(svc["entrypoint"][1:])
    assert (args.host, args.port, args.print) == ("0.0.0.0", 15002, False)
    assert svc["hostname"] == "spark-connect" and svc["environment"]["SPARK_MASTER"].startswith("spark://")
    assert "sc://spark-connect:15002" in (INFRA / ".env.example").read_text()
    assert "wait_for_server('sc://127.0.0.1:15002'" in " ".join(svc["healthcheck"]["test"])


def _manifests():
    docs = []
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        if path.name == "airflow-values.yaml":
            continue
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kubernetes_manifests_parse_and_reference_what_exists():
    docs = _manifests()
    assert docs
    defined = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    for name, d in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(d), f"{name}: not a Kubernetes object"
        text = json.dumps(d)
        for ref in re.findall(r'"secretKeyRef": \{"name": "([^"]+)"', text) + re.findall(r'"secretRef": \{"name": "([^"]+)"', text):
            assert ("Secret", ref) in defined, f"{name}: Secret {ref} is not defined (see secrets.example.yaml)"
        for ref in re.findall(r'"configMapRef": \{"name": "([^"]+)"', text) + re.findall(r'"configMap": \{"name": "([^"]+)"', text):
            assert ("ConfigMap", ref) in defined, f"{name}: ConfigMap {ref} is not defined"
        for image in re.findall(r'"image": "([^"]+)"', text):
            assert image.split("/")[-1].split(":")[0] in IMAGES.values(), f"{name}: image {image} is not built here"
        if d["kind"] == "RoleBinding":
            assert ("Role", d["roleRef"]["name"]) in defined and ("ServiceAccount", d["subjects"][0]["name"]) in defined
    conf = next(d for _, d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "lmrec-spark-conf")["data"]
    env = next(d for _, d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "lmrec-env")["data"]
    # The pod templates the settings name are in the Spark ConfigMap, and parse.
    for key in ("LMREC_GPU_POD_TEMPLATE",):
        assert Path(env[key]).name in conf
    for name, body in conf.items():
        if name.endswith(".yaml"):
            assert yaml.safe_load(body)["kind"] == "Pod"
    gpu = yaml.safe_load(conf["gpu-executor-template.yaml"])
    assert gpu["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert env["LMREC_GPU_IMAGE"].split("/")[-1].startswith("lmrec-gpu:")
    # Every LMREC_ setting named in the ConfigMap exists in lmrec/core/settings.py.
    from dataclasses import fields

    from lmrec.core.settings import Settings

    known = {"LMREC_" + f.name.upper() for f in fields(Settings)}
    assert {k for k in env if k.startswith("LMREC_")} <= known


def test_kubernetes_spark_connect_server_is_the_tested_server(tmp_path):
    """spark-connect.yaml: the compose service's command (the one the slow cluster test runs) plus
    the pod's own name and address as ``--conf``, which parse and reach the server's spark-submit;
    the Service, probes, mounts, service account and NetworkPolicy agree with it."""
    from lmrec.cli import build_parser
    from lmrec.core.spark import connect_server_args, parse_conf
    from tests.conftest import make_cfg

    docs = {d["kind"]: d for _, d in _manifests() if d["metadata"]["name"] == "lmrec-spark-connect"}
    assert set(docs) == {"Deployment", "Service", "NetworkPolicy"}
    pod = docs["Deployment"]["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["command"][:6] == _compose()["services"]["spark-connect"]["entrypoint"]
    env = {e["name"]: e for e in c["env"]}
    assert set(re.findall(r"\$\((\w+)\)", " ".join(c["command"]))) == {"POD_NAME", "POD_IP"}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    args = build_parser().parse_args([a.replace("$(POD_NAME)", "lmrec-spark-connect-0").replace("$(POD_IP)", "10.0.0.7")
                                      for a in c["command"][1:]])
    spark_submit = connect_server_args(make_cfg(tmp_path, SPARK_MASTER="k8s://https://kubernetes.default.svc"),
                                       host=args.host, port=args.port, extra=parse_conf(args.conf))
    assert "spark.kubernetes.driver.pod.name=lmrec-spark-connect-0" in spark_submit
    assert "spark.driver.host=10.0.0.7" in spark_submit and "spark.connect.grpc.binding.address=0.0.0.0" in spark_submit
    # The port: listened on, probed, served, let through; the documented URL names the Service.
    assert c["ports"][0]["containerPort"] == args.port == c["readinessProbe"]["tcpSocket"]["port"]
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == args.port
    assert docs["Service"]["spec"]["selector"] == pod["metadata"]["labels"]
    assert f"sc://lmrec-spark-connect.lmrec.svc:{docs['Service']['spec']['ports'][0]['port']}" in \
        (INFRA / "k8s" / "lmrec-config.yaml").read_text()
    # The executors it creates: the RBAC's service account; the Spark defaults mounted where Airflow's are.
    assert pod["spec"]["serviceAccountName"] == "lmrec-spark"
    values = yaml.safe_load((INFRA / "k8s" / "airflow-values.yaml").read_text())
    airflow_conf_dir = {e["name"]: e["value"] for e in values["env"]}["SPARK_CONF_DIR"]
    assert env["SPARK_CONF_DIR"]["value"] == airflow_conf_dir == c["volumeMounts"][0]["mountPath"]
    assert pod["spec"]["volumes"][0]["configMap"]["name"] == "lmrec-spark-conf"
    # No authentication: only Airflow's workers reach the Connect port, and the executors the driver.
    policy = docs["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == pod["metadata"]["labels"]
    airflow, executors = policy["ingress"]
    assert airflow["ports"] == [{"port": args.port}]
    assert airflow["from"][0]["podSelector"]["matchLabels"]["component"] == "worker"
    assert executors["from"][0]["podSelector"]["matchLabels"] == {"spark-role": "executor"}


def test_airflow_helm_values_use_the_project_image_and_config():
    values = yaml.safe_load((INFRA / "k8s" / "airflow-values.yaml").read_text())
    assert values["images"]["airflow"]["repository"].split("/")[-1] == "lmrec-airflow"
    defined = {(d["kind"], d["metadata"]["name"]) for _, d in _manifests()}
    assert ("ConfigMap", values["volumes"][0]["configMap"]["name"]) in defined
    for s in values["secret"]:
        assert ("Secret", s["secretName"]) in defined
    assert ("ServiceAccount", values["workers"]["serviceAccount"]["name"]) in defined
    for ref in re.findall(r"name: (\S+)", values["extraEnvFrom"]):
        assert ("ConfigMap", ref) in defined


def test_infra_readme_names_every_file():
    readme = (INFRA / "README.md").read_text()
    for path in [*INFRA.glob("*.yml"), INFRA / ".env.example", *(INFRA / "k8s").glob("*.yaml"), *DOCKERFILES]:
        assert path.name in readme, f"infra/README.md does not mention {path.name}"


@pytest.mark.airflow
def test_dag_in_spark_submit_mode_hands_each_job_its_spark_conf(tmp_path):
    """LMREC_RUNNER=spark-submit: every task is a SparkSubmitOperator on spark_default with the
    Delta (and, for s3a://, hadoop-aws) packages; only the GPU jobs get the GPU resources."""
    code = (
        "import json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"d = DagBag({str(REPO / 'dags')!r}).dags['nightly_recommendations']\n"
        "print(json.dumps({t.task_id: {'op': type(t).__name__, 'conn': t._conn_id, 'conf': t.conf,\n"
        "  'app': t.application, 'args': t.application_args} for t in d.tasks if t.task_id != 'wait_for_source'}))\n")
    env = {**os.environ, "LMREC_HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "LMREC_RUNNER": "spark-submit", "LMREC_WAREHOUSE": "s3a://bucket/warehouse", "LMREC_EXECUTOR_GPUS": "1",
           "LMREC_TASK_GPUS": "1", "LMREC_GPU_DISCOVERY_SCRIPT": "/opt/lmrec/gpu-discovery.sh",
           "SPARK_MASTER": "k8s://https://kubernetes.default.svc", "LMREC_GPU_IMAGE": "lmrec-gpu:1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    tasks = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(tasks) == 8
    for name, t in tasks.items():
        assert t["op"] == "SparkSubmitOperator" and t["conn"] == "spark_default"
        assert Path(t["app"]) == REPO / "jobs" / f"{name}.py" and Path(t["app"]).exists()
        assert t["args"][:2] == ["--date", "{{ ds }}"]
        # Rendered as Airflow would, the arguments parse with the jobs' own command line.
        values = {"{{ ds }}": "2024-06-30", "{{ params.source }}": "/data/src", "{{ params.top_k }}": "10",
                  "{{ params.retrain }}": "auto", "{{ params.full_refresh }}": "False"}
        spec = pipeline.job(name)
        parser = pipeline.add_job_arguments(argparse.ArgumentParser(), spec.options)
        args = parser.parse_args([values.get(a, a) for a in t["args"]])
        expected = {"top_k": 10, "retrain": "auto", "full_refresh": False}
        assert pipeline.options_of(args) == {o: expected[o] for o in spec.options} and args.source == "/data/src"
        packages = t["conf"]["spark.jars.packages"]
        assert "io.delta:delta-spark_" in packages and "org.apache.hadoop:hadoop-aws:" in packages
        gpu = "spark.executor.resource.gpu.amount" in t["conf"]
        assert gpu == (name in ("embed_items", "embed_users", "train")), name
        assert ("spark.kubernetes.executor.container.image" in t["conf"]) == gpu
        assert "spark.master" not in t["conf"]  # the connection decides where the job runs


def test_dag_refuses_a_shared_spark_connect_server_with_spark_submit(tmp_path):
    """LMREC_SPARK_REMOTE with LMREC_RUNNER=spark-submit would start a driver per task and then not
    use it: the DAG does not load, and says which two settings clash."""
    code = ("from airflow.dag_processing.dagbag import DagBag\n"
            f"b = DagBag({str(REPO / 'dags')!r})\n"
            "print('nightly_recommendations' in b.dags, ' '.join(b.import_errors.values()).replace('\\n', ' '))\n")
    env = {**os.environ, "LMREC_HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "LMREC_RUNNER": "spark-submit", "LMREC_SPARK_REMOTE": "sc://127.0.0.1:15002"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("False") and "LMREC_SPARK_REMOTE" in last and "LMREC_RUNNER=local" in last


def test_job_options_reach_only_the_jobs_that_take_them(monkeypatch, tmp_path):
    """The pipeline command hands every job the same options (--top-k, --retrain, --full-refresh):
    each job gets those its registry row names; an unknown option is an error."""
    import datetime as dt

    from tests.conftest import make_cfg

    jobs_dir = tmp_path / "fakejobs"
    jobs_dir.mkdir()
    (jobs_dir / "fake.py").write_text(
        "SEEN = {}\n"
        "def run(run_date, *, cfg, spark, source=None, top_k=None):\n"
        "    SEEN.update(run_date=run_date, top_k=top_k)\n"
        "    return 'done'\n")
    monkeypatch.setattr(pipeline, "JOBS", pipeline.JOBS + (pipeline.Job("fake", (), 1, options=("top_k",)),))
    monkeypatch.syspath_prepend(str(tmp_path))
    day = dt.date(2024, 6, 30)
    cfg = make_cfg(tmp_path, LMREC_JOBS_DIR=jobs_dir)
    assert pipeline.run_job("fake", day, cfg=cfg, spark=object(), top_k=5, retrain="always", full_refresh=True) == "done"
    assert pipeline.job_module("fake", cfg).SEEN == {"run_date": day, "top_k": 5}
    with pytest.raises(TypeError, match="typo"):
        pipeline.run_job("fake", day, cfg=cfg, spark=object(), typo=1)


def test_registry_drives_the_cli_and_names_real_modules():
    """Every registry row has its module jobs/<name>.py with run() and main(); the CLI's job
    choices are the registry's, and jobs/ holds nothing but the jobs."""
    import ast

    from lmrec.cli import build_parser

    files = {p.stem for p in (REPO / "jobs").glob("*.py")} - {"__init__"}
    assert files == set(pipeline.JOB_NAMES)
    for name in pipeline.JOB_NAMES:
        tree = ast.parse((REPO / "jobs" / f"{name}.py").read_text())
        defs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert {"run", "main"} <= defs, name
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(m == "jobs" or m.startswith("jobs.") for m in imported), f"jobs/{name}.py imports a job"
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    job_cmd = sub.choices["job"]
    name_arg = next(a for a in job_cmd._actions if a.dest == "name")
    assert tuple(name_arg.choices) == pipeline.JOB_NAMES


def _k8s_mlflow_container() -> dict:
    deploy = next(d for _, d in _manifests() if d["kind"] == "Deployment" and d["metadata"]["name"] == "lmrec-mlflow")
    return deploy["spec"]["template"]["spec"]["containers"][0]


def test_mlflow_server_runs_with_the_tested_flags_everywhere():
    """Compose and Kubernetes start the server with the flags tests/infra/test_production.py runs
    (read from the compose file) and set the same environment (S3's endpoint aside: MinIO only)."""
    mlflow = _compose()["services"]["mlflow"]
    k8s = _k8s_mlflow_container()
    assert mlflow["command"] == k8s["args"]
    assert {"--serve-artifacts", "--app-name=basic-auth"} <= set(mlflow["command"])
    assert set(mlflow["environment"]) - {"MLFLOW_S3_ENDPOINT_URL"} == {e["name"] for e in k8s["env"]}
    assert {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_SERVER_ALLOWED_HOSTS",
            "MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= set(mlflow["environment"])
    hosts = {e["name"]: e.get("value", "") for e in k8s["env"]}["MLFLOW_SERVER_ALLOWED_HOSTS"]
    assert "lmrec-mlflow.lmrec.svc:5000" in hosts.split(",")  # the URI the jobs use (lmrec-env ConfigMap)
    assert "${MLFLOW_ALLOWED_HOSTS}" == mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]
    # The jobs log in: the tracking credentials reach every lmrec container of the stack.
    env = _compose()["x-lmrec-env"]
    assert env["MLFLOW_TRACKING_USERNAME"].startswith("${") and env["MLFLOW_TRACKING_PASSWORD"].startswith("${")
    values = yaml.safe_load((INFRA / "k8s" / "airflow-values.yaml").read_text())
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= {s["envName"] for s in values["secret"]}


SECRET_KEY = re.compile(r"PASSWORD|SECRET|_KEY$|TOKEN", re.I)


def test_credentials_come_only_from_the_environment_or_secrets():
    c = _compose()

    def walk(obj, path=""):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from walk(v, f"{path}.{k}")
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from walk(v, f"{path}[{i}]")
        else:
            yield path, str(obj)

    for path, value in walk(c):
        key = path.rsplit(".", 1)[-1]
        if SECRET_KEY.search(key) and not key.endswith(("_FILE", "]")):
            assert re.fullmatch(r"\$\{\w+\}|/run/secrets/\w+", value), f"docker-compose.yml{path} is a literal credential"
        if "://" in value and "@" in value:  # a URI with credentials: the password is a variable
            assert re.search(r"://\w+:\$\{\w+\}@", value), f"docker-compose.yml{path}: {value.split('@')[0]}@..."
    assert "SIMPLE_AUTH_MANAGER_ALL_ADMINS" not in json.dumps(c)  # real users and roles, not everyone admin
    for path in [*(INFRA / "k8s").glob("*.yaml"), *(INFRA / "postgres").iterdir(), INFRA / "mlflow" / "basic_auth.ini"]:
        if path.name == "secrets.example.yaml":
            continue
        text = path.read_text()
        # an SQL password literal, or a YAML/ini key named like a password with a literal value
        literal = re.search(r"PASSWORD\s+'[^']*'|^\s*[\w-]*password(?!s?_file)[\w-]*\s*[:=]\s*(?![\s$]|\{)\S+", text, flags=re.I | re.M)
        assert not literal, f"{path.name}: {literal.group(0).split(':')[0].split('=')[0]} holds a literal"
    example = (INFRA / "k8s" / "secrets.example.yaml").read_text()
    assert "CHANGE-ME" in example  # placeholders only
