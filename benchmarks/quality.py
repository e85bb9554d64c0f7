"""Ranking quality on ml-latest-small and Amazon Musical Instruments (5-core), one protocol for
every model, the train job's: per-user random fit / validation / test parts 70/10/20
(``harness.protocol_split``, seed 42). Every model is fit on the fit part for each point of its
grid and picks its knobs by validation NDCG@10; it is reported once, on the test part, ranking every
item the user rated in neither fit nor validation (as train and gate do). Intervals: paired bootstrap
(1,000 resamples of test users) of the lmrec scorer's NDCG@10 minus the model's.

Profiles see only texts about fit pairs (``lmrec.text.profiles``): never a review or tag about a
validation or test pair. Amazon items have no catalogue text: an item is known by its fit reviews.

Models: the lmrec scorer (EASE λ, side weight and item-kNN weight, epochs and blend chosen on
validation), its neural part alone, its EASE part alone (EASE with item-kNN folded in), the same
three without any text (the language model's share on warm users), EASE (the scorer's λ, on the
grid that scales with the data; without side information or kNN), collective EASE with
the MiniLM item vectors as side information (Jeunen et al., RecSys 2020; side weight on validation at EASE's λ, 0.03x to 256x the mean item count), item-kNN
(neighbours, shrinkage), Spark ALS implicit (rank, reg), popularity, text only. Then cold items:
20% of the items held out entirely, ranked among themselves (the scorer without EASE vs text only).

    .venv/bin/python benchmarks/quality.py [ml-small|amazon ...]   # writes benchmarks/results/quality.md
    .venv/bin/python benchmarks/quality.py --cold [ml-small|amazon ...]   # cold items only: quality-cold.md
"""

from __future__ import annotations

import dataclasses
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
from lmrec.model.evaluation import cold_item_split, paired_bootstrap, ranking_metrics  # noqa: E402
from lmrec.model.harness import als_score_fn, protocol_split  # noqa: E402
from lmrec.model.scorer import ScorerConfig, fit_scorer, histories, make_score_fn  # noqa: E402

K = 10
COLS = [f"ndcg_at_{K}", f"precision_at_{K}", f"recall_at_{K}", f"map_at_{K}"]
log = logging.getLogger("bench.quality")


class Table:
    """Test-part metrics, per-user NDCG, chosen knobs and fit seconds of each model."""

    def __init__(self, seen, test, n_items, candidates=None):
        self.seen, self.test, self.n_items, self.candidates = seen, test, n_items, candidates
        self.rows, self.per_user = {}, {}

    def add(self, label, fn, chosen, seconds):
        m = ranking_metrics(fn, self.seen, self.test, self.n_items, k=K, per_user=True, candidates=self.candidates)
        self.per_user[label] = m.pop("ndcg_per_user")
        self.rows[label] = {**{c: m[c] for c in COLS}, "chosen on validation": chosen, "fit s": round(seconds, 1)}
        log.info("%s: test NDCG@10 %.4f (%s)", label, m[f"ndcg_at_{K}"], chosen)

    def markdown(self, ours: str) -> str:
        df = pd.DataFrame(self.rows).T
        for label in df.index:
            if label != ours:
                ci = paired_bootstrap(self.per_user[ours].to_numpy(), self.per_user[label].to_numpy(), seed=S.SEED)
                df.loc[label, f"{ours} - model, NDCG@10 (95% CI)"] = f"{ci['diff']:+.4f} [{ci['lo']:+.4f}, {ci['hi']:+.4f}]"
        df[COLS] = df[COLS].astype(float).round(4)
        return df.sort_values(COLS[0], ascending=False).fillna("-").to_markdown()


