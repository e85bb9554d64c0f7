"""score: top-k recommendations for every active user of D with the model of D (the champion as
of D, as D's gate recorded it in ``model_ledger``), written to
``recommendations_staging`` (partition D); the validate job checks and publishes them.

The item matrix (and EASE's) is broadcast once; users are split over partitions
(``mapInPandas``); each block of users is one torch matrix multiply, one sparse-by-dense EASE
product and a ``torch.topk`` (:mod:`lmrec.model.ranking`), never a full sort or a cross join. Items the user rated by D are removed. Users with ratings are scored from history
and text; users with text only, from text; users with neither get the most popular items
(``model_version = 'popularity'``), as does everyone when no champion exists yet.

Incremental nights (``LMREC_INCREMENTAL_SCORE``, on by default): when D-1's published lists come
from the same model version, a user whose ratings, text vector and history items' vectors are the
same as D-1's, and none of whose D-1 items changed, keeps those items merged with their scores of
the changed items (new, re-embedded, listed or unlisted); everyone else is scored again. The
result is the full scoring's (tested); anything missing (D-1's lists or snapshots, another model,
a smaller k) means a full scoring.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import numpy as np
import pandas as pd

from lmrec.core import schema as S
from lmrec.core.errors import ParameterError
from lmrec.model.ranking import ROWS, check_score_where, kernel_model, lists_as_positions, merge_rows, popular_rows, recommend
from lmrec.core.settings import Settings

log = logging.getLogger(__name__)
USERS_PER_PARTITION = 2048


def model_of(spark, cfg: Settings, run_date: dt.date):
    """(version, params) of the model that scores D, or (None, None) for popularity: the version
    D's gate recorded in ``model_ledger``, else (no gate run for D) the champion as of D. Never a
    model trained on data after D, whenever D is run."""
    from lmrec.core.io import is_table, read_arrow
    from lmrec.model import registry as R

    client = R.setup_mlflow(cfg).MlflowClient()
    recorded = []
    if is_table(spark, cfg, S.MODEL_LEDGER):  # one row per date: read without the JVM where delta-rs can
        recorded = read_arrow(spark, cfg, S.MODEL_LEDGER, run_date, [S.COL_MODEL_VERSION])[0].column(0).to_pylist()
    if recorded:
        version, source = recorded[0], S.MODEL_LEDGER
    else:
        mv = R.champion_as_of(client, run_date)
        version, source = (str(mv.version) if mv is not None else None), "champion as of D"
    if version is None:
        return None, None
    mv = client.get_model_version(S.MODEL_NAME, version)
    if R.run_date_of(mv) is None or R.run_date_of(mv) > run_date:
        raise RuntimeError(f"{S.MODEL_NAME} version {version} was trained for {R.run_date_of(mv)}, after {run_date}: "
                           f"refusing to score {run_date} with it (point in time)")
    t0 = time.perf_counter()
    params = R.load_params(version)
    log.info("score %s: loaded %s version %s (%s, data cutoff %s) in %.1fs", run_date, S.MODEL_NAME, version, source,
             mv.tags.get(R.TAG_DATA_CUTOFF), time.perf_counter() - t0)
    return version, params


def since_yesterday(spark, cfg: Settings, run_date: dt.date, version: str, k: int, data, X, candidate: np.ndarray,
                    users: np.ndarray):
    """What D can keep of D-1's lists (:mod:`jobs.score`'s incremental night) for the modelled
    ``users`` (ids, rows of ``X``, D's interaction matrix): (kept mask over ``users``, changed item
    positions, D-1's item positions (n_kept, k; -1 padding), their scores, their explanations'
    positions), or None with the reason logged when D must be scored in full."""
    from lmrec.core.io import is_table, read_arrow
    from lmrec.core.pit import changed_keys

    prev_day = run_date - dt.timedelta(days=1)

    def full(why: str):
        log.info("score %s: full scoring (%s)", run_date, why)
        return None

    if not is_table(spark, cfg, S.RECOMMENDATIONS):
        return full("no recommendations table yet")
    # D's and D-1's snapshots are read into the driver through delta-rs (no Spark planning per
    # table) and compared there (:func:`lmrec.core.pit.changed_keys`).
    prev = read_arrow(spark, cfg, S.RECOMMENDATIONS, prev_day,
                      [S.COL_USER, S.COL_RANK, S.COL_ITEM, S.COL_SCORE, S.COL_BECAUSE, S.COL_MODEL_VERSION])[0].to_pandas()
    prev = prev[(prev[S.COL_MODEL_VERSION] == version) & (prev[S.COL_RANK] <= k)].drop(columns=S.COL_MODEL_VERSION)
    if prev.empty:
        return full(f"{prev_day} has no recommendations by version {version}")
    if int(prev[S.COL_RANK].max()) < k:
        return full(f"{prev_day}'s lists are shorter than k={k}")
    # The rating matrix by its stable integer ids (never renumbered): no 25M strings to hash.
    keys = {S.RATING_MATRIX: [S.COL_USER_IDX, S.COL_ITEM_IDX, S.COL_RATING, S.COL_EVENT_TS],
            S.USER_EMBEDDINGS: [S.COL_USER, S.COL_TEXT_SHA, S.COL_MODEL_ID],
            S.ITEM_EMBEDDINGS: [S.COL_ITEM, S.COL_TEXT_SHA, S.COL_MODEL_ID], S.ITEMS_RAW: [S.COL_ITEM]}
    both = {}
    for table, cols in keys.items():
        b = read_arrow(spark, cfg, table, prev_day, cols)[0].to_pandas()
        # D's rating matrix is in memory already (data.ratings: the same columns, times as naive UTC).
        a = data.ratings[cols] if table == S.RATING_MATRIX else read_arrow(spark, cfg, table, run_date, cols)[0].to_pandas()
        if b.empty:
            return full(f"{table} has no snapshot of {prev_day} (retention)")
        both[table] = (a, b)
    rating_max = max(cfg.rating_max, float(both[S.RATING_MATRIX][1][S.COL_RATING].max()))
    if rating_max != data.rating_max:
        return full("the rating scale's maximum changed")

    def changed(table: str, key: str) -> set:
        return changed_keys(*both[table], key)

    rated = np.array([i for i in changed(S.RATING_MATRIX, S.COL_USER_IDX) if i < len(data.user_ids)], dtype=np.int64)
    users_changed = set(data.user_ids[rated].tolist()) | changed(S.USER_EMBEDDINGS, S.COL_USER)
    pos = {t: i for i, t in enumerate(data.item_ids)}

    def positions(ids: set) -> np.ndarray:
        return np.array(sorted(pos[t] for t in ids if t in pos), dtype=np.int64)

    reembedded = positions(changed(S.ITEM_EMBEDDINGS, S.COL_ITEM))  # their factors changed: so did the profiles they are in
    items_changed = np.union1d(reembedded, positions(changed(S.ITEMS_RAW, S.COL_ITEM)))  # ... or they were (un)listed
    # D-1's lists as item positions; an item D no longer knows (-2) or lists, or a changed one, in
    # a user's list means that user is scored again.
    cols, vals, why = lists_as_positions(prev, users, pos, k)
    listed = (cols != -1).any(axis=1)
    stale = ((cols == -2) | ((cols >= 0) & ~candidate[np.maximum(cols, 0)]) | np.isin(cols, items_changed)).any(axis=1)
    touched = np.asarray(X[:, reembedded].getnnz(axis=1) > 0).ravel() if len(reembedded) else np.zeros(len(users), bool)
    moved = pd.Series(users).isin(users_changed).to_numpy()
    kept = listed & ~stale & ~touched & ~moved
    log.info("score %s: %d of %d users keep %s's lists (model %s), merged with %d changed items; %d scored again "
             "(%d changed ratings or text, %d with a changed history item, %d with a changed or unlisted item in "
             "their list, %d without a list)", run_date, int(kept.sum()), len(users), prev_day, version,
             len(items_changed), int((~kept).sum()), int(moved.sum()), int(touched.sum()),
             int(stale.sum()), int((~listed).sum()))
    return kept, items_changed, cols[kept], vals[kept], why[kept]


def build_recommendations(spark, cfg: Settings, run_date: dt.date, *, top_k: int, incremental: bool = True):
    """The recommendations DataFrame for D (without run_date) and the champion version used.
    ``incremental`` (and ``LMREC_INCREMENTAL_SCORE``): keep D-1's lists of unchanged users."""
    from pyspark.sql import functions as F

    from lmrec.core.io import read_arrow
    from lmrec.model.baselines import interactions
    from lmrec.model.scorer import history_weights
    from lmrec.model.training_data import load_training_data

    if not 1 <= top_k <= S.MAX_K:
        raise ParameterError(f"top_k must be between 1 and {S.MAX_K}, got {top_k}")
    check_score_where(cfg.score_where)  # before hours of reading, not when the kernel starts
    version, params = model_of(spark, cfg, run_date)
    t0 = time.perf_counter()
    data = load_training_data(spark, cfg, run_date)
    log.info("score %s: read %d ratings, %d users, %d items in %.1fs", run_date, len(data.ratings), data.n_users,
             data.n_items, time.perf_counter() - t0)
    ratings = data.ratings
    catalogue = read_arrow(spark, cfg, S.ITEMS_RAW, run_date, [S.COL_ITEM])[0].column(S.COL_ITEM).to_pylist()
    pos = {t: i for i, t in enumerate(data.item_ids)}
    candidate = np.zeros(data.n_items, dtype=bool)
    candidate[[pos[t] for t in catalogue if t in pos]] = True
    # The active users (pit.active_users: rated or wrote by the end of D) are the users D's index
    # was read for.
    uidx = np.flatnonzero(data.user_ids != "").astype(np.int64)
    users = pd.Series(data.user_ids[uidx], dtype=object)
    X = interactions(ratings, data.n_users, data.n_items)  # (n_users, n_items) 0/1: who rated what by D
    has_hist = np.asarray(X.sum(1)).ravel()[uidx] > 0
    has_text = np.abs(data.user_text[uidx]).sum(1) > 0
    popular = np.bincount(ratings[S.COL_ITEM_IDX], minlength=data.n_items).astype(np.float64)
    popular[~candidate] = -np.inf

    modelled = np.zeros(len(uidx), dtype=bool) if params is None else (has_hist | has_text)
    parts = []
    if modelled.any():
        t0 = time.perf_counter()
        mu_idx = uidx[modelled]
        # The history weights only when a model scores: the popularity-only night skips them.
        H = history_weights(ratings, data.n_users, data.n_items, rating_max=data.rating_max,
                            recency_weight=params.recency_weight)
        U, _ = params.user_factors(mu_idx, H[mu_idx], data.item_text, data.user_text[mu_idx])
        I, beta, _ = params.item_factors(np.arange(data.n_items), data.item_text)
        ease_pos = params.ease_items[params.ease_items < data.n_items]
        model = kernel_model(I, beta, data.item_ids, candidate, alpha=params.alpha, gamma=params.gamma,
                             ease_B=params.ease_B[: len(ease_pos), : len(ease_pos)], ease_pos=ease_pos)
        log.info("score %s: user and item factors in %.1fs; scoring %d users in partitions of %d",
                 run_date, time.perf_counter() - t0, len(mu_idx), USERS_PER_PARTITION)
        mu, Xm = users[modelled].to_numpy(), X[mu_idx]
        inc = (since_yesterday(spark, cfg, run_date, version, top_k, data, Xm, candidate, mu)
               if incremental and cfg.incremental_score else None)
        again = np.ones(len(mu), dtype=bool)
        if inc is not None and inc[0].any():
            kept, changed, prev_cols, prev_vals, prev_because = inc
            again = ~kept
            t0 = time.perf_counter()
            merged = merge_rows(model, mu[kept], U[kept], Xm[kept], top_k, changed, prev_cols, prev_vals, prev_because)
            log.info("score %s: merged %d kept users' lists with %d changed items in %.1fs", run_date, int(kept.sum()),
                     len(changed), time.perf_counter() - t0)
            parts.append(spark.createDataFrame(merged, ROWS).withColumn(S.COL_MODEL_VERSION, F.lit(version)))
        if again.any():
            recs = recommend(spark, model, mu[again], U[again], Xm[again], top_k,
                             users_per_partition=USERS_PER_PARTITION, where=cfg.score_where)
            parts.append(recs.withColumn(S.COL_MODEL_VERSION, F.lit(version)))
    if (~modelled).any():
        fallback = popular_rows(users[~modelled].to_numpy(), X[uidx[~modelled]], popular, data.item_ids, top_k)
        parts.append(spark.createDataFrame(fallback, ROWS).withColumn(S.COL_MODEL_VERSION, F.lit(S.POPULARITY_VERSION)))
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    log.info("score %s: %d active users (%d by the model %s, %d popularity fallback), %d candidate items, k=%d",
             run_date, len(uidx), int(modelled.sum()), version, int((~modelled).sum()), int(candidate.sum()), top_k)
    return out, version


