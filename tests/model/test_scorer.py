"""Scorer on the demo catalogue with real MiniLM text vectors: learns, beats popularity, cold items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmrec.core import schema as S
from lmrec.model.baselines import fit_ease, fit_popularity, interactions
from lmrec.data.demo import generate
from lmrec.model.evaluation import cold_item_split, random_split, ranking_metrics
from lmrec.model.baselines import add_knn, ease_matrix, item_cosine
from lmrec.model.scorer import ScorerConfig, choose_ease, fit_scorer, histories, make_score_fn


@pytest.fixture(scope="module")
def demo():
    from lmrec.text.encoder import TextEncoder

    ratings, items, _ = generate(250, 300, ratings_per_user=25, seed=5)
    ipos = {t: i for i, t in enumerate(items["item_id"])}
    upos = {u: i for i, u in enumerate(sorted(ratings["user_id"].unique()))}
    df = pd.DataFrame({S.COL_USER_IDX: ratings["user_id"].map(upos), S.COL_ITEM_IDX: ratings["item_id"].map(ipos),
                       S.COL_RATING: ratings["rating"], S.COL_EVENT_TS: pd.to_datetime(ratings["timestamp"], unit="s")})
    texts = (items["title"] + ". " + items["description"] + ". Categories: " + items["categories"].str.replace("|", ", ")).tolist()
    T = TextEncoder(device="cpu").encode(texts)
    return df, T, len(upos), len(items)


def _fit(train, T, n_users, n_items, val=None, **kw):
    cfg = ScorerConfig(epochs=kw.pop("epochs", 6), **kw)
    return fit_scorer(train, n_users=n_users, n_items=n_items, item_text=T, user_text=np.zeros((n_users, T.shape[1]), np.float32),
                      rating_max=5.0, cfg=cfg, val=val)


def test_loss_falls_and_beats_popularity(demo):
    df, T, nU, nI = demo
    train, test = random_split(df, 0.75, seed=1)
    inner, val = random_split(train, 0.9, seed=2)
    params, hist = _fit(inner, T, nU, nI, val=val)
    assert hist["loss"][-1] < hist["loss"][0]
    H, X = histories(inner, nU, nI, rating_max=5.0, recency_weight=0.5)
    ours = ranking_metrics(make_score_fn(params, H, X, T, np.zeros((nU, T.shape[1]), np.float32), nI), inner, test, nI)
    pop = ranking_metrics(fit_popularity(inner, nU, nI), inner, test, nI)
    assert ours["ndcg_at_10"] > pop["ndcg_at_10"] * 1.2, (ours["ndcg_at_10"], pop["ndcg_at_10"])


def test_cold_items_well_above_chance(demo):
    df, T, nU, nI = demo
    train, test, cold = cold_item_split(df, 0.2, seed=3)
    params, _ = _fit(train, T, nU, nI, use_ease=False)
    H, X = histories(train, nU, nI, rating_max=5.0, recency_weight=0.5)
    zeros = np.zeros((nU, T.shape[1]), np.float32)
    ours = ranking_metrics(make_score_fn(params, H, X, T, zeros, nI), train, test, nI, candidates=cold)
    rng = np.random.default_rng(0)
    chance = ranking_metrics(lambda u: rng.random((len(u), nI)), train, test, nI, candidates=cold)
    assert ours["ndcg_at_10"] > 1.5 * chance["ndcg_at_10"], (ours["ndcg_at_10"], chance["ndcg_at_10"])


def test_items_and_users_without_ratings_are_scored_by_their_text_alone(demo):
    df, T, nU, nI = demo
    train, _, cold = cold_item_split(df, 0.2, seed=3)
    train = train[train[S.COL_USER_IDX] != 0]  # user 0 has no rating here
    params, _ = _fit(train, T, nU, nI, use_ease=False, epochs=2)
    assert not params.E_item[cold].any() and not params.Y_hist[cold].any() and not params.P_user[0].any()
    assert params.E_item[np.setdiff1d(np.arange(nI), cold)].any(axis=1).all()
    # Two items without ratings and with the same text score the same for every user.
    T2 = T.copy()
    T2[cold[1]] = T2[cold[0]]
    H, X = histories(train, nU, nI, rating_max=5.0, recency_weight=0.5)
    scores = make_score_fn(params, H, X, T2, np.zeros((nU, T.shape[1]), np.float32), nI)(np.arange(nU))
    np.testing.assert_allclose(scores[:, cold[0]], scores[:, cold[1]], rtol=1e-5, atol=1e-6)


def test_seeded_training_is_reproducible(demo):
    df, T, nU, nI = demo
    a, _ = _fit(df, T, nU, nI, epochs=1)
    b, _ = _fit(df, T, nU, nI, epochs=1)
    np.testing.assert_array_equal(a.E_item, b.E_item)


def test_scorer_ease_part_is_the_ease_baseline(demo):
    """train's EASE baseline reuses the scorer's EASE matrix (same split, same λ) instead of a refit."""
    from lmrec.model.baselines import fit_ease
    from lmrec.model.harness import ease_part as _ease_part

    df, T, nU, nI = demo
    params, _ = _fit(df, T, nU, nI, epochs=1)
    users = np.arange(nU)
    reused = _ease_part(params, interactions(df, nU, nI), nI)(users)
    np.testing.assert_allclose(reused, fit_ease(df, nU, nI, lam=ScorerConfig().ease_lambda)(users), atol=1e-6)


def _ease_scores(params, train, nU, nI):
    import dataclasses

    ease = dataclasses.replace(params, alpha=0.0, gamma=1.0)
    X = interactions(train, nU, nI)
    return lambda users: ease.ease_scores(X[users], nI)


def test_ease_baseline_leaves_out_the_folded_item_knn(demo):
    """When the scorer's EASE part carries item-kNN, train's EASE baseline is EASE at the scorer's
    λ without it (the same metrics as a refit by hand), not the scorer's EASE part."""
    from types import SimpleNamespace

    from lmrec.model.harness import evaluate_all

    df, T, nU, nI = demo
    train, test = random_split(df, 0.75, seed=1)
    zeros = np.zeros((nU, T.shape[1]), np.float32)
    params, hist = _fit(train, T, nU, nI, epochs=1, ease_lambda=50.0, ease_knn_weight=3.0)
    assert params.ease_knn_scale > 0
    users = np.arange(nU)
    folded = fit_ease(train, nU, nI, lam=50.0, knn_weight=3.0)
    np.testing.assert_allclose(_ease_scores(params, train, nU, nI)(users), folded(users), rtol=1e-5, atol=1e-6)
    data = SimpleNamespace(n_users=nU, n_items=nI, rating_max=5.0, item_text=T, user_text=zeros)
    got = evaluate_all(None, data, train, test, params, with_als=False)["ease"]["ndcg_at_10"]
    assert got == pytest.approx(ranking_metrics(fit_ease(train, nU, nI, lam=50.0), train, test, nI)["ndcg_at_10"])
    assert ranking_metrics(folded, train, test, nI)["ndcg_at_10"] != pytest.approx(got)  # the fold moves it: the check can fail


