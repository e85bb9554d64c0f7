"""The scoring kernel (lmrec.model.ranking) against brute force."""

from __future__ import annotations

import numpy as np

from lmrec.core import schema as S
from lmrec.model import ranking


def test_top_k_block_equals_bruteforce():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, (40, 30)).astype(np.float32)  # many ties
    scores[:, 3] = -np.inf
    cols, vals = ranking.top_k_block(scores, 7, np.arange(30))
    for r in range(40):
        ref = sorted(range(30), key=lambda i: (-scores[r, i], i))[:7]
        assert cols[r].tolist() == ref
        assert (np.diff(vals[r]) <= 0).all()


def test_block_rows_equal_per_user_rows():
    """score's vectorised rows of a block = the rows built user by user (ranks, padding, because)."""
    rng = np.random.default_rng(1)
    n, k = 50, 5
    ids = np.array([f"i{j}" for j in range(n)], dtype=object)
    Inorm = rng.standard_normal((n, 8)).astype(np.float32)
    scores = rng.standard_normal((7, n)).astype(np.float32)
    scores[3, 4:] = -np.inf  # fewer than k candidates
    hists = [rng.choice(n, rng.integers(1, 6), replace=False) for _ in range(7)]
    hists[2] = np.array([], dtype=np.int64)  # text-only user: no because
    cols, vals = ranking.top_k_block(scores, k, np.arange(n))
    users = np.array([f"u{r}" for r in range(7)], dtype=object)
    got = ranking._rows(users, hists, cols, vals, ids, Inorm)
    expect = []
    for r, h in enumerate(hists):
        c = cols[r][cols[r] >= 0]
        because = [ids[h[np.argmax([Inorm[i] @ Inorm[j] for j in h])]] for i in c] if len(h) else [None] * len(c)
        expect += [(users[r], rank + 1, ids[i], float(vals[r][rank]), because[rank]) for rank, i in enumerate(c)]
    assert list(got.itertuples(index=False, name=None)) == expect
    assert (got[got[S.COL_USER] == "u3"][S.COL_RANK] == [1, 2, 3, 4]).all()


def test_popularity_fallback_skips_rated_items():
    """Users scored by popularity (no model yet, or no history) never get an item they rated."""
    import scipy.sparse as sp

    from lmrec.model.ranking import popular_rows

    popular = np.array([5.0, 9.0, 7.0, -np.inf, 1.0, 3.0])  # item 3 is not in the catalogue
    ids = np.array([f"i{j}" for j in range(6)], dtype=object)
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=np.float32))
    out = popular_rows(np.array(["a", "b", "c"], dtype=object), seen, popular, ids, 3, block=2)
    got = {u: list(g.sort_values(S.COL_RANK)[S.COL_ITEM]) for u, g in out.groupby(S.COL_USER)}
    assert got == {"a": ["i2", "i0", "i5"], "b": ["i1", "i2", "i0"], "c": ["i5", "i4"]}
    assert list(out[out[S.COL_USER] == "c"][S.COL_RANK]) == [1, 2]