def run(run_date: dt.date, *, cfg: Settings, spark, source: str | None = None, top_k: int | None = None,
        full_refresh: bool = False) -> dict:
    """Score every active user for ``run_date`` into the staging table; returns counts.
    ``full_refresh``: score everyone, ignoring D-1's lists."""
    import pyarrow.compute as pc

    from lmrec.core.io import read_arrow, write_partition

    k = cfg.top_k if top_k is None else top_k
    recs, version = build_recommendations(spark, cfg, run_date, top_k=k, incremental=not full_refresh)
    t0 = time.perf_counter()
    write_partition(recs, cfg, S.RECOMMENDATIONS_STAGING, run_date)
    log.info("score %s: scored and wrote %s partition in %.1fs", run_date, S.RECOMMENDATIONS_STAGING,
             time.perf_counter() - t0)
    staged = read_arrow(spark, cfg, S.RECOMMENDATIONS_STAGING, run_date, [S.COL_USER])[0].column(S.COL_USER)
    n_rows, n_users = len(staged), len(pc.unique(staged))
    log.info("score %s: staged %d rows for %d users (model version %s)", run_date, n_rows, n_users, version)
    return {"rows": n_rows, "users": n_users, "model_version": version, "top_k": k}


def main(argv: list[str] | None = None) -> None:
    from lmrec.pipeline import job_entry

    job_entry("score", argv)


if __name__ == "__main__":
    main()
