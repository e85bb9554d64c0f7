"""Baselines computed blockwise and in place agree with their textbook formulas."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from lmrec.model import baselines as B
from lmrec.core import schema as S


def _train(seed=0, n_users=60, n_items=25, n=400):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({S.COL_USER_IDX: rng.integers(0, n_users, n), S.COL_ITEM_IDX: rng.integers(0, n_items, n)})
    return df.drop_duplicates().reset_index(drop=True), n_users, n_items


def test_gram_blockwise_equals_dense_product(two_threads):
    """Blocks of columns on two threads: the dense product's values, and one block's bits."""
    X = sp.random(50, 37, density=0.2, format="csr", random_state=1, dtype=np.float32)
    dense = X.toarray().astype(np.float64)
    blocks = B.gram(X, np.float64, block=8)
    np.testing.assert_allclose(blocks, dense.T @ dense, rtol=1e-6)
    assert np.array_equal(blocks, B.gram(X, np.float64, block=64))


def test_spd_inverse_is_the_inverse_and_refuses_a_non_spd_matrix():
    import pytest

    rng = np.random.default_rng(3)
    A = rng.standard_normal((80, 40))
    G = A @ A.T + 0.5 * np.eye(80)
    expect = np.linalg.inv(G)
    np.testing.assert_allclose(B.spd_inverse(G.copy()), expect, rtol=1e-9, atol=1e-12)
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        B.spd_inverse(G - 2.0 * np.eye(80))  # 40 eigenvalues of -1.5


def test_ease_matches_closed_form():
    train, nu, ni = _train()
    X = B.interactions(train, nu, ni)
    Bm, active = B.ease_matrix(X, lam=5.0)
    Xd = X.toarray()[:, active].astype(np.float64)
    P = np.linalg.inv(Xd.T @ Xd + 5.0 * np.eye(len(active)))
    expect = -P / np.diag(P)[None, :]
    np.fill_diagonal(expect, 0.0)
    np.testing.assert_allclose(Bm, expect, atol=1e-6)
    # Capped: only the most popular items, by count.
    _, top = B.ease_matrix(X, lam=5.0, max_items=5)
    counts = np.asarray(X.sum(0)).ravel()
    assert len(top) == 5 and counts[top].min() >= np.sort(counts)[-5]


def test_ease_inverts_in_float32_when_well_conditioned_and_in_float64_otherwise():
    train, nu, ni = _train(n_users=300, n_items=120, n=5000)
    X = B.interactions(train, nu, ni)
    exact, active = B.ease_matrix(X, lam=50.0, dtype=np.float64)
    auto, same = B.ease_matrix(X, lam=50.0)
    assert np.array_equal(active, same) and auto.dtype == np.float32
    assert not np.array_equal(auto, exact.astype(np.float32))  # float32 arithmetic, not float64's result
    np.testing.assert_allclose(auto, exact, atol=1e-6)
    # A λ small against the Gram matrix's row sums (Gershgorin's bound over the limit): float64.
    Xa = X.toarray()[:, active]
    bound = np.abs(Xa.T @ Xa).sum(1).max()
    tiny = float(bound) / (2 * B.EASE_FLOAT32_MAX_COND)
    np.testing.assert_array_equal(B.ease_matrix(X, lam=tiny)[0], B.ease_matrix(X, lam=tiny, dtype=np.float64)[0])


def test_item_knn_is_cosine_of_binary_columns():
    train, nu, ni = _train(seed=2)
    X = B.interactions(train, nu, ni).toarray()
    norms = np.linalg.norm(X, axis=0)
    cos = (X.T @ X) / np.outer(np.clip(norms, 1e-9, None), np.clip(norms, 1e-9, None))
    np.fill_diagonal(cos, 0.0)
    users = np.arange(nu)
    np.testing.assert_allclose(B.fit_item_knn(train, nu, ni)(users), X @ cos, rtol=1e-5, atol=1e-5)
    # k neighbours and shrinkage: each column keeps its k largest shrunk similarities.
    shrunk = (X.T @ X) / (np.outer(np.clip(norms, 1e-9, None), np.clip(norms, 1e-9, None)) + 3.0)
    np.fill_diagonal(shrunk, 0.0)
    for j in range(ni):
        shrunk[np.argsort(-shrunk[:, j], kind="stable")[4:], j] = 0.0
    got = B.fit_item_knn(train, nu, ni, k=4, shrink=3.0)(users)
    np.testing.assert_allclose(got, X @ shrunk, rtol=1e-5, atol=1e-5)


def test_knn_weight_folds_item_cosine_into_the_ease_matrix():
    """add_knn: B + w·(‖B‖/‖S‖)·S with S the items' cosine (zero diagonal), computed here by hand,
    returning the coefficient; weight 0 leaves B alone. EASE with kNN scores are EASE's plus that
    coefficient times item-kNN's."""
    train, nu, ni = _train(seed=5)
    X = B.interactions(train, nu, ni)
    plain, active = B.ease_matrix(X, lam=5.0)
    Xd = X.toarray()[:, active]
    norms = np.clip(np.linalg.norm(Xd, axis=0), 1e-9, None)
    cos = (Xd.T @ Xd) / np.outer(norms, norms)
    np.fill_diagonal(cos, 0.0)
    np.testing.assert_allclose(B.item_cosine(X[:, active]), cos, rtol=1e-5, atol=1e-6)
    scale = np.linalg.norm(plain) / np.linalg.norm(cos)
    got = plain.copy()
    c = B.add_knn(got, B.item_cosine(X[:, active]), 0.5)
    assert c == pytest.approx(0.5 * scale, rel=1e-5)
    np.testing.assert_allclose(got, plain + 0.5 * scale * cos, rtol=1e-5, atol=1e-6)
    same = plain.copy()
    assert B.add_knn(same, B.item_cosine(X[:, active]), 0.0) == 0.0
    np.testing.assert_array_equal(same, plain)
    users = np.arange(nu)
    np.testing.assert_allclose(B.fit_ease(train, nu, ni, lam=5.0, knn_weight=0.5)(users),
                               B.fit_ease(train, nu, ni, lam=5.0)(users) + c * B.fit_item_knn(train, nu, ni)(users),
                               rtol=1e-4, atol=1e-5)


def test_collective_ease_adds_side_information_rows():
    """Collective EASE = plain EASE on X with the side information stacked under it as rows."""
    train, nu, ni = _train(seed=3)
    X = B.interactions(train, nu, ni)
    side = np.random.default_rng(4).standard_normal((ni, 6))
    got, active = B.ease_matrix(X, lam=5.0, side=side, side_weight=2.0)
    stacked = sp.vstack([X, sp.csr_matrix(np.sqrt(2.0) * side.T)]).tocsr()
    Xd = stacked.toarray()[:, active]
    P = np.linalg.inv(Xd.T @ Xd + 5.0 * np.eye(len(active)))
    expect = -P / np.diag(P)[None, :]
    np.fill_diagonal(expect, 0.0)
    np.testing.assert_allclose(got, expect, atol=1e-5)
