"""Rating prediction on a test part no selection saw: lmrec's rating model against tuned peers,
with paired bootstrap intervals, on ml-latest-small and Amazon Musical Instruments (5-core).

Protocol (one for every model, the train job's): per-user random fit / validation / test parts
70/10/20 (``ScorerConfig.fit_fraction``/``val_fraction``, ``three_way_split``, seed 42). Each model is fit on the fit part for every point of its grid and
picks its knobs (epochs, rank, λ, factors) by validation RMSE; it is then refit on fit + validation
with those knobs and measured once on test. Profile texts follow the same parts
(``lmrec.text.profiles``): while selecting, only texts about fit pairs; for the final fit, texts
about fit + validation pairs; never a text about a test pair (Amazon item texts are built from
those reviews only; ml item texts are the catalogue's titles and genres).

    .venv/bin/python benchmarks/ratings.py [ml-small|amazon ...]   # writes benchmarks/results/ratings.md

Peers: global mean, regularised biases, Surprise SVD and SVD++ (``pip install scikit-surprise``,
a benchmark-only dependency: ``make bench`` installs it), Spark ALS explicit with the bias
baseline for pairs ALS cannot score. Ablation: the rating model without its text parts.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import dataset_args, dataset_run, load, text_vectors, write_result  # noqa: E402
from lmrec.core import schema as S  # noqa: E402
from lmrec.model import baselines as B  # noqa: E402
from lmrec.model.evaluation import paired_bootstrap, rmse_stat, three_way_split  # noqa: E402
from lmrec.model.rating import RatingConfig, fit_rating_model, select_rating_model  # noqa: E402
from lmrec.model.scorer import ScorerConfig  # noqa: E402

log = logging.getLogger("bench.ratings")
SCALE = (0.5, 5.0)


def surprise_model(kind: str, part: pd.DataFrame, **kw):
    from surprise import SVD, Dataset, Reader, SVDpp

    data = Dataset.load_from_df(part[[S.COL_USER_IDX, S.COL_ITEM_IDX, S.COL_RATING]], Reader(rating_scale=SCALE))
    algo = (SVD if kind == "svd" else SVDpp)(random_state=S.SEED, **kw)
    algo.fit(data.build_full_trainset())
    return lambda u, i: np.array([algo.predict(a, b).est for a, b in zip(u, i)])


def als_model(spark, part, n_users, n_items, *, rank, reg, bias):
    from pyspark.ml.recommendation import ALS

    df = spark.createDataFrame(part[[S.COL_USER_IDX, S.COL_ITEM_IDX, S.COL_RATING]].astype(
        {S.COL_USER_IDX: "int32", S.COL_ITEM_IDX: "int32", S.COL_RATING: "float32"}))
    model = ALS(rank=rank, maxIter=15, regParam=reg, userCol=S.COL_USER_IDX, itemCol=S.COL_ITEM_IDX,
                ratingCol=S.COL_RATING, seed=S.SEED, coldStartStrategy="nan").fit(df)
    uf, itf = model.userFactors.toPandas(), model.itemFactors.toPandas()
    U, I = np.full((n_users, rank), np.nan), np.full((n_items, rank), np.nan)
    U[uf["id"].to_numpy()] = np.stack(uf["features"].to_numpy())
    I[itf["id"].to_numpy()] = np.stack(itf["features"].to_numpy())
    fallback = bias(part)

    def predict(u, i):
        p = (U[u] * I[i]).sum(1)
        return np.clip(np.where(np.isnan(p), fallback(u, i), p), *SCALE)

    return predict


def run(name: str, spark, encoder) -> str:
    r, items, ut, users, item_ids = load(name)
    nU, nI = len(users), len(item_ids)
    sc = ScorerConfig()
    fit, val, test = three_way_split(r, sc.fit_fraction, sc.val_fraction, seed=sc.seed)
    full = pd.concat([fit, val])
    y_val, y_test = val[S.COL_RATING].to_numpy(), test[S.COL_RATING].to_numpy()
    vu, vi, tu, ti = (x.to_numpy() for x in (val[S.COL_USER_IDX], val[S.COL_ITEM_IDX], test[S.COL_USER_IDX], test[S.COL_ITEM_IDX]))
    err = lambda p, y: float(np.sqrt(np.mean((np.asarray(p) - y) ** 2)))  # noqa: E731
    preds, chosen, secs = {}, {}, {}

    def tuned(label, build, grid):
        """Fit on fit for each grid point, pick by validation RMSE, refit on fit+val, predict test."""
        t0 = time.perf_counter()
        scores = {g: err(build(fit, **dict(g))(vu, vi), y_val) for g in grid}
        best = min(scores, key=scores.get)
        preds[label] = np.clip(build(full, **dict(best))(tu, ti), *SCALE)
        chosen[label] = f"{dict(best)} (val RMSE {scores[best]:.4f})"
        secs[label] = time.perf_counter() - t0
        log.info("%s %s: chose %s", name, label, chosen[label])

    mu = float(fit[S.COL_RATING].mean())
    preds["global mean"] = np.full(len(test), float(full[S.COL_RATING].mean()))
    chosen["global mean"], secs["global mean"] = "-", 0.0
    bias = lambda part, reg_user=15.0, reg_item=10.0: B.fit_biases(part, nU, nI, reg_user=reg_user, reg_item=reg_item)  # noqa: E731
    tuned("biases", bias, [(("reg_user", a), ("reg_item", b)) for a, b in RatingConfig().bias_reg_grid])
    tuned("Surprise SVD", lambda p, **k: surprise_model("svd", p, **k),
          [(("n_factors", f), ("reg_all", g), ("n_epochs", e)) for f, g, e in itertools.product((50, 100), (0.02, 0.05, 0.1), (20, 40))])
    tuned("Surprise SVD++", lambda p, **k: surprise_model("svdpp", p, **k),
          [(("n_factors", 20), ("reg_all", g), ("n_epochs", 20)) for g in (0.02, 0.05, 0.1)])
    tuned("Spark ALS (bias fallback)", lambda p, **k: als_model(spark, p, nU, nI, bias=bias, **k),
          [(("rank", k), ("reg", g)) for k, g in itertools.product((10, 50), (0.1, 0.3, 1.0))])

    # lmrec's rating model: knobs and epochs chosen on val (texts of fit pairs), refit on fit+val.
    cfg = RatingConfig()
    for label, with_text in (("lmrec rating model", True), ("lmrec rating model, no text", False)):
        t0 = time.perf_counter()
        T, Ut = text_vectors(encoder, items, ut, fit, users, item_ids) if with_text else (np.zeros((nI, encoder.dim), np.float32), np.zeros((nU, encoder.dim), np.float32))
        kw = dict(n_users=nU, n_items=nI, r_min=SCALE[0], r_max=SCALE[1])
        best_cfg, tried, _ = select_rating_model(fit, val, cfg=cfg, item_text=T, user_text=Ut, **kw)
        if with_text:
            T, Ut = text_vectors(encoder, items, ut, full, users, item_ids)
        params, _ = fit_rating_model(full, cfg=best_cfg, epochs=best_cfg.epochs, item_text=T, user_text=Ut, **kw)
        preds[label] = params.predict(tu, ti, B.interactions(full, nU, nI), T, Ut)
        key = (best_cfg.reg, best_cfg.text_reg, best_cfg.init_std)
        chosen[label] = (f"bias L2 {best_cfg.bias_regs}, reg {best_cfg.reg:g}, text_reg {best_cfg.text_reg:g}, "
                          f"init {best_cfg.init_std:g}, {best_cfg.epochs} epochs (val RMSE {tried[key][0]:.4f})")
        secs[label] = time.perf_counter() - t0
    ours = (preds["lmrec rating model"] - y_test) ** 2
    rows = []
    for label, p in preds.items():
        row = {"model": label, "test RMSE": err(p, y_test), "chosen on validation": chosen[label],
               "seconds": round(secs[label], 1), "lmrec - model (95% CI)": "-"}
        if label != "lmrec rating model":
            ci = paired_bootstrap(ours, (p - y_test) ** 2, stat=rmse_stat)
            row["lmrec - model (95% CI)"] = f"{ci['diff']:+.4f} [{ci['lo']:+.4f}, {ci['hi']:+.4f}]"
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("test RMSE").set_index("model")
    head = (f"### {name}: {len(r):,} ratings, {nU:,} users, {nI:,} items; fit/val/test {len(fit):,}/{len(val):,}/{len(test):,}; "
            f"fit-part mean {mu:.3f}\n\n")
    return head + table.to_markdown() + "\n"


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("lmrec.model.rating").setLevel(logging.WARNING)
    parts = dataset_run("ratings", dataset_args(__doc__, argv).datasets, run)
    write_result("ratings", "Test RMSE (lower is better), every model tuned on validation and refit on fit + validation; "
                 "intervals: paired bootstrap (1,000 resamples of test ratings) of lmrec's RMSE minus the model's "
                 "(below zero: lmrec better).\n\n" + "\n".join(parts))


if __name__ == "__main__":
    main()