@pytest.mark.spark
def test_torch_distributor_two_cpu_processes(spark, demo):
    """Data-parallel refit through pyspark.ml.torch's TorchDistributor with 2 CPU processes."""
    from lmrec.model.scorer import fit_scorer_distributed

    df, T, nU, nI = demo
    train, test = random_split(df, 0.75, seed=1)
    zeros = np.zeros((nU, T.shape[1]), np.float32)
    params = fit_scorer_distributed(train, num_processes=2, epochs=3, blend=(1.0, 1.0), n_users=nU, n_items=nI,
                                    item_text=T, user_text=zeros, rating_max=5.0, cfg=ScorerConfig())
    H, X = histories(train, nU, nI, rating_max=5.0, recency_weight=0.5)
    ours = ranking_metrics(make_score_fn(params, H, X, T, zeros, nI), train, test, nI)
    pop = ranking_metrics(fit_popularity(train, nU, nI), train, test, nI)
    assert np.isfinite(params.E_item).all() and ours["ndcg_at_10"] > pop["ndcg_at_10"]


def test_ease_lambda_is_chosen_on_validation_and_scales_with_the_data(demo):
    """λ is the grid point (a multiple of the mean item count) with the best validation NDCG@10
    of EASE alone, recomputed here by hand; twice the data (every rating twice over as many
    users) doubles the counts and so the λ tried."""
    df, T, nU, nI = demo
    train, _ = random_split(df, 0.75, seed=1)
    inner, val = random_split(train, 0.9, seed=2)
    cfg = ScorerConfig(ease_lambda_grid=(1.0, 16.0, 256.0))
    X = interactions(inner, nU, nI)
    choice = choose_ease(X, inner, val, nI, cfg)
    lam, tried = choice.lam, choice.lam_tried
    assert choice.side_weight == 0.0 and choice.side_tried == {}  # no side information given
    count = X.nnz / len(np.flatnonzero(np.asarray(X.sum(0)).ravel()))
    multiples = sorted(round(x / count, 6) for x in tried)
    assert {1.0, 16.0, 256.0} <= set(multiples) and set(multiples) <= {4.0 ** j for j in range(-3, 8)}
    assert multiples[0] < round(lam / count, 6) < multiples[-1] or len(multiples) == 6  # inside, or 3 steps out
    for lam_i, ndcg in tried.items():
        assert ndcg == pytest.approx(ranking_metrics(fit_ease(inner, nU, nI, lam=lam_i), inner, val, nI)["ndcg_at_10"])
    assert tried[lam] == max(tried.values())
    doubled = pd.concat([inner, inner.assign(**{S.COL_USER_IDX: inner[S.COL_USER_IDX] + nU})])
    tried2 = choose_ease(interactions(doubled, 2 * nU, nI), doubled, val, nI, cfg).lam_tried
    assert sorted(tried2) == pytest.approx([2 * x for x in sorted(tried)])

    _, hist = _fit(inner, T, nU, nI, val=val, epochs=1, ease_lambda_grid=(1.0, 16.0, 256.0))
    assert hist["ease_lambda"] == lam and hist["ease_lambda_tried"] == pytest.approx(tried)


