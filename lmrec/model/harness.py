"""The training harness: the night's training configuration from the settings, the scorer and
every baseline evaluated on one split, and the plots train logs to MLflow."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lmrec.core import schema as S
from lmrec.core.settings import Settings
from lmrec.model import baselines as B
from lmrec.model.evaluation import mae, ranking_metrics, rmse
from lmrec.model.scorer import ScorerConfig, histories, make_score_fn, predict_ratings

log = logging.getLogger(__name__)
CURVE_KS = list(range(1, 51))


def scorer_config(cfg: Settings) -> ScorerConfig:
    """The training configuration of a night: ScorerConfig's defaults, the device from
    LMREC_DEVICE, and the LMREC_TRAIN_* caps where set."""
    sc = dataclasses.replace(ScorerConfig(), device=cfg.device)
    if cfg.train_epochs:
        sc = dataclasses.replace(sc, epochs=cfg.train_epochs)
    if cfg.train_epoch_samples:
        sc = dataclasses.replace(sc, epoch_samples=cfg.train_epoch_samples)
    return sc


def als_score_fn(spark, train: pd.DataFrame, n_items: int, *, implicit: bool, sc: ScorerConfig | None = None):
    """Spark MLlib ALS on the same split, with the ALS settings of ``sc``; returns (score fn,
    predict fn for (u, i) pairs)."""
    from pyspark.ml.recommendation import ALS

    sc = sc or ScorerConfig()
    rank = sc.als_rank

    df = spark.createDataFrame(train[[S.COL_USER_IDX, S.COL_ITEM_IDX, S.COL_RATING]].astype(
        {S.COL_USER_IDX: "int32", S.COL_ITEM_IDX: "int32", S.COL_RATING: "float32"}))
    model = ALS(rank=rank, maxIter=sc.als_max_iter, regParam=sc.als_reg_implicit if implicit else sc.als_reg_explicit,
                implicitPrefs=implicit, alpha=sc.als_alpha,
                userCol=S.COL_USER_IDX, itemCol=S.COL_ITEM_IDX, ratingCol=S.COL_RATING, seed=sc.seed,
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


def ease_part(params, X, n_items: int):
    """The scorer's EASE component alone (γ = 1, no neural part): EASE fitted on the same split."""
    ease = dataclasses.replace(params, alpha=0.0, gamma=1.0)
    return lambda users: ease.ease_scores(X[users], n_items)


def evaluate_all(spark, data, train: pd.DataFrame, val: pd.DataFrame, params, *, k: int = 10, with_als: bool = True,
                 sc: ScorerConfig | None = None):
    """Metrics of the scorer and every baseline on one split. Returns {model: metrics}."""
    sc = sc or ScorerConfig()
    n_u, n_i = data.n_users, data.n_items
    H, X = histories(train, n_u, n_i, rating_max=data.rating_max, recency_weight=params.recency_weight)
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
        "ease": lambda: ease_part(params, X, n_i) if len(params.ease_items)
        else B.fit_ease(train, n_u, n_i, lam=sc.ease_lambda),
        "text_only": lambda: B.fit_text_only(text_users, data.item_text),
    }
    als_predict = None
    if with_als:
        models["als_implicit"] = lambda: als_score_fn(spark, train, n_i, implicit=True, sc=sc)[0]
        _, als_predict = als_score_fn(spark, train, n_i, implicit=False, sc=sc)
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


def plots(results: dict, history: dict, out: Path) -> list[Path]:
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
