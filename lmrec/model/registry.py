"""The MLflow side of the scorer: tracking set-up, the registered model's aliases and tags, and
reading a version's parameters. Contract (docs/ARCHITECTURE.md, MLflow): model ``lmrec-scorer``, alias ``champion``
is what scoring uses, every version carries ``data_cutoff``."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from lmrec.core import schema as S
from lmrec.core.settings import Settings

EXPERIMENT = "lmrec"

# Tags of a registered version (train sets them; gate adds GATE_* ones).
TAG_RUN_DATE = "run_date"  # the logical date D it was trained for
TAG_DATA_CUTOFF = "data_cutoff"  # ISO-8601 UTC exclusive end of its data: D + 1 day 00:00 (contract)
TAG_TEXT_MODEL = "text_model"  # model id of the item vectors it was fit to
TAG_TRAIN_REASON = "train_reason"
TAG_VAL_NDCG = "val_ndcg_at_10"
TAG_GATE_DECISION = "gate.decision"  # promoted | kept_champion; a version with it has been judged
TAG_GATE_DATE = "gate.date"


def setup_mlflow(cfg: Settings):
    """The ``mlflow`` module with the tracking URI and the ``lmrec`` experiment set."""
    import mlflow

    Path(cfg.home).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        # A tracking server stores artifacts where it is told (--serve-artifacts: its
        # --artifacts-destination); a local store (SQLite) keeps them under LMREC_HOME.
        remote = cfg.mlflow_tracking_uri.startswith(("http://", "https://"))
        mlflow.create_experiment(EXPERIMENT, artifact_location=None if remote
                                 else Path(cfg.mlflow_artifacts).resolve().as_uri())
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def version_by_alias(client, alias: str):
    """The model version of ``lmrec-scorer`` behind ``alias``, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(S.MODEL_NAME, alias)
    except MlflowException:
        return None


def run_date_of(version) -> dt.date | None:
    """The logical date a model version was trained for (its ``run_date`` tag), or None."""
    if version is None or TAG_RUN_DATE not in version.tags:
        return None
    return dt.date.fromisoformat(version.tags[TAG_RUN_DATE])


def load_params(version, part: str = "params"):
    """One parameter set of model ``version`` (``params``: the refit; ``val_params``: the fit on the
    validation split's training part), read from a temporary copy of its artifacts that is deleted
    once read (at 20k EASE items each set is 1.6 GB). The tracking URI must be set (setup_mlflow)."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix=f"lmrec-v{version}-") as tmp:
        model = mlflow.pyfunc.load_model(f"models:/{S.MODEL_NAME}/{version}", dst_path=tmp).unwrap_python_model()
        return getattr(model, part)


def versions(client) -> list:
    """Every version of ``lmrec-scorer`` with its tags (oldest first)."""
    found = client.search_model_versions(f"name='{S.MODEL_NAME}'")
    return sorted(found, key=lambda v: int(v.version))


def is_promoted(version, champion_alias_version: str | None = None) -> bool:
    """True when the gate promoted ``version`` (or it holds the champion alias: versions from before
    the gate tagged its decisions)."""
    return version.tags.get(TAG_GATE_DECISION) == "promoted" or str(version.version) == champion_alias_version


def champion_as_of(client, run_date: dt.date, *, exclude: str | None = None):
    """The champion as of D: the most recently trained promoted version whose data ends by the end
    of D (``run_date`` tag <= D, i.e. ``data_cutoff`` <= D + 1 day), newest version on a tie; None
    when there is none (a backfill before any model). ``exclude``: a version to leave out."""
    alias = version_by_alias(client, S.ALIAS_CHAMPION)
    alias_version = str(alias.version) if alias is not None else None
    best = None
    for v in versions(client):
        d = run_date_of(v)
        if d is None or d > run_date or str(v.version) == exclude or not is_promoted(v, alias_version):
            continue
        if best is None or (d, int(v.version)) >= (run_date_of(best), int(best.version)):
            best = v
    return best


def candidate_of(client, run_date: dt.date):
    """The newest version trained for D (its ``run_date`` tag), or None: what D's gate judges."""
    mine = [v for v in versions(client) if run_date_of(v) == run_date]
    return mine[-1] if mine else None


def move_champion_forward(client) -> str | None:
    """Point alias ``champion`` at the newest promoted version (by run date, then version): the
    global alias only moves forward, whatever order dates are run or backfilled in. Returns it."""
    alias = version_by_alias(client, S.ALIAS_CHAMPION)
    alias_version = str(alias.version) if alias is not None else None
    promoted = [v for v in versions(client) if run_date_of(v) is not None and is_promoted(v, alias_version)]
    if not promoted:
        return None
    newest = max(promoted, key=lambda v: (run_date_of(v), int(v.version)))
    if str(newest.version) != alias_version:
        client.set_registered_model_alias(S.MODEL_NAME, S.ALIAS_CHAMPION, newest.version)
    return str(newest.version)


def run_artifact(version, name: str, dst: str) -> str | None:
    """Local path of artifact ``name`` of the run that made model ``version``, downloaded under
    ``dst``, or None when that run has no such artifact (versions made before it existed)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=name, dst_path=dst)
    except (MlflowException, OSError):
        return None