def test_ease_lambda_grid_goes_on_past_its_end(demo):
    """A grid of tiny λ (an ill-conditioned inverse is worse than a regularised one) is extended
    upwards, x4 a step, at most three steps."""
    df, _, nU, nI = demo
    train, _ = random_split(df, 0.75, seed=1)
    inner, val = random_split(train, 0.9, seed=2)
    X = interactions(inner, nU, nI)
    tried = choose_ease(X, inner, val, nI, ScorerConfig(ease_lambda_grid=(1e-4, 4e-4))).lam_tried
    count = X.nnz / len(np.flatnonzero(np.asarray(X.sum(0)).ravel()))
    assert sorted(round(x / count, 8) for x in tried) == pytest.approx([1e-4, 4e-4, 1.6e-3, 6.4e-3, 2.56e-2])


def test_ease_side_weight_is_chosen_on_validation_at_the_chosen_lambda(demo):
    """Collective EASE: at the chosen λ, each side weight of the grid (0 = plain EASE) is scored by
    hand the same and the best for EASE alone is chosen; the blended scorer then keeps plain EASE or
    that weight, whichever validates better, and its EASE part is that matrix. A refit given λ and
    the weight uses them without any grid; without text there is nothing to weigh."""
    df, T, nU, nI = demo
    train, _ = random_split(df, 0.75, seed=1)
    inner, val = random_split(train, 0.9, seed=2)
    cfg = ScorerConfig(ease_lambda_grid=(1.0, 16.0), ease_side_grid=(0.0, 1.0, 16.0))
    X = interactions(inner, nU, nI)
    choice = choose_ease(X, inner, val, nI, cfg, side=T)
    count = X.nnz / len(np.flatnonzero(np.asarray(X.sum(0)).ravel()))
    assert {0.0, 1.0, 16.0} <= {round(w / count, 6) for w in choice.side_tried}
    for w, ndcg in choice.side_tried.items():
        by_hand = fit_ease(inner, nU, nI, lam=choice.lam, side=T, side_weight=w)
        assert ndcg == pytest.approx(ranking_metrics(by_hand, inner, val, nI)["ndcg_at_10"])
    assert choice.side_tried[0.0] == pytest.approx(choice.lam_tried[choice.lam])  # 0: plain EASE at that λ
    assert choice.side_tried[choice.side_weight] == max(choice.side_tried.values())

    # The blended scorer judges plain EASE against the weight EASE alone chose.
    params, hist = _fit(inner, T, nU, nI, val=val, epochs=1, ease_lambda_grid=(1.0, 16.0), ease_side_grid=(0.0, 1.0, 16.0))
    assert hist["ease_lambda"] == choice.lam and hist["ease_side_weight_tried"] == pytest.approx(choice.side_tried)
    if choice.side_weight:
        blended = hist["ease_side_weight_blended"]
        assert set(blended) == {0.0, choice.side_weight} and blended[hist["ease_side_weight"]] == max(blended.values())
    else:
        assert hist["ease_side_weight"] == 0.0 and hist["ease_side_weight_blended"] == {}
    B, active = ease_matrix(X, choice.lam, side=T, side_weight=hist["ease_side_weight"])
    np.testing.assert_array_equal(params.ease_B, B)
    np.testing.assert_array_equal(params.ease_items, active)
    refit, rh = _fit(inner, T, nU, nI, epochs=1, ease_lambda=choice.lam, ease_side_weight=16.0 * count)
    assert rh["ease_side_weight_tried"] == {} and rh["ease_side_weight"] == 16.0 * count
    np.testing.assert_array_equal(refit.ease_B, ease_matrix(X, choice.lam, side=T, side_weight=16.0 * count)[0])
    assert _fit(inner, 0 * T, nU, nI, val=val, epochs=1, ease_lambda_grid=(1.0,))[1]["ease_side_weight_tried"] == {}
    # The refit (train's, with the chosen knobs) keeps the blend it is given.
    refit, rh = fit_scorer(inner, n_users=nU, n_items=nI, item_text=T, user_text=np.zeros((nU, T.shape[1]), np.float32),
                           rating_max=5.0, cfg=ScorerConfig(epochs=1), epochs=1, blend=(0.25, 1.0),
                           ease_lambda=choice.lam, ease_side_weight=hist["ease_side_weight"])
    assert (refit.alpha, refit.gamma) == rh["blend"] == (0.25, 1.0)
    np.testing.assert_array_equal(refit.ease_B, params.ease_B)


