"""train: fit the scorer on the rating matrix and text vectors of D, evaluate it against the
baselines on a held-out validation split, log everything to MLflow, refit on all data up to D,
and register the refit model as a new version of ``lmrec-scorer`` with alias ``candidate``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from jobs import schema as S
from jobs.settings import Settings

log = logging.getLogger(__name__)
VAL_RATIO = 0.8  # per-user random split: 80% to fit, 20% to validate (seed = ScorerConfig.seed)
CURVE_KS = list(range(1, 51))
EXPERIMENT = "lmrec"


def setup_mlflow(cfg: Settings):
    import mlflow

    Path(cfg.home).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=Path(cfg.mlflow_artifacts).resolve().as_uri())
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def als_score_fn(spark, train: pd.DataFrame, n_items: int, *, implicit: bool, rank: int = 32, seed: int = S.SEED):
    """Spark MLlib ALS on the same split; returns (score fn, predict fn for (u, i) pairs)."""
    from pyspark.ml.recommendation import ALS

    df = spark.createDataFrame(train[[S.COL_USER_IDX, S.COL_ITEM_IDX, S.COL_RATING]].astype(
        {S.COL_USER_IDX: "int32", S.COL_ITEM_IDX: "int32", S.COL_RATING: "float32"}))
    model = ALS(rank=rank, maxIter=10, regParam=0.1 if not implicit else 0.05, implicitPrefs=implicit, alpha=10.0,
                userCol=S.COL_USER_IDX, itemCol=S.COL_ITEM_IDX, ratingCol=S.COL_RATING, seed=seed,
                coldStartStrategy="nan", nonnegative=False).fit(df)
    uf = model.userFactors.toPandas()
    itf = model.itemFactors.toPandas()
    n_users = int(train[S.COL_USER_IDX].max()) + 1
    U = np.zeros((n_users, rank), np.float32)
    I = np.zeros((n_items, rank), np.float32)
    U[uf["id"].to_numpy()] = np.stack(uf["features"].to_numpy())
    I[itf["id"].to_numpy()] = np.stack(itf["features"].to_numpy())
    score = lambda users: U[np.clip(users, 0, n_users - 1)] @ I.T  # noqa: E731
    predict = lambda u, i: (U[np.clip(u, 0, n_users - 1)] * I[i]).sum(1)  # noqa: E731
    return score, predict


def _ease_part(params, X, n_items: int):
    """The scorer's EASE component alone (γ = 1, no neural part): EASE fitted on the same split."""
    ease = dataclasses.replace(params, alpha=0.0, gamma=1.0)
    return lambda users: ease.ease_scores(X[users], n_items)


def evaluate_all(spark, data, train: pd.DataFrame, val: pd.DataFrame, params, *, k: int = 10, with_als: bool = True,
                 params_lambda: float = 300.0):
    """Metrics of the scorer and every baseline on one split. Returns {model: metrics}."""
    from jobs import baselines as B
    from jobs.evaluation import mae, ranking_metrics, rmse
    from jobs.scorer import history_weights, make_score_fn, predict_ratings

    n_u, n_i = data.n_users, data.n_items
    H = history_weights(train, n_u, n_i, rating_max=data.rating_max, recency_weight=params.recency_weight)
    X = B.interactions(train, n_u, n_i)
    profile = np.asarray(H @ data.item_text)
    profile /= np.clip(np.linalg.norm(profile, axis=1, keepdims=True), 1e-9, None)
    # Text-only: the user's own text where there is no history, else their history's text profile.
    text_users = np.where(np.asarray(X.sum(1)).ravel()[:, None] > 0, profile, data.user_text)
    # Built one at a time and dropped after evaluation: at 20k items item-kNN's similarity is
    # 1.6 GB. The EASE baseline reuses the EASE matrix the scorer fit on the same split and λ.
    models = {
        "scorer": lambda: make_score_fn(params, H, X, data.item_text, data.user_text, n_i),
        "popularity": lambda: B.fit_popularity(train, n_u, n_i),
        "item_knn": lambda: B.fit_item_knn(train, n_u, n_i),
        "ease": lambda: _ease_part(params, X, n_i) if len(params.ease_items)
        else B.fit_ease(train, n_u, n_i, lam=params_lambda),
        "text_only": lambda: B.fit_text_only(text_users, data.item_text),
    }
    als_predict = None
    if with_als:
        models["als_implicit"] = lambda: als_score_fn(spark, train, n_i, implicit=True)[0]
        _, als_predict = als_score_fn(spark, train, n_i, implicit=False)
    results = {}
    for name, build in models.items():
        results[name] = ranking_metrics(build(), train, val, n_i, k=k, item_vectors=data.item_text, ks=CURVE_KS)
        log.info("validation %s: NDCG@%d %.4f, precision@%d %.4f", name, k, results[name][f"ndcg_at_{k}"], k,
                 results[name][f"precision_at_{k}"])
    vu, vi = val[S.COL_USER_IDX].to_numpy(), val[S.COL_ITEM_IDX].to_numpy()
    pred = predict_ratings(params, H, data.item_text, data.user_text, vu, vi)
    results["scorer"].update(rmse=rmse(val[S.COL_RATING], pred), mae=mae(val[S.COL_RATING], pred))
    if als_predict is not None:
        p = als_predict(vu, vi)
        results["als_explicit"] = {"rmse": rmse(val[S.COL_RATING], p), "mae": mae(val[S.COL_RATING], p)}
    return results