def run(name: str, spark, encoder) -> str:
    r, items, ut, users, item_ids = load(name)
    nU, nI, r_max = len(users), len(item_ids), float(r[S.COL_RATING].max())
    sc = ScorerConfig()
    fit, val, test = protocol_split(r, sc)
    T, Ut = text_vectors(encoder, items, ut, fit, users, item_ids)
    table = Table(pd.concat([fit, val]), test, nI)
    H, X = histories(fit, nU, nI, rating_max=r_max, recency_weight=sc.recency_weight)

    def val_ndcg(fn) -> float:
        return ranking_metrics(fn, fit, val, nI, k=K)[f"ndcg_at_{K}"]

    def tuned(label, build, grid):
        t0 = time.perf_counter()
        scores = {g: val_ndcg(build(**dict(g))) for g in grid}
        best = max(scores, key=scores.get)
        table.add(label, build(**dict(best)), f"{dict(best)} (val {scores[best]:.4f})", time.perf_counter() - t0)

    scorer = {}
    for label, (Ti, Ui) in (("lmrec scorer", (T, Ut)), ("lmrec scorer, no text", (0 * T, 0 * Ut))):
        t0 = time.perf_counter()
        params, hist = fit_scorer(fit, val=val, n_users=nU, n_items=nI, item_text=Ti, user_text=Ui, rating_max=r_max,
                                  cfg=sc)
        secs = time.perf_counter() - t0
        knobs = (f"λ {hist['ease_lambda']:.0f}, side weight {hist['ease_side_weight']:.3g}, "
                 f"kNN weight {hist['ease_knn_weight']:g}, {hist['best_epoch']} epochs, "
                 f"text decay {hist['text_decay']:g}, batch {hist['batch_size']}, "
                 f"blend ({hist['blend'][0]:.3g}, {hist['blend'][1]:.3g})")
        table.add(label, make_score_fn(params, H, X, Ti, Ui, nI), knobs, secs)
        neural = dataclasses.replace(params, alpha=1.0, gamma=0.0)
        table.add(f"{label}: neural part alone", make_score_fn(neural, H, X, Ti, Ui, nI), "blend forced (1, 0)", secs)
        ease_part = dataclasses.replace(params, alpha=0.0, gamma=1.0)
        table.add(f"{label}: EASE part alone", make_score_fn(ease_part, H, X, Ti, Ui, nI), "blend forced (0, 1)", secs)
        scorer[label] = (params, hist)
    params, hist = scorer["lmrec scorer"]
    lam = hist["ease_lambda"]
    tried = hist["ease_lambda_tried"]
    t0 = time.perf_counter()  # plain EASE at the scorer's λ (its EASE part is collective when it chose a side weight)
    table.add("EASE", B.fit_ease(fit, nU, nI, lam=lam), f"λ {lam:.0f} (grid {', '.join(f'{x:.0f}' for x in tried)}; "
              f"best val {max(tried.values()):.4f})", time.perf_counter() - t0)
    count = X.nnz / max(1, len(B.popular_items(X, 20_000)))
    tuned("collective EASE + MiniLM item vectors", lambda w: B.fit_ease(fit, nU, nI, lam=lam, side=T, side_weight=w),
          [(("w", c * count),) for c in (0.03, 0.1, 0.3, 1.0, 4.0, 16.0, 64.0, 256.0)])
    tuned("item-kNN", lambda k, shrink: B.fit_item_knn(fit, nU, nI, k=k, shrink=shrink),
          [(("k", k), ("shrink", s)) for k, s in itertools.product((20, 50, 200, None), (0.0, 10.0, 50.0))])
    tuned("Spark ALS implicit", lambda rank, reg: als_score_fn(
        spark, fit, nI, implicit=True, sc=dataclasses.replace(sc, als_rank=rank, als_reg_implicit=reg))[0],
          [(("rank", k), ("reg", g)) for k, g in itertools.product((32, 128), (0.1, 1.0, 10.0))])
    table.add("popularity", B.fit_popularity(fit, nU, nI), "-", 0.0)
    profile = np.asarray(H @ T)
    profile /= np.clip(np.linalg.norm(profile, axis=1, keepdims=True), 1e-9, None)
    table.add("text only", B.fit_text_only(np.where(np.asarray(X.sum(1)) > 0, profile, Ut), T), "-", 0.0)

    head = (f"### {name}: {len(r):,} ratings, {nU:,} users, {nI:,} items; fit/val/test "
            f"{len(fit):,}/{len(val):,}/{len(test):,} ({test[S.COL_USER_IDX].nunique():,} test users)\n\n")
    return head + table.markdown("lmrec scorer") + "\n\n" + cold_items(name, r, items, ut, users, item_ids, encoder)


def cold_items(name, r, items, ut, users, item_ids, encoder) -> str:
    """Cold items: 20% of the items never in fit or validation, ranked among themselves (the scorer
    without EASE vs the cosine of text profiles). An item with no text of its own is known only by
    its fit reviews, so on a catalogue without text a cold item has none: the report says how many
    have any, and a constant score (ties broken by the item index) is the floor to read it against."""
    nU, nI, r_max = len(users), len(item_ids), float(r[S.COL_RATING].max())
    sc = ScorerConfig()
    ctrain, ctest, cold = cold_item_split(r, 0.2, seed=S.SEED)
    cfit, cval, _ = protocol_split(ctrain, dataclasses.replace(sc, fit_fraction=0.875, val_fraction=0.125))
    cT, cU = text_vectors(encoder, items, ut, ctrain, users, item_ids)
    with_text = int(np.abs(cT[cold]).sum(1).astype(bool).sum())
    ccfg = dataclasses.replace(sc, use_ease=False)
    t0 = time.perf_counter()
    cparams, _ = fit_scorer(cfit, val=cval, n_users=nU, n_items=nI, item_text=cT, user_text=cU, rating_max=r_max, cfg=ccfg)
    cH, cX = histories(ctrain, nU, nI, rating_max=r_max, recency_weight=sc.recency_weight)
    cold_table = Table(ctrain, ctest, nI, candidates=cold)
    cold_table.add("lmrec scorer (no EASE)", make_score_fn(cparams, cH, cX, cT, cU, nI), "epochs on validation",
                   time.perf_counter() - t0)
    cprof = np.asarray(cH @ cT)
    cprof /= np.clip(np.linalg.norm(cprof, axis=1, keepdims=True), 1e-9, None)
    cold_table.add("text only", B.fit_text_only(cprof, cT), "-", 0.0)
    rng = np.random.default_rng(0)
    cold_table.add("random", lambda u: rng.random((len(u), nI)), "-", 0.0)
    cold_table.add("constant score (item index order)", lambda u: np.zeros((len(u), nI)), "-", 0.0)
    return (f"{name}, cold items ({len(cold):,} held out entirely, {with_text:,} of them with any text; "
            f"{ctest[S.COL_USER_IDX].nunique():,} users with a cold test item; ranked among the cold items):\n\n"
            + cold_table.markdown("lmrec scorer (no EASE)") + "\n")


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = dataset_args(__doc__, argv, ("--cold", "only the cold-item tables (minutes): benchmarks/results/quality-cold.md"))
    if args.cold:
        parts = dataset_run("quality", args.datasets, lambda name, spark, encoder: cold_items(name, *load(name), encoder))
        return write_result("quality-cold", "Cold items only (`--cold`), the same protocol as quality.md.\n\n"
                            + "\n".join(parts))
    parts = dataset_run("quality", args.datasets, run)
    write_result("quality", f"Top-{K} ranking on the test part, every model tuned on validation (train's protocol); "
                 "k = 10, items rated in fit or validation excluded.\n\n" + "\n".join(parts))


if __name__ == "__main__":
    main()
