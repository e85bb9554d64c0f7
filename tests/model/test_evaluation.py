"""Metrics on hand-worked examples; splits."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lmrec.model import evaluation as E
from lmrec.core import schema as S

TOP = np.array([[1, 2, 3], [4, 5, 6]])
REL = [{1, 3}, {9}]


def test_precision_recall_hit_rate():
    assert E.precision_at_k(TOP, REL, 3) == pytest.approx((2 / 3 + 0) / 2)
    assert E.recall_at_k(TOP, REL, 3) == pytest.approx((1.0 + 0) / 2)
    assert E.hit_rate_at_k(TOP, REL, 3) == 0.5


def test_ndcg_hand_worked():
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert E.ndcg_at_k(TOP, REL, 3) == pytest.approx((dcg / idcg + 0) / 2)


def test_map_hand_worked():
    # user 0: hits at ranks 1 and 3 -> (1/1 + 2/3) / min(3, 2)
    assert E.map_at_k(TOP, REL, 3) == pytest.approx(((1 + 2 / 3) / 2 + 0) / 2)


def test_perfect_is_one_reversed_is_lower():
    top = np.array([[0, 1, 2, 3, 4, 5]])
    rel = [{0, 1}]
    assert E.ndcg_at_k(top, rel, 6) == pytest.approx(1.0)
    assert E.map_at_k(top, rel, 6) == pytest.approx(1.0)
    rev = top[:, ::-1]
    assert E.ndcg_at_k(rev, rel, 6) < 1.0 and E.map_at_k(rev, rel, 6) < 1.0


def test_rmse_mae_coverage_novelty_diversity():
    assert E.rmse([1, 2], [2, 4]) == pytest.approx(math.sqrt(2.5))
    assert E.mae([1, 2], [2, 4]) == pytest.approx(1.5)
    assert E.catalog_coverage(TOP, 12) == pytest.approx(0.5)
    pop = np.full(10, 0.25)
    assert E.novelty(TOP, pop) == pytest.approx(2.0)
    v = np.eye(7)
    assert E.intra_list_diversity(TOP, v) == pytest.approx(1.0)
    assert E.intra_list_diversity(np.array([[1, 1]]), v) == pytest.approx(0.0)


def test_top_k_ties_by_item_index_and_exclusion():
    import scipy.sparse as sp

    scores = np.array([[0.5, 0.9, 0.9, 0.1]])
    assert E.top_k_from_scores(scores, 3).tolist() == [[1, 2, 0]]
    ex = sp.csr_matrix(([1.0], ([0], [1])), shape=(1, 4))
    assert E.top_k_from_scores(scores, 2, ex).tolist() == [[2, 0]]


def _ratings(n_users=20, per_user=10):
    rows = [(u, (u * 7 + j) % 50, 1.0 + j % 5, pd.Timestamp("2024-01-01") + pd.Timedelta(days=j))
            for u in range(n_users) for j in range(per_user)]
    return pd.DataFrame(rows, columns=[S.COL_USER_IDX, S.COL_ITEM_IDX, S.COL_RATING, S.COL_EVENT_TS])


def test_splits():
    df = _ratings()
    train, test = E.random_split(df, 0.75, seed=1)
    assert len(train) + len(test) == len(df)
    assert (train.groupby(S.COL_USER_IDX).size() == 8).all()  # round(10 * 0.75) = 8 per user
    pd.testing.assert_frame_equal(E.random_split(df, 0.75, seed=1)[0], train)
    tr, te = E.temporal_split(df, 0.8)
    assert (tr.groupby(S.COL_USER_IDX)[S.COL_EVENT_TS].max().values < te.groupby(S.COL_USER_IDX)[S.COL_EVENT_TS].min().values).all()
    tr, te, cold = E.cold_item_split(df, 0.2, seed=3)
    assert len(cold) == 10 and not set(tr[S.COL_ITEM_IDX]) & set(cold) and set(te[S.COL_ITEM_IDX]) <= set(cold)


def test_three_way_split_partitions_each_user():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({S.COL_USER_IDX: np.repeat(np.arange(50), 20), S.COL_ITEM_IDX: np.tile(np.arange(20), 50),
                       S.COL_RATING: rng.integers(1, 6, 1000).astype(float)})
    fit, val, test = E.three_way_split(df, 0.7, 0.1, seed=3)
    assert len(fit) + len(val) + len(test) == len(df)
    assert set(fit.index).isdisjoint(val.index) and set(fit.index).isdisjoint(test.index) and set(val.index).isdisjoint(test.index)
    assert (fit.groupby(S.COL_USER_IDX).size() == 14).all() and (val.groupby(S.COL_USER_IDX).size() == 2).all()
    again = E.three_way_split(df, 0.7, 0.1, seed=3)
    pd.testing.assert_frame_equal(again[2], test)


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(1)
    b = rng.random(400)
    same = E.paired_bootstrap(b, b.copy())
    assert same == {"diff": 0.0, "lo": 0.0, "hi": 0.0}
    better = E.paired_bootstrap(b + 0.05 + rng.normal(0, 0.01, 400), b)
    assert better["lo"] > 0.03 and better["hi"] < 0.07 and better["lo"] < better["diff"] < better["hi"]
    noisy = E.paired_bootstrap(b + rng.normal(0, 0.3, 400), b)
    assert noisy["lo"] < 0 < noisy["hi"]
    err = (rng.random(300) * 2) ** 2
    r = E.paired_bootstrap(err * 0.81, err, stat=E.rmse_stat)  # every error 10% smaller
    assert r["hi"] < 0 and abs(r["diff"] - (E.rmse_stat(err * 0.81) - E.rmse_stat(err))) < 1e-12


def test_three_way_split_ignores_row_order():
    rng = np.random.default_rng(2)
    df = pd.DataFrame({S.COL_USER_IDX: np.repeat(np.arange(30), 10), S.COL_ITEM_IDX: rng.integers(0, 1000, 300),
                       S.COL_RATING: 3.0}).drop_duplicates([S.COL_USER_IDX, S.COL_ITEM_IDX])
    a = E.three_way_split(df, 0.7, 0.1)
    b = E.three_way_split(df.sample(frac=1.0, random_state=5).reset_index(drop=True), 0.7, 0.1)
    for x, y in zip(a, b):
        key = [S.COL_USER_IDX, S.COL_ITEM_IDX]
        assert sorted(map(tuple, x[key].to_numpy())) == sorted(map(tuple, y[key].to_numpy()))


def test_three_way_split_depends_on_the_whole_seed():
    df = pd.DataFrame({S.COL_USER_IDX: np.repeat(np.arange(20), 10), S.COL_ITEM_IDX: np.tile(np.arange(10), 20)})
    tests = {seed: set(E.three_way_split(df, 0.7, 0.1, seed=seed)[2].index) for seed in (42, 43, 52)}
    assert len({frozenset(t) for t in tests.values()}) == 3


def test_top_k_in_float32_equals_float64_with_ties_and_exclusions():
    """Ranking float32 scores in float32 (no widening copy) gives the lists float64 gives: ties by
    lower item index, excluded items never returned, read-only (broadcast) scores accepted."""
    import scipy.sparse as sp

    rng = np.random.default_rng(11)
    scores = rng.integers(0, 6, size=(40, 300)).astype(np.float32)  # many ties, across the cut too
    scores[:, 50:60] = rng.standard_normal((40, 10)).astype(np.float32)
    ex = sp.random(40, 300, density=0.1, format="csr", random_state=5)
    got = E.top_k_from_scores(scores, 10, ex)
    want = E.top_k_from_scores(scores.astype(np.float64), 10, ex)
    assert np.array_equal(got, want)
    rows, cols = ex.nonzero()
    assert not np.isin(cols[rows == 0], got[0]).any()
    pop = np.broadcast_to(scores[0], (5, 300))  # what popularity's score function returns
    assert np.array_equal(E.top_k_from_scores(pop, 10), E.top_k_from_scores(np.array(pop, np.float64), 10))