def test_ease_knn_weight_is_chosen_on_validation_and_kept_by_the_refit(demo):
    """At the chosen λ (and side weight), each item-kNN weight of the grid is EASE with the items'
    cosine folded in over all the EASE items, scored by hand the same; 0 is EASE alone; the best
    is chosen and the scorer's EASE part is that matrix, with its coefficient. A refit given the
    weight uses it without any grid."""
    df, T, nU, nI = demo
    train, _ = random_split(df, 0.75, seed=1)
    inner, val = random_split(train, 0.9, seed=2)
    knobs = dict(ease_lambda_grid=(1.0, 16.0), ease_side_grid=(), ease_knn_grid=(0.0, 0.3, 3.0))
    X = interactions(inner, nU, nI)
    params, hist = _fit(inner, T, nU, nI, val=val, epochs=1, **knobs)
    lam, tried = hist["ease_lambda"], hist["ease_knn_weight_tried"]
    assert {0.0, 0.3, 3.0} <= set(tried) and set(tried) <= {0.0, 0.3, 3.0, 12.0, 48.0, 192.0}
    for w, ndcg in tried.items():
        by_hand = fit_ease(inner, nU, nI, lam=lam, knn_weight=w)
        assert ndcg == pytest.approx(ranking_metrics(by_hand, inner, val, nI)["ndcg_at_10"], rel=1e-3)
    assert tried[0.0] == pytest.approx(hist["ease_lambda_tried"][lam])  # 0: EASE alone over the same items
    best = max(tried, key=tried.get)
    assert hist["ease_knn_weight"] in {0.0, best}  # the best, or EASE alone when within one standard error
    B, active = ease_matrix(X, lam)
    scale = add_knn(B, item_cosine(X[:, active]), hist["ease_knn_weight"])
    np.testing.assert_array_equal(params.ease_B, B)
    assert params.ease_knn_scale == scale
    refit, rh = _fit(inner, T, nU, nI, epochs=1, ease_lambda=lam, ease_side_weight=0.0, ease_knn_weight=0.3)
    assert rh["ease_knn_weight_tried"] == {} and rh["ease_knn_weight"] == 0.3
    B, active = ease_matrix(X, lam)
    assert refit.ease_knn_scale == add_knn(B, item_cosine(X[:, active]), 0.3) > 0
    np.testing.assert_array_equal(refit.ease_B, B)
    off, oh = _fit(inner, T, nU, nI, val=val, epochs=1, **(knobs | {"ease_knn_grid": ()}))
    assert oh["ease_knn_weight"] == 0.0 and oh["ease_knn_weight_tried"] == {} and off.ease_knn_scale == 0.0


