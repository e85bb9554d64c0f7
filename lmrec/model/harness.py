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
from lmrec.model.evaluation import mae, paired_bootstrap, ranking_metrics, rmse, rmse_stat, three_way_split
from lmrec.model.rating import RatingConfig
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


def protocol_split(ratings: pd.DataFrame, sc: ScorerConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """D's (fit, validation, test) parts, the one protocol of train and gate: per-user random
    (``sc.fit_fraction``, ``sc.val_fraction``, the rest; seed ``sc.seed``); validation and test
    keep the users that have fit rows. Models are fit on fit, choose every knob on validation, and
    are reported and gated on test only."""
    fit, val, test = three_way_split(ratings, sc.fit_fraction, sc.val_fraction, seed=sc.seed)
    users = fit[S.COL_USER_IDX].unique()
    return fit, val[val[S.COL_USER_IDX].isin(users)], test[test[S.COL_USER_IDX].isin(users)]


def rating_config(cfg: Settings) -> RatingConfig:
    """The rating model's configuration of a night: defaults, the device, the LMREC_TRAIN_* caps."""
    rc = dataclasses.replace(RatingConfig(), device=scorer_config(cfg).resolved_device())
    if cfg.train_epochs:
        rc = dataclasses.replace(rc, epochs=cfg.train_epochs)
    if cfg.train_epoch_samples:
        rc = dataclasses.replace(rc, epoch_samples=cfg.train_epoch_samples)
    return rc


def als_score_fn(spark, train: pd.DataFrame, n_items: int, *, implicit: bool, sc: ScorerConfig | None = None):
    """Spark MLlib ALS on the same split, with the ALS settings of ``sc``; returns (score fn,
    predict fn for (u, i) pairs). Pairs ALS cannot score (a user or item without ratings in
    ``train``) get the regularised bias baseline, not 0."""
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
    known_u, known_i = np.zeros(n_users, bool), np.zeros(n_items, bool)
    known_u[uf["id"].to_numpy()], known_i[itf["id"].to_numpy()] = True, True
    fallback = B.fit_biases(train, n_users, n_items)
    score = lambda users: U[np.clip(users, 0, n_users - 1)] @ I.T  # noqa: E731

    def predict(u, i):
        u, i = np.asarray(u), np.asarray(i)
        uc = np.clip(u, 0, n_users - 1)
        ok = (u < n_users) & known_u[uc] & known_i[i]
        return np.where(ok, (U[uc] * I[i]).sum(1), fallback(u, i))

    return score, predict


def ease_part(params, X, n_items: int):
    """The scorer's EASE component alone (γ = 1, no neural part) without the item-kNN folded into
    it: EASE fitted on the same split (collective EASE with the item text vectors when validation
    chose a side weight). With a fold, its matrix less c · the items' cosine over ``X`` (the
    binary histories it was fit on): a Gram matrix instead of another inverse."""
    plain = params.ease_B
    if params.ease_knn_scale:
        plain = B.item_cosine(X[:, params.ease_items])
        plain *= np.float32(-params.ease_knn_scale)
        plain += params.ease_B  # in place: two n x n matrices, not three
    ease = dataclasses.replace(params, alpha=0.0, gamma=1.0, ease_B=plain, ease_knn_scale=0.0)
    return lambda users: ease.ease_scores(X[users], n_items)


def evaluate_all(spark, data, fit: pd.DataFrame, test: pd.DataFrame, params, *, seen: pd.DataFrame | None = None,
                 rating=None, k: int = 10, with_als: bool = True, sc: ScorerConfig | None = None):
    """Metrics of the scorer and every baseline on the test part, all fit on ``fit``. Rankings
    exclude the ``seen`` pairs (default ``fit``; train passes fit + validation, which are neither
    candidates nor relevant). ``rating``: predict(users, items) of the rating model.

    Returns {model: metrics}; each baseline's metrics carry the paired bootstrap 95% interval of
    the scorer's NDCG@k minus its own (``scorer_minus_ndcg_at_k``, ``…_lo``, ``…_hi``, over test
    users), and each rating baseline the rating model's RMSE minus its own (over test ratings)."""
    sc = sc or ScorerConfig()
    seen = fit if seen is None else seen
    n_u, n_i = data.n_users, data.n_items
    H, X = histories(fit, n_u, n_i, rating_max=data.rating_max, recency_weight=params.recency_weight)
    profile = np.asarray(H @ data.item_text)
    profile /= np.clip(np.linalg.norm(profile, axis=1, keepdims=True), 1e-9, None)
    # Text-only: the user's own text where there is no history, else their history's text profile.
    text_users = np.where(np.asarray(X.sum(1)).ravel()[:, None] > 0, profile, data.user_text)
    # Built one at a time and dropped after evaluation: at 20k items item-kNN's similarity is
    # 1.6 GB. The EASE baseline reuses the EASE matrix the scorer fit on the same part and λ
    # (less the item-kNN folded into it).
    models = {
        "scorer": lambda: make_score_fn(params, H, X, data.item_text, data.user_text, n_i),
        "popularity": lambda: B.fit_popularity(fit, n_u, n_i),
        "item_knn": lambda: B.fit_item_knn(fit, n_u, n_i),
        "ease": lambda: ease_part(params, X, n_i) if len(params.ease_items)
        else B.fit_ease(fit, n_u, n_i, lam=sc.ease_lambda),
        "text_only": lambda: B.fit_text_only(text_users, data.item_text),
    }
    als_predict = None
    if with_als:
        models["als_implicit"] = lambda: als_score_fn(spark, fit, n_i, implicit=True, sc=sc)[0]
        _, als_predict = als_score_fn(spark, fit, n_i, implicit=False, sc=sc)
    results, per_user = {}, {}
    for name, build in models.items():
        m = ranking_metrics(build(), seen, test, n_i, k=k, item_vectors=data.item_text, ks=CURVE_KS, per_user=True)
        per_user[name] = m.pop("ndcg_per_user")
        results[name] = m
        log.info("test %s: NDCG@%d %.4f, precision@%d %.4f", name, k, m[f"ndcg_at_{k}"], k, m[f"precision_at_{k}"])
    key = f"ndcg_at_{k}"
    for name in results:
        if name != "scorer":
            ci = paired_bootstrap(per_user["scorer"].to_numpy(), per_user[name].to_numpy(), seed=sc.seed)
            results[name].update({f"scorer_minus_{key}": ci["diff"], f"scorer_minus_{key}_lo": ci["lo"],
                                  f"scorer_minus_{key}_hi": ci["hi"]})
    tu, ti, y = test[S.COL_USER_IDX].to_numpy(), test[S.COL_ITEM_IDX].to_numpy(), test[S.COL_RATING].to_numpy()
    ours = rating(tu, ti) if rating is not None else predict_ratings(params, H, data.item_text, data.user_text, tu, ti)
    results["scorer"].update(rmse=rmse(y, ours), mae=mae(y, ours))
    rating_baselines = {"biases": B.fit_biases(fit, n_u, n_i)}
    if als_predict is not None:
        rating_baselines["als_explicit"] = als_predict
    for name, predict in rating_baselines.items():
        p = np.clip(predict(tu, ti), float(fit[S.COL_RATING].min()), data.rating_max)
        ci = paired_bootstrap((ours - y) ** 2, (p - y) ** 2, stat=rmse_stat, seed=sc.seed)
        results.setdefault(name, {}).update(rmse=rmse(y, p), mae=mae(y, p), scorer_minus_rmse=ci["diff"],
                                            scorer_minus_rmse_lo=ci["lo"], scorer_minus_rmse_hi=ci["hi"])
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
