"""Quality on ml-latest-small: per-user random 75/25 split (seed 42), k = 10, seen items removed;
every model in one table, plus the cold-item protocol (20% of items held out entirely).

    .venv/bin/python benchmarks/quality.py            # writes benchmarks/results/quality.md
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result, ML_DATE, bench_settings, ml_small_warehouse  # noqa: E402
from lmrec.model import baselines as B  # noqa: E402
from lmrec.core import schema as S  # noqa: E402
from lmrec.model.evaluation import cold_item_split, mae, random_split, ranking_metrics, rmse  # noqa: E402
from lmrec.model.training_data import load_training_data  # noqa: E402
from lmrec.model.scorer import ScorerConfig, fit_scorer, histories, make_score_fn, predict_ratings  # noqa: E402
from lmrec.core.spark import get_spark  # noqa: E402
from lmrec.model.harness import als_score_fn  # noqa: E402

K = 10
COLS = ["ndcg_at_10", "precision_at_10", "recall_at_10", "map_at_10", "rmse"]


def fit_scorer_protocol(train, data, cfg):
    """Early stopping and blend on an inner 90/10 split of train, then refit on all of train."""
    inner, val = random_split(train, 0.9, seed=cfg.seed + 1)
    kw = dict(n_users=data.n_users, n_items=data.n_items, item_text=data.item_text, user_text=data.user_text,
              rating_max=data.rating_max, cfg=cfg)
    _, hist = fit_scorer(inner, val=val, **kw)
    params, _ = fit_scorer(train, epochs=hist["best_epoch"], blend=hist["blend"], **kw)
    return params, hist


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = bench_settings("ml-small")
    spark = get_spark(cfg, "lmrec-bench-quality")
    ml_small_warehouse(spark, cfg)
    data = load_training_data(spark, cfg, ML_DATE)
    train, test = random_split(data.ratings, 0.75, seed=S.SEED)
    nU, nI = data.n_users, data.n_items
    sc = ScorerConfig()
    rows, times = {}, {}

    t0 = time.perf_counter()
    params, hist = fit_scorer_protocol(train, data, sc)
    times["scorer"] = time.perf_counter() - t0
    H, X = histories(train, nU, nI, rating_max=data.rating_max, recency_weight=sc.recency_weight)
    models = {"scorer": make_score_fn(params, H, X, data.item_text, data.user_text, nI)}
    ease = lambda tr, nu, ni: B.fit_ease(tr, nu, ni, lam=sc.ease_lambda)  # noqa: E731  same λ as the scorer's part
    for name, fit in (("popularity", B.fit_popularity), ("item_knn", B.fit_item_knn), ("ease", ease)):
        t0 = time.perf_counter()
        models[name] = fit(train, nU, nI)
        times[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    models["als_implicit"], _ = als_score_fn(spark, train, nI, implicit=True, sc=ScorerConfig(als_rank=64))
    times["als_implicit"] = time.perf_counter() - t0
    profile = np.asarray(H @ data.item_text)
    profile /= np.clip(np.linalg.norm(profile, axis=1, keepdims=True), 1e-9, None)
    models["text_only"] = B.fit_text_only(profile, data.item_text)
    for name, fn in models.items():
        rows[name] = ranking_metrics(fn, train, test, nI, k=K)
    pred = predict_ratings(params, H, data.item_text, data.user_text, test[S.COL_USER_IDX].to_numpy(), test[S.COL_ITEM_IDX].to_numpy())
    rows["scorer"]["rmse"] = rmse(test[S.COL_RATING], pred)
    _, als_pred = als_score_fn(spark, train, nI, implicit=False, sc=ScorerConfig(als_rank=64))
    p = als_pred(test[S.COL_USER_IDX].to_numpy(), test[S.COL_ITEM_IDX].to_numpy())
    rows["als_explicit"] = {"rmse": rmse(test[S.COL_RATING], p)}

    # Cold items: 20% of items never seen in training; rank among the cold items only.
    ctrain, ctest, cold = cold_item_split(data.ratings, 0.2, seed=S.SEED)
    cparams, _ = fit_scorer_protocol(ctrain, data, dataclasses.replace(sc, use_ease=False))
    cH, cX = histories(ctrain, nU, nI, rating_max=data.rating_max, recency_weight=sc.recency_weight)
    cprof = np.asarray(cH @ data.item_text)
    cprof /= np.clip(np.linalg.norm(cprof, axis=1, keepdims=True), 1e-9, None)
    rng = np.random.default_rng(0)
    cold_rows = {
        "scorer": ranking_metrics(make_score_fn(cparams, cH, cX, data.item_text, data.user_text, nI), ctrain, ctest, nI, k=K, candidates=cold),
        "text_only": ranking_metrics(B.fit_text_only(cprof, data.item_text), ctrain, ctest, nI, k=K, candidates=cold),
        "random": ranking_metrics(lambda u: rng.random((len(u), nI)), ctrain, ctest, nI, k=K, candidates=cold),
    }

    table = pd.DataFrame(rows).T.reindex(columns=COLS)
    table["fit_seconds"] = pd.Series(times)
    cold_table = pd.DataFrame(cold_rows).T.reindex(columns=COLS[:4])
    text = (f"ml-latest-small, {len(data.ratings):,} ratings, per-user random 75/25 (seed {S.SEED}), k={K}, seen items removed.\n"
            f"Scorer: best epoch {hist['best_epoch']}, blend (alpha, gamma) = {tuple(round(x, 4) for x in hist['blend'])}.\n\n"
            + table.round(4).to_markdown() + "\n\nCold items (20% of items held out, ranked among the cold items):\n\n"
            + cold_table.round(4).to_markdown() + "\n")
    write_result("quality", text)


if __name__ == "__main__":
    main()
