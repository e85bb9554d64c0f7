"""The rating model: learns ratings better than the bias baseline on the demo catalogue, stays on
the rating scale, and never sees the rating it predicts through the user's history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmrec.core import schema as S
from lmrec.data.demo import generate
from lmrec.model.baselines import fit_biases, interactions
from lmrec.model.evaluation import three_way_split
from lmrec.model.rating import RatingConfig, fit_rating_model, select_rating_model


@pytest.fixture(scope="module")
def demo():
    ratings, items, _ = generate(200, 150, ratings_per_user=30, seed=7)
    upos = {u: i for i, u in enumerate(sorted(ratings["user_id"].unique()))}
    ipos = {t: i for i, t in enumerate(items["item_id"])}
    df = pd.DataFrame({S.COL_USER_IDX: ratings["user_id"].map(upos), S.COL_ITEM_IDX: ratings["item_id"].map(ipos),
                       S.COL_RATING: ratings["rating"].astype(float)})
    # The items' "text": their genres (what MiniLM reads in the demo's categories), as one-hot.
    T = items["categories"].str.get_dummies("|").to_numpy(np.float32)
    return df, T, len(upos), len(items)


def _kw(T, nU, nI):
    return dict(n_users=nU, n_items=nI, item_text=T, user_text=np.zeros((nU, T.shape[1]), np.float32), r_min=0.5, r_max=5.0)


def test_beats_biases_on_a_test_part_and_stays_on_the_scale(demo):
    df, T, nU, nI = demo
    fit, val, test = three_way_split(df, 0.8, 0.1, seed=1)
    cfg, tried, _ = select_rating_model(fit, val, cfg=RatingConfig(dim=16, epochs=40, reg_grid=(0.03, 0.3),
                                                                   text_reg_grid=(1e-4, 1.0)), **_kw(T, nU, nI))
    # reg at text_reg 1e-4 and init 0.01, then init 0.1 at the best reg, then text_reg 1.0 at the best pair
    assert {0.03, 0.3} == {k[0] for k in tried} and len(tried) == 4 and {0.01, 0.1} == {k[2] for k in tried}
    assert (cfg.reg, cfg.text_reg, cfg.init_std) in tried and 1 <= cfg.epochs <= 40
    assert tried[(cfg.reg, cfg.text_reg, cfg.init_std)][0] == min(v[0] for v in tried.values())
    full = pd.concat([fit, val])
    params, _ = fit_rating_model(full, cfg=cfg, epochs=cfg.epochs, **_kw(T, nU, nI))
    u, i, y = test[S.COL_USER_IDX].to_numpy(), test[S.COL_ITEM_IDX].to_numpy(), test[S.COL_RATING].to_numpy()
    pred = params.predict(u, i, interactions(full, nU, nI), T, np.zeros((nU, T.shape[1]), np.float32))
    base = fit_biases(full, nU, nI)(u, i)
    rmse = lambda p: float(np.sqrt(np.mean((p - y) ** 2)))  # noqa: E731
    assert rmse(pred) < rmse(base) - 0.01, (rmse(pred), rmse(base))
    assert pred.min() >= 0.5 and pred.max() <= 5.0


def test_the_history_never_holds_the_item_being_rated(demo):
    """A fit pair is predicted from its user's history without that item: the same prediction as
    with the item removed from the history (what serving sees for an unrated item)."""
    df, T, nU, nI = demo
    params, _ = fit_rating_model(df, cfg=RatingConfig(dim=8, reg_grid=(0.1,)), epochs=2, **_kw(T, nU, nI))
    X = interactions(df, nU, nI).tolil()
    u, i = int(df[S.COL_USER_IDX].iloc[0]), int(df[S.COL_ITEM_IDX].iloc[0])
    zeros = np.zeros((nU, T.shape[1]), np.float32)
    with_item = params.predict([u], [i], X.tocsr(), T, zeros)
    X[u, i] = 0
    without = params.predict([u], [i], X.tocsr(), T, zeros)
    np.testing.assert_allclose(with_item, without, rtol=1e-6)


def test_seeded_and_reproducible(demo):
    df, T, nU, nI = demo
    a, _ = fit_rating_model(df, cfg=RatingConfig(dim=8), epochs=1, **_kw(T, nU, nI))
    b, _ = fit_rating_model(df, cfg=RatingConfig(dim=8), epochs=1, **_kw(T, nU, nI))
    np.testing.assert_array_equal(a.Q, b.Q)


def test_prediction_matches_the_formula_by_hand():
    """r̂ = μ + b_u + b_i + w·t_i + Σ θ_k U_uk I_ik on numbers small enough to do on paper: a
    rated pair (its item left out of the history), an unrated pair, and an item no rating trained."""
    from lmrec.model.rating import RatingParams

    p = RatingParams(P=np.array([[1.0, 0.0], [0.0, 2.0]]), Q=np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 1.0]]),
                     Y=np.array([[0.5, 0.0], [0.0, 0.5], [1.0, 1.0]]), W_item=np.array([[0.1, 0.0]]),
                     W_user=np.zeros((1, 2)), W_hist=np.array([[0.0, 0.1]]), theta=np.array([0.5, 1.0]),
                     b_user=np.array([0.1, -0.2]), b_item=np.array([0.3, 0.0, -0.1]), w_text_bias=np.zeros(1),
                     mu=3.0, r_min=0.5, r_max=5.0)
    T = np.array([[1.0], [0.0], [2.0], [1.0]])  # item 3: text only
    X = interactions(pd.DataFrame({S.COL_USER_IDX: [0, 0, 1], S.COL_ITEM_IDX: [0, 1, 2], S.COL_RATING: 1.0}), 2, 4)
    got = p.predict([0, 0, 1], [1, 2, 3], X, T, np.zeros((2, 1)))
    # (0, 1): N = {0}; U = p_0 + y_0 + W_H t_0 = (1.5, 0.1); I = q_1 = (2, 0); 3 + 0.1 + 0 + 0.5·1.5·2
    # (0, 2): N = {0, 1}; U = (1, 0) + (0.5, 0.5)/√2 + (0, 0.05); I = (0, 1) + (0.2, 0); 3 + 0.1 - 0.1 + ...
    # (1, 3): N = {2}; U = (0, 2) + (1, 1) + (0, 0.2) = (1, 3.2); I = W_I t_3 = (0.1, 0); 3 - 0.2 + 0.5·0.1
    u2 = 1 + 0.5 / np.sqrt(2), 0.5 / np.sqrt(2) + 0.05
    expected = [4.6, 3.0 + 0.5 * u2[0] * 0.2 + u2[1] * 1.0, 2.85]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_a_diverging_fit_stops_and_is_never_chosen(demo):
    """A rate far too large blows the loss up: the fit stops there instead of running its epochs
    (patience alone would wait 50), and selection keeps a finite configuration."""
    df, T, nU, nI = demo
    fit, val, _ = three_way_split(df, 0.8, 0.1, seed=1)
    _, hist = fit_rating_model(fit, val=val, cfg=RatingConfig(dim=8, lr=1e4, patience=50), epochs=30, **_kw(T, nU, nI))
    assert len(hist["epoch"]) < 30 and not np.isfinite(hist["train_mse"][-1])
    cfg, tried, _ = select_rating_model(fit, val, cfg=RatingConfig(dim=8, epochs=10, reg_grid=(0.1,), init_std_grid=(0.01, 1e3),
                                                                   text_reg_grid=()), **_kw(T, nU, nI))
    assert cfg.init_std == 0.01 and np.isfinite(tried[(0.1, cfg.text_reg, 0.01)][0])


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_lazy_momentum_equals_torch_sgd_on_the_whole_table(momentum):
    """LazyMomentumSGD (only the rows a step uses) ends where torch's dense SGD with momentum
    does, with duplicate rows in a step, long-idle rows and syncs in between."""
    import torch

    from lmrec.model.rating import LazyMomentumSGD

    torch.manual_seed(0)
    w0 = torch.randn(300, 8)
    dense, lazy_w = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    ref = torch.optim.SGD([dense], lr=0.01, momentum=momentum)
    lazy = LazyMomentumSGD([lazy_w], lr=0.01, momentum=momentum)
    for step in range(200):
        rows = torch.randint(0, 300 if step < 100 else 30, (25,))  # rows 30.. idle for the last 100 steps
        target = torch.randn(25, 8)
        lazy.catch_up([torch.unique(rows)])
        for w, sparse, opt in ((dense, False, ref), (lazy_w, True, lazy)):
            opt.zero_grad()
            ((torch.nn.functional.embedding(rows, w, sparse=sparse) - target) ** 2).sum().backward()
            opt.step()
        if step % 37 == 5:
            lazy.sync()
    assert not torch.equal(lazy_w.detach(), w0)
    lazy.sync()
    torch.testing.assert_close(lazy_w.detach(), dense.detach(), rtol=1e-5, atol=1e-5)