def _plots(results: dict, history: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, m in results.items():
        if "curve_ndcg_at_1" not in m:
            continue
        axes[0].plot(CURVE_KS, [m[f"curve_ndcg_at_{k}"] for k in CURVE_KS], label=name)
        axes[1].plot(CURVE_KS, [m[f"curve_recall_at_{k}"] for k in CURVE_KS], label=name)
    for ax, t in zip(axes, ("NDCG@k", "recall@k")):
        ax.set_xlabel("k")
        ax.set_title(t)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    curves = out / "ndcg_recall_at_k.png"
    fig.tight_layout()
    fig.savefig(curves, dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["epoch"], history["loss"], label="training loss")
    ax2 = ax.twinx()
    ax2.plot(history["epoch"], history["val_ndcg_at_10"], color="tab:orange", label="validation NDCG@10")
    ax.set_xlabel("epoch")
    ax.set_title("scorer training")
    fig.legend(loc="upper center", fontsize=8)
    curve = out / "training_curve.png"
    fig.tight_layout()
    fig.savefig(curve, dpi=110)
    plt.close(fig)
    return [curves, curve]


def _release_driver_heap(spark) -> None:
    """Ask the driver JVM to collect and give back the heap that collecting the rating matrix
    grew (G1 shrinks the heap after a full collection): training needs that memory in Python."""
    try:
        spark.sparkContext._jvm.java.lang.System.gc()
    except Exception:  # Spark Connect has no JVM gateway here; nothing to release
        pass


def scorer_config(cfg: Settings):
    from jobs.scorer import ScorerConfig

    sc = ScorerConfig()
    if cfg.train_epochs:
        sc = dataclasses.replace(sc, epochs=cfg.train_epochs)
    if cfg.train_epoch_samples:
        sc = dataclasses.replace(sc, epoch_samples=cfg.train_epoch_samples)
    return sc


RETRAIN_POLICIES = ("auto", "always")


def retrain_decision(run_date: dt.date, *, policy: str, max_age_days: int, min_new: float,
                     champion_date: dt.date | None = None, champion_text_model: str | None = None,
                     text_model: str = "", seen: int = 0, new: int = 0) -> tuple[bool, str]:
    """(train?, reason). ``auto`` trains when there is no champion, the text model changed, the
    champion is ``max_age_days`` old, or the ratings after its data cutoff (``new``) reach
    ``min_new`` of those it was trained on (``seen``); a champion newer than D (a backfill) is kept."""
    if policy not in RETRAIN_POLICIES:
        raise ValueError(f"LMREC_RETRAIN must be one of {', '.join(RETRAIN_POLICIES)}, got {policy!r}")
    if policy == "always":
        return True, "LMREC_RETRAIN=always"
    if champion_date is None:
        return True, "no champion yet"
    if champion_date > run_date:
        return False, (f"the champion was trained on data up to {champion_date}, after {run_date}: a candidate "
                       f"for an earlier date is never promoted (LMREC_RETRAIN=always trains anyway)")
    if champion_text_model != text_model:
        return True, f"text model changed: champion {champion_text_model or 'unknown'}, now {text_model}"
    age = (run_date - champion_date).days
    frac = new / max(seen, 1)
    if age >= max_age_days:
        return True, f"the champion is {age} days old (LMREC_RETRAIN_MAX_AGE_DAYS={max_age_days})"
    if frac >= min_new:
        return True, (f"{new} ratings after the champion's cutoff, {frac:.1%} of the {seen} it was trained on "
                      f"(LMREC_RETRAIN_MIN_NEW={min_new:g})")
    return False, (f"the champion is {age} day(s) old and {new} new ratings are {frac:.2%} of the {seen} it was "
                   f"trained on (< LMREC_RETRAIN_MIN_NEW={min_new:g}): score uses it on D's histories")


def text_model_of(spark, cfg: Settings, run_date: dt.date) -> str:
    """The text model id(s) of D's item vectors (what the scorer's text projections were fit to)."""
    from jobs.io import read_table

    rows = read_table(spark, cfg, S.ITEM_EMBEDDINGS, run_date).select(S.COL_MODEL_ID).distinct().collect()
    return ",".join(sorted(r[0] for r in rows))


def _should_train(spark, cfg: Settings, run_date: dt.date, policy: str, text_model: str) -> tuple[bool, str, str | None]:
    """(train?, reason, champion version) under ``policy``; reads the champion's MLflow tags and
    one count over D's rating matrix. ``text_model``: the model id of D's item vectors."""
    from pyspark.sql import functions as F

    from jobs.io import read_table
    from jobs.model import version_by_alias
    from jobs.rating_matrix import cutoff

    limits = dict(max_age_days=cfg.retrain_max_age_days, min_new=cfg.retrain_min_new)
    if policy != "auto":  # 'always' needs nothing more; an unknown policy is refused by name
        return (*retrain_decision(run_date, policy=policy, **limits), None)
    champ = version_by_alias(setup_mlflow(cfg).MlflowClient(), S.ALIAS_CHAMPION)
    champ_date = dt.date.fromisoformat(champ.tags["run_date"]) if champ is not None else None
    seen = new = 0
    if champ_date is not None and champ_date <= run_date:
        after = F.col(S.COL_EVENT_TS) >= F.lit(cutoff(champ_date))
        row = read_table(spark, cfg, S.RATING_MATRIX, run_date).agg(
            F.count(F.when(after, 1)).alias("new"), F.count(F.when(~after, 1)).alias("seen")).first()
        seen, new = int(row["seen"]), int(row["new"])
    go, reason = retrain_decision(run_date, policy=policy, champion_date=champ_date,
                                  champion_text_model=champ.tags.get("text_model") if champ is not None else None,
                                  text_model=text_model, seen=seen, new=new, **limits)
    return go, reason, str(champ.version) if champ is not None else None


def run(run_date: dt.date, *, cfg: Settings, spark, source: str | None = None, shuffle_ratings: bool = False,
        with_als: bool | None = None, retrain: str | None = None) -> dict:
    """Train, evaluate and register a candidate for ``run_date``; returns the run id, version
    and validation metrics. Under the ``auto`` policy (``retrain`` or LMREC_RETRAIN) a fresh
    champion is kept instead and the result says ``decision: skipped`` and why.
    ``shuffle_ratings`` trains on shuffled ratings (a broken model, for testing the gate)."""
    from mlflow.models import infer_signature

    from jobs.evaluation import random_split, sample_users
    from jobs.model import LmrecScorer, load_training_data, save_state
    from jobs.scorer import fit_scorer

    policy = "always" if shuffle_ratings else (retrain or cfg.retrain)
    text_model = text_model_of(spark, cfg, run_date)
    go, why, champ_version = _should_train(spark, cfg, run_date, policy, text_model)
    if not go:
        log.info("train %s: skipped, champion version %s kept: %s", run_date, champ_version, why)
        return {"decision": "skipped", "reason": why, "version": None, "champion_version": champ_version}
    log.info("train %s: training (%s)", run_date, why)
    mlflow = setup_mlflow(cfg)
    sc = scorer_config(cfg)
    with_als = cfg.train_als if with_als is None else with_als
    data = load_training_data(spark, cfg, run_date)
    _release_driver_heap(spark)
    ratings = data.ratings
    if shuffle_ratings:
        rng = np.random.default_rng(sc.seed)
        ratings = ratings.assign(**{S.COL_ITEM_IDX: rng.permutation(ratings[S.COL_ITEM_IDX].to_numpy()),
                                    S.COL_RATING: rng.permutation(ratings[S.COL_RATING].to_numpy())})
        ratings = ratings.drop_duplicates([S.COL_USER_IDX, S.COL_ITEM_IDX])
    train, val = random_split(ratings, VAL_RATIO, seed=sc.seed)
    val = val[val[S.COL_USER_IDX].isin(train[S.COL_USER_IDX])]
    fit_kw = dict(n_users=data.n_users, n_items=data.n_items, item_text=data.item_text, user_text=data.user_text,
                  rating_max=data.rating_max, cfg=sc)
    with mlflow.start_run(run_name=f"train-{run_date}") as run, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mlflow.log_params(sc.params() | {"val_ratio": VAL_RATIO, "shuffle_ratings": shuffle_ratings})
        mlflow.set_tags({"run_date": str(run_date), "data_cutoff": f"{run_date + dt.timedelta(days=1)}T00:00:00Z",
                         **{f"delta_version.{t}": str(v) for t, v in data.versions.items()}})
        val_params, history = fit_scorer(train, val=val, **fit_kw)
        results = evaluate_all(spark, data, train, sample_users(val), val_params, with_als=with_als, params_lambda=sc.ease_lambda)
        for name, m in results.items():
            mlflow.log_metrics({f"{name}.{k}": float(v) for k, v in m.items() if not k.startswith("curve_")})
        for e, loss, ndcg in zip(history["epoch"], history["loss"], history["val_ndcg_at_10"]):
            mlflow.log_metrics({"train.loss": loss, "train.val_ndcg_at_10": ndcg}, step=e)
        table = pd.DataFrame({n: {k: v for k, v in m.items() if not k.startswith("curve_")} for n, m in results.items()}).T
        table.to_csv(tmp / "metrics.csv")
        mlflow.log_artifact(str(tmp / "metrics.csv"))
        for p in _plots(results, history, tmp):
            mlflow.log_artifact(str(p))

        val_params.to_npz(tmp / "val_params.npz")
        del val_params  # its EASE matrix is 1.6 GB at 20k items; the refit builds its own
        # Refit on every rating up to D with the chosen epochs and blend (documented in README).
        if cfg.train_processes > 1:
            from jobs.scorer import fit_scorer_distributed

            params = fit_scorer_distributed(ratings, num_processes=cfg.train_processes, use_gpu=cfg.task_gpus > 0,
                                            epochs=history["best_epoch"], blend=history["blend"], **fit_kw)
        else:
            params, _ = fit_scorer(ratings, epochs=history["best_epoch"], blend=history["blend"], **fit_kw)
        params.to_npz(tmp / "params.npz")
        save_state(tmp / "state.npz", data, ratings, sc.recency_weight)
        example = pd.DataFrame({S.COL_USER: data.user_ids[ratings[S.COL_USER_IDX].iloc[:3]].astype(str),
                                S.COL_ITEM: data.item_ids[ratings[S.COL_ITEM_IDX].iloc[:3]].astype(str)})
        signature = infer_signature(example, pd.DataFrame({S.COL_SCORE: [0.0], S.COL_RATING: [0.0]}))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=LmrecScorer(), signature=signature,
            artifacts={"params": str(tmp / "params.npz"), "val_params": str(tmp / "val_params.npz"),
                       "state": str(tmp / "state.npz")},
            pip_requirements=["numpy", "pandas", "scipy", "mlflow"])
        mv = mlflow.register_model(info.model_uri, S.MODEL_NAME)
        client = mlflow.MlflowClient()
        val_ndcg = results["scorer"]["ndcg_at_10"]
        for key, value in {"run_date": str(run_date), "val_ndcg_at_10": f"{val_ndcg:.6f}", "train_reason": why,
                           "text_model": text_model,
                           "popularity_ndcg_at_10": f"{results['popularity']['ndcg_at_10']:.6f}",
                           "best_epoch": str(history["best_epoch"]), "blend": json.dumps(history["blend"])}.items():
            client.set_model_version_tag(S.MODEL_NAME, mv.version, key, value)
        client.set_registered_model_alias(S.MODEL_NAME, S.ALIAS_CANDIDATE, mv.version)
        log.info("registered %s version %s (alias %s), validation NDCG@10 %.4f", S.MODEL_NAME, mv.version,
                 S.ALIAS_CANDIDATE, val_ndcg)
        return {"decision": "trained", "reason": why, "run_id": run.info.run_id, "version": str(mv.version),
                "val_ndcg_at_10": val_ndcg,
                "metrics": {n: {k: v for k, v in m.items() if not k.startswith("curve_")} for n, m in results.items()}}


def main(argv: list[str] | None = None) -> None:
    from jobs.cli import job_entry

    job_entry("train", argv)


if __name__ == "__main__":
    main()
