"""The scoring kernel: top-k items for blocks of users from the scorer's factors (and its EASE
component), seen items masked, ties broken by item index, each recommendation explained by the
history item most similar to it. Runs inside Spark tasks (``mapInPandas``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmrec.core import schema as S
from lmrec.model.evaluation import top_k

BLOCK = 512  # users per matrix multiply inside a partition


def top_k_block(scores: np.ndarray, k: int, item_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns per row, best first; ties by lower ``item_idx``. -inf entries are never
    returned (rows may get fewer than k). Returns (columns (B, k) with -1 padding, scores)."""
    cols, vals = top_k(scores, k, item_idx)
    cols[~np.isfinite(vals)] = -1
    return cols, vals


def _rows(users: np.ndarray, hists: list, cols: np.ndarray, vals: np.ndarray, ids: np.ndarray, Inorm: np.ndarray):
    """One block's output rows: the valid (``cols >= 0``, a prefix of each row) top-k entries,
    ranked from 1, each with the history item most similar to it (``because``; null without history)."""
    valid = cols >= 0
    because = np.full(cols.shape, -1, dtype=np.int64)
    for r, h in enumerate(hists):
        c = cols[r][valid[r]]
        if len(h) and len(c):
            h = np.asarray(h, dtype=np.int64)
            # Rounded: similarities equal up to BLAS rounding (which varies with threads and block
            # shapes) pick the first history item, so a rerun explains a list the same way.
            because[r, : len(c)] = h[np.round(Inorm[c] @ Inorm[h].T, 5).argmax(1)]
    b = because[valid]
    return pd.DataFrame({S.COL_USER: np.repeat(users, valid.sum(1)),
                         S.COL_RANK: np.broadcast_to(np.arange(1, cols.shape[1] + 1, dtype=np.int32), cols.shape)[valid],
                         S.COL_ITEM: ids[cols[valid]], S.COL_SCORE: vals[valid].astype(np.float64),
                         S.COL_BECAUSE: np.where(b >= 0, ids[np.maximum(b, 0)], None)})


def score_partitions(bc, k: int):
    """A ``mapInPandas`` function: users (user_id, u (d,), hist (list of item positions)) -> rows."""

    def fn(batches):
        m = bc.value
        I, beta, ids, Inorm = m["I"], m["beta"], m["item_ids"], m["I_norm"]
        cand = m["candidate"]
        for pdf in batches:
            for s in range(0, len(pdf), BLOCK):
                b = pdf.iloc[s:s + BLOCK]
                U = np.stack(b["u"].to_numpy()).astype(np.float32)  # (B, d)
                scores = m["alpha"] * (U @ I.T + beta) if m["alpha"] else np.zeros((len(b), len(ids)), np.float32)
                hists = b["hist"].to_list()
                if m["gamma"] and len(m["ease_pos"]):
                    for r, h in enumerate(hists):  # EASE: sum of the history items' rows of B
                        hp = m["ease_row"][np.asarray(h, dtype=np.int64)]
                        hp = hp[hp >= 0]
                        if len(hp):
                            scores[r, m["ease_pos"]] += m["gamma"] * m["ease_B"][hp].sum(0)
                scores = np.where(cand, scores, -np.inf)
                for r, h in enumerate(hists):
                    scores[r, np.asarray(h, dtype=np.int64)] = -np.inf  # seen by D
                cols, vals = top_k_block(scores, k, m["item_order"])
                yield _rows(b[S.COL_USER].to_numpy(), hists, cols, vals, ids, Inorm)

    return fn


def popular_rows(users: np.ndarray, seen, popular: np.ndarray, item_ids: np.ndarray, k: int,
                 block: int = 4096) -> pd.DataFrame:
    """The popularity fallback: each user's ``k`` most popular candidate items (``popular``, -inf
    for non-candidates) that the user has not rated (``seen``: their rows of the interaction matrix)."""
    order = np.argsort(-popular, kind="stable")
    order = order[np.isfinite(popular[order])]
    most_seen = int(seen.getnnz(axis=1).max()) if seen.shape[0] else 0
    cand = order[: k + most_seen]  # enough for everyone after removing what they rated
    frames = []
    for s in range(0, len(users), block):
        unseen = ~(seen[s:s + block][:, cand].toarray() > 0)  # (B, len(cand))
        rank = np.cumsum(unseen, axis=1)
        r, c = np.nonzero(unseen & (rank <= k))
        frames.append(pd.DataFrame({S.COL_USER: users[s + r], S.COL_RANK: rank[r, c].astype(np.int32),
                                    S.COL_ITEM: item_ids[cand[c]].astype(str), S.COL_SCORE: popular[cand[c]],
                                    S.COL_BECAUSE: None}))
    return pd.concat(frames, ignore_index=True)
