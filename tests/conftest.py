"""Session-wide fixtures: one local Spark session (real Spark + Delta), temp warehouses."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
D1 = dt.date(2024, 6, 28)
D2 = dt.date(2024, 6, 29)
D3 = dt.date(2024, 6, 30)


_MLFLOW_URI_AT_START = os.environ.get("MLFLOW_TRACKING_URI")


@pytest.fixture(autouse=True)
def _no_mlflow_uri_from_earlier_tests():
    """``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI (for child processes): after a
    test that used MLflow in this process, a later test's jobs started as processes would inherit
    that test's store and register into it. Each test ends with the variable as the session began."""
    yield
    if _MLFLOW_URI_AT_START is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = _MLFLOW_URI_AT_START


def make_cfg(home: Path, **overrides):
    from lmrec.core.settings import Settings

    env = {"LMREC_HOME": str(home), "LMREC_SPARK_UI": "0", "LMREC_SHUFFLE_PARTITIONS": "2",
           "SPARK_MASTER": "local[2]", "LMREC_DRIVER_MEMORY": "4g"}
    env.update({k: str(v) for k, v in overrides.items()})
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from lmrec.core.spark import get_spark

    cfg = make_cfg(tmp_path_factory.mktemp("spark-home"))
    session = get_spark(cfg, app_name="lmrec-tests")
    yield session
    session.stop()


@pytest.fixture
def two_threads():
    """torch on two threads for one test (what the thread pools and kernels under test split their
    work by), the count before restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cfg(tmp_path):
    return make_cfg(tmp_path)


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.exists():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (a fresh clone has none; see shared/data/README.md)")
    return SHARED_DATA


def write_csv(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


@pytest.fixture(scope="session")
def demo_source(tmp_path_factory):
    """A small demo catalogue (deterministic), shared read-only by tests."""
    from lmrec.data.demo import write_demo

    out = tmp_path_factory.mktemp("demo") / "source"
    write_demo(out, users=120, items=150, ratings_per_user=20, days=3, end_date=D3)
    return out