def test_knn_weight_is_kept_only_beyond_one_standard_error(demo):
    """choose_knn_weight keeps the best weight only when its mean per-user gain over EASE alone on
    validation exceeds the paired difference's standard error, recomputed here by hand."""
    from lmrec.model.scorer import choose_knn_weight

    df, _, nU, nI = demo
    train, _ = random_split(df, 0.75, seed=1)
    inner, val = random_split(train, 0.9, seed=2)
    X = interactions(inner, nU, nI)
    B, active = ease_matrix(X, 50.0)
    w, tried = choose_knn_weight(X, B, item_cosine(X[:, active]), active, inner, val, nI, (0.0, 0.3, 3.0, 30.0))
    best = max(tried, key=tried.get)
    per_user = {c: ranking_metrics(fit_ease(inner, nU, nI, lam=50.0, knn_weight=c), inner, val, nI,
                                   per_user=True)["ndcg_per_user"] for c in (0.0, best)}
    diff = (per_user[best] - per_user[0.0]).to_numpy()
    assert w == (best if diff.mean() > diff.std(ddof=1) / np.sqrt(len(diff)) else 0.0)


def test_text_decay_is_chosen_on_validation_from_the_same_start(demo):
    """Each text decay of the grid is one training from the same start: the grid's decay-0 run is
    the run with decay 0 alone; the chosen decay has the best validation NDCG@10; small data takes
    smaller batches (at least min_steps_per_epoch steps), and a refit with the chosen knobs trains
    no grid."""
    df, T, nU, nI = demo
    train, _ = random_split(df, 0.75, seed=1)
    inner, val = random_split(train, 0.9, seed=2)
    kw = dict(epochs=3, ease_lambda_grid=())
    _, alone = _fit(inner, T, nU, nI, val=val, text_decay=0.0, text_decay_grid=(), use_ease=False, **kw)
    assert alone["text_decay"] == 0.0 and alone["text_decay_tried"] == {}
    _, neural = _fit(inner, T, nU, nI, val=val, text_decay_grid=(0.0, 30.0), use_ease=False, **kw)
    assert neural["text_decay_tried"][0.0] == alone["best_val_ndcg_at_10"]  # the same start
    assert neural["best_val_ndcg_at_10"] == max(neural["text_decay_tried"].values())
    # With EASE, each decay is judged by its blended scorer's validation NDCG@10.
    _, hist = _fit(inner, T, nU, nI, val=val, text_decay_grid=(0.0, 30.0), **kw)
    assert set(hist["text_decay_tried"]) == {0.0, 30.0} and len(hist["blend"]) == 2
    assert hist["text_decay_tried"][hist["text_decay"]] == max(hist["text_decay_tried"].values())
    # Without any text the decay changes nothing: one training.
    _, blind = _fit(inner, 0 * T, nU, nI, val=val, text_decay_grid=(0.0, 30.0), **kw)
    assert blind["text_decay"] == 0.0 and blind["text_decay_tried"] == {}
    assert hist["batch_size"] == ScorerConfig().min_batch_size  # 3.1k ratings: 32 steps would be batches of 96
    assert _fit(df, T, nU, nI, epochs=1, min_steps_per_epoch=8)[1]["batch_size"] == len(df) // 8  # 6.2k: 781
    assert _fit(df, T, nU, nI, epochs=1, min_steps_per_epoch=2)[1]["batch_size"] == 2048  # at most batch_size
    # Big data keeps the full batch; past the tuning cap, the configured decay is kept untried.
    _, capped = _fit(inner, T, nU, nI, val=val, text_decay=30.0, text_decay_tune_max_ratings=len(inner) - 1, **kw)
    assert capped["text_decay"] == 30.0 and capped["text_decay_tried"] == {}
    cfg = ScorerConfig(epochs=1)
    _, refit = fit_scorer(inner, n_users=nU, n_items=nI, item_text=T, user_text=np.zeros((nU, T.shape[1]), np.float32),
                          rating_max=5.0, cfg=cfg, epochs=1, blend=(1.0, 1.0), text_decay=30.0, batch_size=512)
    assert refit["text_decay"] == 30.0 and refit["batch_size"] == 512 and refit["text_decay_tried"] == {}


def test_text_decay_shrinks_the_text_projections_only(demo):
    """AdamW's decoupled decay applies to the text projections and text biases, not the ID parts."""
    df, T, nU, nI = demo
    a, _ = _fit(df, T, nU, nI, epochs=2, text_decay=0.0, text_decay_grid=())
    b, _ = _fit(df, T, nU, nI, epochs=2, text_decay=100.0, text_decay_grid=())
    for w in ("W_item", "W_user", "W_hist", "w_bias_text", "w_rbias_text"):
        assert np.linalg.norm(getattr(b, w)) < 0.5 * np.linalg.norm(getattr(a, w)), w
    assert np.linalg.norm(b.E_item) > 0.5 * np.linalg.norm(a.E_item)
