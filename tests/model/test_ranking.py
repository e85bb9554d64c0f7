"""The scoring kernel (lmrec.model.ranking) against brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmrec.core import schema as S
from lmrec.model import ranking


def _brute_top(scores: np.ndarray, k: int, order: np.ndarray) -> list[list[int]]:
    """Best k finite columns per row by (-score, order), one Python sort per row."""
    return [[i for i in sorted(range(len(row)), key=lambda i: (-row[i], order[i])) if np.isfinite(row[i])][:k]
            for row in scores]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_k_block_equals_bruteforce(dtype):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, (40, 30)).astype(dtype)  # many ties, across the cut and inside the k
    scores[:, 3] = -np.inf
    scores[5, 2:] = -np.inf  # fewer than k finite scores
    order = rng.permutation(30)  # ties go to the lower order, not the lower column
    cols, vals = ranking.top_k_block(scores, 7, order)
    for r, ref in enumerate(_brute_top(scores, 7, order)):
        assert cols[r][cols[r] >= 0].tolist() == ref
        assert (cols[r][len(ref):] == -1).all()
        assert (np.diff(vals[r][: len(ref)]) <= 0).all()


def _model(rng, n_items: int, d: int, *, alpha: float, gamma: float) -> dict:
    """A broadcast model with small-integer factors, so float32 sums are exact and ties abound."""
    I = rng.integers(-2, 3, (n_items, d)).astype(np.float32)
    ease_pos = np.sort(rng.choice(n_items, n_items // 2, replace=False))
    ease_row = np.full(n_items, -1)
    ease_row[ease_pos] = np.arange(len(ease_pos))
    B = rng.integers(-1, 2, (len(ease_pos), len(ease_pos))).astype(np.float32)
    np.fill_diagonal(B, 0)
    return {"I": I, "beta": rng.integers(-1, 2, n_items).astype(np.float32),
            "I_norm": I / np.clip(np.linalg.norm(I, axis=1, keepdims=True), 1e-9, None),
            "item_ids": np.array([f"i{j}" for j in range(n_items)], dtype=object),
            "candidate": rng.random(n_items) > 0.1, "alpha": alpha, "gamma": gamma,
            "ease_B": B, "ease_pos": ease_pos, "ease_row": ease_row}


@pytest.mark.parametrize("alpha,gamma", [(1.0, 0.0), (0.5, 2.0), (0.0, 1.0)])
def test_score_block_equals_bruteforce(alpha, gamma):
    """Scores, masks, top-k with ties and because of a whole block = a per-user NumPy loop."""
    rng = np.random.default_rng(2)
    n, d, k, n_users = 60, 6, 8, 37
    m = _model(rng, n, d, alpha=alpha, gamma=gamma)
    U = rng.integers(-2, 3, (n_users, d)).astype(np.float32)
    hists = [np.sort(rng.choice(n, rng.integers(0, 12), replace=False)) for _ in range(n_users)]
    hists[4] = np.arange(n)  # rated everything: no row at all
    users = np.array([f"u{r}" for r in range(n_users)], dtype=object)
    indptr = np.concatenate([[0], np.cumsum([len(h) for h in hists])])
    got = ranking.score_block(ranking.as_tensors(m), ranking.string_array(users), U, indptr, np.concatenate(hists).astype(np.int64), k).to_pandas()

    expect = []
    for r, h in enumerate(hists):
        s = alpha * (U[r].astype(np.float64) @ m["I"].T + m["beta"])
        for j in h:  # EASE: the history items' rows of B
            if m["ease_row"][j] >= 0:
                s[m["ease_pos"]] += gamma * m["ease_B"][m["ease_row"][j]]
        s[~m["candidate"]] = -np.inf
        s[h] = -np.inf
        top = _brute_top(s[None], k, np.arange(n))[0]
        for rank, i in enumerate(top):
            sims = [round(float(m["I_norm"][i] @ m["I_norm"][j]), 5) for j in h]
            because = m["item_ids"][h[int(np.argmax(sims))]] if len(h) else None
            expect.append((users[r], rank + 1, m["item_ids"][i], s[i], because))
    assert [t[:4] for t in got.itertuples(index=False, name=None)] == [t[:4] for t in expect]
    assert got[S.COL_BECAUSE].tolist() == [t[4] for t in expect]
    assert "u4" not in set(got[S.COL_USER])


@pytest.mark.parametrize("alpha,gamma", [(1.0, 0.0), (0.5, 2.0), (0.0, 1.0)])
def test_merging_yesterdays_lists_with_changed_items_equals_scoring_again(alpha, gamma):
    """The incremental night: a user whose inputs did not change keeps yesterday's k items merged
    with their scores of the changed items (new, re-embedded, listed or unlisted), and gets exactly
    the rows a full scoring gives, ties (abundant here) and explanations included."""
    rng = np.random.default_rng(7)
    n, d, k, n_users, n_new = 50, 5, 6, 80, 3
    today = _model(rng, n, d, alpha=alpha, gamma=gamma)
    today["ease_B"] = today["ease_B"][: int((today["ease_pos"] < n - n_new).sum())][:, : int((today["ease_pos"] < n - n_new).sum())]
    today["ease_pos"] = today["ease_pos"][today["ease_pos"] < n - n_new]  # the model knows no new item
    today["ease_row"][n - n_new:] = -1
    changed_text = rng.choice(n - n_new, 4, replace=False)
    flipped = rng.choice(n - n_new, 3, replace=False)
    yesterday = {key: (v[: n - n_new].copy() if key in ("I", "beta", "I_norm", "item_ids", "candidate", "ease_row") else v)
                 for key, v in today.items()}
    yesterday["I"][changed_text] = rng.integers(-2, 3, (len(changed_text), d))
    yesterday["I_norm"] = yesterday["I"] / np.clip(np.linalg.norm(yesterday["I"], axis=1, keepdims=True), 1e-9, None)
    yesterday["candidate"][flipped] = ~yesterday["candidate"][flipped]
    changed = np.unique(np.r_[changed_text, flipped, np.arange(n - n_new, n)])

    U = rng.integers(-2, 3, (n_users, d)).astype(np.float32)
    rest = np.setdiff1d(np.arange(n - n_new), changed)
    hists = [np.sort(rng.choice(rest, rng.integers(0, 10), replace=False)) for _ in range(n_users)]
    users = np.array([f"u{r}" for r in range(n_users)], dtype=object)
    indptr = np.concatenate([[0], np.cumsum([len(h) for h in hists])])
    indices = np.concatenate(hists).astype(np.int64)
    prev = ranking.score_block(ranking.as_tensors(yesterday), ranking.string_array(users), U, indptr, indices, k).to_pandas()
    full = ranking.score_block(ranking.as_tensors(today), ranking.string_array(users), U, indptr, indices, k).to_pandas()

    pos = {f"i{j}": j for j in range(n)}
    prev_cols = np.full((n_users, k), -1)
    prev_vals = np.zeros((n_users, k), np.float32)
    prev_because = np.full((n_users, k), -1)
    r = prev[S.COL_USER].str[1:].astype(int).to_numpy()
    c = prev[S.COL_RANK].to_numpy() - 1
    prev_cols[r, c] = prev[S.COL_ITEM].map(pos)
    prev_vals[r, c] = prev[S.COL_SCORE]
    prev_because[r, c] = prev[S.COL_BECAUSE].map(pos).fillna(-1).astype(int)
    kept = ~np.isin(prev_cols, changed).any(1)  # a changed item in the list: scored again instead
    assert 10 < kept.sum() < n_users
    ku = np.flatnonzero(kept)
    sub_ptr = np.concatenate([[0], np.cumsum(np.diff(indptr)[ku])])
    sub_idx = np.concatenate([indices[indptr[u]:indptr[u + 1]] for u in ku]).astype(np.int64)
    got = ranking.merge_block(ranking.as_tensors(today), ranking.string_array(users[ku]), U[ku], sub_ptr, sub_idx, k, changed,
                              prev_cols[ku], prev_vals[ku], prev_because[ku]).to_pandas()
    want = full[full[S.COL_USER].isin(users[ku])].reset_index(drop=True)
    assert (got[S.COL_ITEM].isin(today["item_ids"][changed])).any()  # the merge did bring changed items in
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)


@pytest.mark.spark
@pytest.mark.parametrize("where", ["tasks", "driver"])
def test_spark_partitions_and_blocks_equal_one_block(spark, where):
    """recommend() over many partitions (and blocks inside them), or in the driver, = one block
    of every user."""
    import scipy.sparse as sp

    rng = np.random.default_rng(4)
    n, d, k, n_users = 40, 5, 6, 53
    m = _model(rng, n, d, alpha=1.0, gamma=0.5)
    U = rng.integers(-2, 3, (n_users, d)).astype(np.float32)
    seen = sp.random(n_users, n, density=0.15, format="csr", random_state=5)
    seen.data[:] = 1
    users = np.array([f"u{r}" for r in range(n_users)], dtype=object)
    whole = ranking.score_block(ranking.as_tensors(m), ranking.string_array(users), U, seen.indptr, seen.indices.astype(np.int64), k).to_pandas()
    got = ranking.recommend(spark, m, users, U, seen, k, users_per_partition=10, block=4, where=where).toPandas()
    key = [S.COL_USER, S.COL_RANK]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True),
                                  whole.sort_values(key).reset_index(drop=True), check_dtype=False)


@pytest.mark.spark
def test_scoring_place(spark):
    """auto scores in the driver on a local master; an unknown place is refused by name."""
    assert ranking.on_driver(spark) and ranking.on_driver(spark, "driver") and not ranking.on_driver(spark, "tasks")
    with pytest.raises(ValueError, match="LMREC_SCORE_WHERE must be one of"):
        ranking.on_driver(spark, "gpu")


def test_because_chunks_long_histories(monkeypatch):
    """The batched explanation gives the same answer however the users are chunked."""
    rng = np.random.default_rng(3)
    Inorm = rng.standard_normal((500, 16)).astype(np.float32)
    Inorm /= np.linalg.norm(Inorm, axis=1, keepdims=True)
    lengths = rng.integers(0, 400, 50)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate([rng.choice(500, n, replace=False) for n in lengths])
    cols = rng.integers(-1, 500, (50, 10))
    whole = ranking.because(cols, indptr, indices, Inorm)
    monkeypatch.setattr(ranking, "_BECAUSE_ELEMS", 1)
    assert (ranking.because(cols, indptr, indices, Inorm) == whole).all()
    for r in range(50):
        h = indices[indptr[r]:indptr[r + 1]]
        for c in range(10):
            if cols[r, c] < 0 or not len(h):
                assert whole[r, c] == -1
            else:
                assert whole[r, c] == h[np.round(Inorm[h] @ Inorm[cols[r, c]], 5).argmax()]


def test_popularity_fallback_skips_rated_items():
    """Users scored by popularity (no model yet, or no history) never get an item they rated."""
    import scipy.sparse as sp

    from lmrec.model.ranking import popular_rows

    popular = np.array([5.0, 9.0, 7.0, -np.inf, 1.0, 3.0])  # item 3 is not in the catalogue
    ids = np.array([f"i{j}" for j in range(6)], dtype=object)
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=np.float32))
    table = popular_rows(np.array(["a", "b", "c"], dtype=object), seen, popular, ids, 3, block=2)
    assert table.schema.names == [S.COL_USER, S.COL_RANK, S.COL_ITEM, S.COL_SCORE, S.COL_BECAUSE]
    out = table.to_pandas()
    assert out[S.COL_BECAUSE].isna().all()
    got = {u: list(g.sort_values(S.COL_RANK)[S.COL_ITEM]) for u, g in out.groupby(S.COL_USER)}
    assert got == {"a": ["i2", "i0", "i5"], "b": ["i1", "i2", "i0"], "c": ["i5", "i4"]}
    assert list(out[out[S.COL_USER] == "c"][S.COL_RANK]) == [1, 2]


def test_ease_product_equals_scipys_product(two_threads):
    """The EASE part's sparse x dense product (torch's embedding_bag on every thread): with 0/1
    values (interactions) the very numbers of one SciPy product; with other weights, SciPy's within
    float32 rounding; rows without entries are zero; mismatched shapes are refused."""
    import scipy.sparse as sp

    from lmrec.model.baselines import sparse_dense

    rng = np.random.default_rng(7)
    X = sp.random(37, 50, density=0.2, format="lil", random_state=3, dtype=np.float32)
    X[5] = 0.0
    X = X.tocsr()
    X.eliminate_zeros()
    binary = X.copy()
    binary.data[:] = 1.0
    dense = rng.standard_normal((50, 23)).astype(np.float32)
    ones, weighted = sparse_dense(binary, dense), sparse_dense(X, dense)
    assert ones.dtype == np.float32 and ones.shape == (37, 23)
    assert np.array_equal(ones, np.asarray(binary @ dense))
    assert not ones[5].any()
    np.testing.assert_allclose(weighted, np.asarray(X @ dense), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weighted, X.toarray() @ dense, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="50 columns"):
        sparse_dense(X, dense[:40])
