"""The scorer: the seed's weighted inner product over text-and-collaborative profiles.

    rating(u, i) = μ + b_u + b_i + Σ_k θ_k · U_uk · I_ik                 (MSE on ratings)
    score(u, i)  = α · (β_i + Σ_k θ_k · U_uk · I_ik) + γ · ease(u, i)    (BPR ranking loss)

    I_i = W_I · t_i + drop(E_i)                               item text vector t_i (d_t,)
    U_u = W_U · s_u + W_H · h_u + Σ_j a_uj · Y_j + drop(P_u)    history profile h_u = Σ_j a_uj t_j
    a_uj ∝ rating- and recency-weighted history weights, rows scaled by 1/sqrt(Σ a)
    ease(u, i) = Σ_j x_uj · B_ji, the closed-form EASE item-item model fit on the same ratings
               (collective EASE, the text vectors t as side information, when validation picks it)

ID parts are dropped at random during training, so the text path alone scores cold items and
users. The neural part is trained with MSE + BPR; the blend (α, γ) with the EASE component is then
chosen on the validation split from a small grid that includes pure EASE and the neural part alone. Users without ratings are scored from their own text (s_u); items without ratings from
their text (t_i). Training: Adam (AdamW's decoupled decay on the text
projections, chosen on validation), fixed seeds, early stopping on validation NDCG@10.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lmrec.core import schema as S
from lmrec.model.baselines import (EASE_LAMBDA, add_knn, ease_dense, ease_matrix, ease_score_fn, interactions,
                                   item_cosine)

log = logging.getLogger(__name__)


# (α, γ) blends tried on validation: the neural part alone, pure EASE, and mixes.
BLEND_GRID = ((1.0, 0.0), (0.0, 1.0)) + tuple((a, 1.0) for a in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0))


@dataclass
class ScorerConfig:
    dim: int = 64  # latent dimension d of U and I
    epochs: int = 30  # maximum epochs; early stopping picks the best
    patience: int = 4  # epochs without a better validation NDCG@10 before stopping
    batch_size: int = 2048  # (user, item, rating) triples per step, at most
    # Smaller data takes smaller batches, down to min_batch_size, so that an epoch has at least
    # min_steps_per_epoch steps (at 2048, Amazon Musical Instruments' 7.5k fit ratings made 4).
    min_steps_per_epoch: int = 32
    min_batch_size: int = 256
    lr: float = 3e-3  # Adam learning rate
    reg: float = 1e-5  # L2 on the embeddings used in a batch
    # Decoupled weight decay (AdamW) on the text projections W_I, W_U, W_H and the text biases;
    # the rest has none. Chosen on validation from text_decay_grid (each value is one training
    # with early stopping) while the fit part has at most text_decay_tune_max_ratings ratings;
    # above that, or with an empty grid, text_decay is kept.
    text_decay: float = 0.0
    text_decay_grid: tuple = (0.0, 1.0)
    text_decay_tune_max_ratings: int = 1_000_000
    mse_weight: float = 0.1  # weight of the rating loss (MSE)
    rank_weight: float = 1.0  # weight of the ranking loss (BPR)
    negatives: int = 4  # sampled negative items per positive for BPR
    item_id_dropout: float = 0.3  # probability of dropping an item's ID embedding in training
    user_id_dropout: float = 0.1  # probability of dropping a user's ID embedding in training
    use_ease: bool = True  # add the EASE item-item component to the ranking score
    ease_lambda: float = EASE_LAMBDA  # EASE L2 regularisation λ when none is chosen on validation
    # λ tried on validation, as multiples of the mean interaction count of the EASE items (so the
    # grid scales with the data); () keeps ease_lambda
    ease_lambda_grid: tuple = (1.0, 4.0, 16.0, 64.0, 256.0)
    ease_tune_max_items: int = 5_000  # λ is chosen on at most this many most popular items (an inverse each)
    # Collective EASE (Jeunen et al., RecSys 2020): the item text vectors as side information in
    # the EASE part, XᵀX + w·S Sᵀ. w tried on validation at the chosen λ, as multiples of the same
    # mean count (0: plain EASE); () keeps ease_side_weight
    ease_side_grid: tuple = (0.0, 0.03, 0.1, 0.3, 1.0, 4.0, 16.0)
    ease_side_weight: float = 0.0  # side weight when none is chosen on validation
    # Item-kNN folded into the EASE matrix, B + w·(‖B‖/‖S‖)·S with S the items' cosine similarity:
    # w (relative to the two matrices' sizes) tried on validation by EASE alone over all the EASE
    # items, at the chosen λ and each side weight the blend judges (0: EASE alone); () keeps
    # ease_knn_weight
    ease_knn_grid: tuple = (0.0, 0.1, 0.3, 1.0, 3.0)
    ease_knn_weight: float = 0.0  # kNN weight when none is chosen on validation
    # Validation users the kNN weight is judged on (its gains are small: 2,000 users cannot tell
    # them from noise at 25M); the best weight is kept only when its gain over EASE alone is more
    # than one standard error of the paired per-user difference, else EASE alone
    knn_eval_users: int = 20_000
    ease_max_items: int = 20_000  # EASE over at most this many (most popular) items
    recency_weight: float = 0.5  # extra history weight of a user's most recent item (0 = none)
    fit_fraction: float = 0.7  # per-user random parts of D's ratings: this share fits the models,
    val_fraction: float = 0.1  # this share selects (epochs, blend, L2); the rest (20%) is the test part that
    # reports and gates (with 10%, a 100-user night let a model trained on shuffled ratings tie the champion)
    blend_grid: tuple = BLEND_GRID  # (α, γ) candidates for the neural/EASE blend, chosen on validation
    als_rank: int = 32  # Spark ALS baselines: rank
    als_max_iter: int = 10  # Spark ALS baselines: iterations
    als_reg_explicit: float = 0.1  # Spark ALS explicit (ratings, RMSE) baseline: regParam
    als_reg_implicit: float = 0.05  # Spark ALS implicit (ranking) baseline: regParam
    als_alpha: float = 10.0  # Spark ALS implicit baseline: confidence α
    eval_users: int = 2000  # validation users sampled for early stopping (speed)
    epoch_samples: int = 2_000_000  # an epoch visits at most this many (seeded, shuffled) ratings
    seed: int = S.SEED  # torch, NumPy and split seed
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda; the train job sets LMREC_DEVICE

    def params(self) -> dict:
        return {f"scorer.{k}": (str(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def resolved_device(self) -> str:
        """``device`` with ``auto`` resolved: cuda when torch sees a GPU, else cpu."""
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


def history_weights(train: pd.DataFrame, n_users: int, n_items: int, *, rating_max: float,
                    recency_weight: float) -> sp.csr_matrix:
    """(n_users, n_items) history weights a_uj: (0.5 + r/r_max) · (1 + recency_weight · recency),
    recency in [0, 1] by the item's rank in the user's history (by time, then item index: a user's
    weights depend on their own ratings only, never on the rows' order); rows scaled by
    1/sqrt(Σ_j a_uj)."""
    if len(train) == 0:
        return sp.csr_matrix((n_users, n_items), dtype=np.float32)
    user = train[S.COL_USER_IDX].to_numpy()
    keys = [train[S.COL_ITEM_IDX].to_numpy()] + ([train[S.COL_EVENT_TS].to_numpy()] if S.COL_EVENT_TS in train else [])
    order = np.lexsort((*keys, user))
    starts = np.r_[0, np.flatnonzero(np.diff(user[order])) + 1]  # each user's first row in ``order``
    size = np.diff(np.r_[starts, len(order)])
    rank, n = np.empty(len(order)), np.empty(len(order))
    rank[order] = np.arange(len(order)) - np.repeat(starts, size)  # 0-based place in the user's history
    n[order] = np.repeat(size, size)  # the user's number of ratings
    recency = rank / np.maximum(n - 1, 1)
    w = (0.5 + train[S.COL_RATING].to_numpy() / rating_max) * (1.0 + recency_weight * recency)
    H = interactions(train, n_users, n_items, values=w)
    norm = np.asarray(H.sum(1)).ravel()
    return (sp.diags(1.0 / np.sqrt(np.clip(norm, 1e-9, None))) @ H).tocsr().astype(np.float32)


def histories(ratings: pd.DataFrame, n_users: int, n_items: int, *, rating_max: float,
              recency_weight: float) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(H, X): the users' history weights (:func:`history_weights`) and their 0/1 interaction
    matrix, both (n_users, n_items) CSR: what every scoring path needs from a set of ratings."""
    H = history_weights(ratings, n_users, n_items, rating_max=rating_max, recency_weight=recency_weight)
    return H, interactions(ratings, n_users, n_items)


@dataclass
class ScorerParams:
    """Everything needed to score, as NumPy arrays (what MLflow stores and Spark broadcasts)."""

    W_item: np.ndarray  # (d_t, d) item text projection
    W_user: np.ndarray  # (d_t, d) user text projection
    W_hist: np.ndarray  # (d_t, d) history text profile projection
    E_item: np.ndarray  # (n_items_fit, d) item ID embeddings
    P_user: np.ndarray  # (n_users_fit, d) user ID embeddings
    Y_hist: np.ndarray  # (n_items_fit, d) history item embeddings
    theta: np.ndarray  # (d,)
    w_bias_text: np.ndarray  # (d_t,) ranking bias from item text
    b_rank_id: np.ndarray  # (n_items_fit,) ranking bias per item
    w_rbias_text: np.ndarray  # (d_t,) rating bias from item text
    b_item_id: np.ndarray  # (n_items_fit,) rating bias per item
    b_user: np.ndarray  # (n_users_fit,) rating bias per user
    mu: float
    gamma: float  # weight of the EASE component in the ranking score
    ease_B: np.ndarray  # (n_active, n_active) or (0, 0)
    ease_items: np.ndarray  # (n_active,) item indices of ease_B
    rating_max: float
    recency_weight: float
    alpha: float = 1.0  # weight of the neural part in the ranking score
    ease_knn_scale: float = 0.0  # c in ease_B = EASE + c · the items' cosine (0: EASE alone)
    extra: dict = field(default_factory=dict)

    def item_factors(self, item_idx: np.ndarray, item_text: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(I (n, d), ranking bias β (n,), rating bias b (n,)) for items by index and text vector."""
        item_idx = np.asarray(item_idx)
        known = item_idx < len(self.E_item)
        I = item_text @ self.W_item
        beta = item_text @ self.w_bias_text
        b = item_text @ self.w_rbias_text
        I[known] += self.E_item[item_idx[known]]
        beta[known] += self.b_rank_id[item_idx[known]]
        b[known] += self.b_item_id[item_idx[known]]
        return I.astype(np.float32), beta.astype(np.float32), b.astype(np.float32)

    def history_rows(self, item_text: np.ndarray) -> np.ndarray:
        """M = text·W_hist + Y_hist (n_items, d; Y_hist zero past the items the model was fit on):
        a user's history part is H·M, one product of d columns instead of the text's 384 (25M
        ratings: 6.5 -> 1 s)."""
        M = np.asarray(item_text @ self.W_hist, dtype=np.float32)
        k = min(len(M), len(self.Y_hist))
        M[:k] += self.Y_hist[:k]
        return M

    def user_factors(self, user_idx: np.ndarray, H: sp.csr_matrix, item_text: np.ndarray,
                     user_text: np.ndarray, M: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(θ ⊙ U (n, d), rating bias b_u (n,)) for users by index, history weights (n, n_items)
        over the same item index as ``item_text`` (n_items, d_t), and own text (n, d_t). ``M``:
        :meth:`history_rows` of ``item_text`` when the caller scores many batches."""
        user_idx = np.asarray(user_idx)
        M = self.history_rows(item_text) if M is None else M
        U = user_text @ self.W_user + np.asarray(H @ M)
        known = user_idx < len(self.P_user)
        U[known] += self.P_user[user_idx[known]]
        bu = np.zeros(len(user_idx), dtype=np.float32)
        bu[known] = self.b_user[user_idx[known]]
        return (U * self.theta).astype(np.float32), bu

    def ease_scores(self, X: sp.csr_matrix, n_items: int) -> np.ndarray:
        """(n, n_items) γ · ease(u, ·) for binary histories X (n, n_items)."""
        if self.gamma == 0 or not len(self.ease_items):
            return np.zeros((X.shape[0], n_items), dtype=np.float32)
        items = self.ease_items[self.ease_items < n_items]
        Bm = self.ease_B[: len(items), : len(items)] if len(items) < len(self.ease_items) else self.ease_B
        return np.float32(self.gamma) * ease_dense(X, Bm, items, n_items)

    def to_npz(self, path) -> None:
        arrays = {k: np.asarray(v) for k, v in asdict(self).items() if k != "extra"}
        # Uncompressed: at 20k EASE items zlib took 150 s to write and 26 s to read the 1.6 GB
        # float matrix (which it shrank by 7%); plain .npz writes in 6 s and reads in 4 s.
        np.savez(path, **arrays)

    @classmethod
    def from_npz(cls, path) -> "ScorerParams":
        z = np.load(path)
        kw = {k: z[k] for k in z.files}
        for k in ("mu", "gamma", "rating_max", "recency_weight", "alpha", "ease_knn_scale"):
            if k in kw:  # ease_knn_scale: absent from versions trained before it
                kw[k] = float(kw[k])
        return cls(**kw)


class _Net:
    """The torch module, built lazily so importing this file does not import torch."""

    @staticmethod
    def build(n_users, n_items, d_t, cfg: ScorerConfig, mu: float):
        import torch
        from torch import nn

        class ScorerNet(nn.Module):
            def __init__(self):
                super().__init__()
                d = cfg.dim
                self.W_item = nn.Linear(d_t, d, bias=False)
                self.W_user = nn.Linear(d_t, d, bias=False)
                self.W_hist = nn.Linear(d_t, d, bias=False)
                self.E_item = nn.Embedding(n_items, d)
                self.P_user = nn.Embedding(n_users, d)
                self.Y_hist = nn.Embedding(n_items, d)
                for e in (self.E_item, self.P_user, self.Y_hist):
                    nn.init.normal_(e.weight, std=0.01)
                self.theta = nn.Parameter(torch.ones(d))
                self.bias_text = nn.Linear(d_t, 1, bias=False)
                self.rbias_text = nn.Linear(d_t, 1, bias=False)
                self.b_rank_id = nn.Embedding(n_items, 1)
                self.b_item_id = nn.Embedding(n_items, 1)
                self.b_user = nn.Embedding(n_users, 1)
                for e in (self.b_rank_id, self.b_item_id, self.b_user):
                    nn.init.zeros_(e.weight)
                self.mu = nn.Parameter(torch.tensor(float(mu)))

            def items(self, i, T, drop: bool):
                # i: (B,) item indices; T: (n_items, d_t) text vectors -> I (B, d), β (B,), b (B,)
                t = T[i]
                E, br, bi = self.E_item(i), self.b_rank_id(i).squeeze(-1), self.b_item_id(i).squeeze(-1)
                if drop and cfg.item_id_dropout > 0:
                    keep = (torch.rand(len(i), device=i.device) >= cfg.item_id_dropout).float()
                    E, br, bi = E * keep[:, None], br * keep, bi * keep
                return (self.W_item(t) + E, self.bias_text(t).squeeze(-1) + br, self.rbias_text(t).squeeze(-1) + bi)

            def users(self, u, Hu, prof, own, drop: bool):
                # u: (B,), Hu: sparse (B, n_items), prof/own: (B, d_t) -> θ⊙U (B, d), b_u (B,)
                P = self.P_user(u)
                bu = self.b_user(u).squeeze(-1)
                if drop and cfg.user_id_dropout > 0:
                    keep = (torch.rand(len(u), device=u.device) >= cfg.user_id_dropout).float()
                    P = P * keep[:, None]
                U = self.W_user(own) + self.W_hist(prof) + torch.sparse.mm(Hu, self.Y_hist.weight) + P
                return U * self.theta, bu

            def forward(self, u, Hu, prof, own, i, j, T):
                # One training step's factors (through forward, so DistributedDataParallel syncs the
                # gradients): users u (B,), rated items i (B,), negatives j (B*n,) -> U, b_u, I_i,
                # β_i, b_i, I_j, β_j, μ
                U, bu = self.users(u, Hu, prof, own, drop=True)
                Ii, beta_i, bi = self.items(i, T, drop=True)
                Ij, beta_j, _ = self.items(j, T, drop=True)
                return U, bu, Ii, beta_i, bi, Ij, beta_j, self.mu

        return ScorerNet()


def _users_sample(val: pd.DataFrame, n: int, rng) -> pd.DataFrame:
    """The rows of ``val`` of at most ``n`` of its users, drawn by ``rng`` when there are more."""
    users = np.sort(val[S.COL_USER_IDX].unique())
    if len(users) > n:
        users = np.sort(rng.choice(users, n, replace=False))
    return val[val[S.COL_USER_IDX].isin(users)]


def _sparse_rows(H: sp.csr_matrix, rows: np.ndarray, device):
    import torch

    sub = H[rows].tocoo()
    idx = torch.from_numpy(np.vstack([sub.row, sub.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(sub.data), sub.shape, device=device)


def fit_scorer(train: pd.DataFrame, *, n_users: int, n_items: int, item_text: np.ndarray, user_text: np.ndarray,
               rating_max: float, cfg: ScorerConfig, val: pd.DataFrame | None = None, epochs: int | None = None,
               blend: tuple[float, float] | None = None, ease_lambda: float | None = None,
               ease_side_weight: float | None = None, ease_knn_weight: float | None = None,
               text_decay: float | None = None,
               batch_size: int | None = None, progress=None,
               shard: tuple[int, int] = (0, 1)) -> tuple[ScorerParams, dict]:
    """Train the scorer on ``train`` (user_idx, item_idx, rating, event_ts).

    With ``val``, chooses EASE's λ and side weight (:func:`choose_ease`) and the item-kNN weight
    folded into it (:func:`choose_knn_weight`), stops early on validation NDCG@10
    of the neural part, keeps the best epoch and chooses the EASE blend on ``val``, once per value of
    ``cfg.text_decay_grid`` (without any text, the decay changes nothing and only ``text_decay``
    trains) and per EASE part (plain, and collective with the side weight EASE alone chose), keeping
    the decay and EASE part whose blended scorer has the best validation NDCG@10; without, trains exactly ``epochs`` epochs with
    the given ``blend``, ``ease_lambda``, ``ease_side_weight``, ``ease_knn_weight``, ``text_decay`` and ``batch_size`` (the refit on all
    data). Returns (params, history) where history has per-epoch losses and validation NDCG@10
    of the chosen training, ``best_epoch`` and every chosen knob.
    """
    import torch

    rng = np.random.default_rng(cfg.seed)
    device = cfg.resolved_device()
    T = torch.from_numpy(item_text.astype(np.float32)).to(device)
    H, X = histories(train, n_users, n_items, rating_max=rating_max, recency_weight=cfg.recency_weight)
    profile = torch.from_numpy(np.asarray(H @ item_text, dtype=np.float32)).to(device)
    own = torch.from_numpy(user_text.astype(np.float32)).to(device)
    val_eval = _users_sample(val, cfg.eval_users, rng) if val is not None and len(val) else None
    ease = EaseChoice(cfg.ease_lambda if ease_lambda is None else ease_lambda,
                      cfg.ease_side_weight if ease_side_weight is None else ease_side_weight, {}, {})
    if cfg.use_ease and ease_lambda is None and val_eval is not None and cfg.ease_lambda_grid:
        ease = choose_ease(X, train, val_eval, n_items, cfg, side=item_text if ease_side_weight is None else None)
        if ease_side_weight is not None:
            ease.side_weight = ease_side_weight
    choose = val_eval is not None and cfg.use_ease
    # The kNN weight's users: their own generator, so the training's batches do not depend on them.
    val_knn = (_users_sample(val, cfg.knn_eval_users, np.random.default_rng(cfg.seed + 1))
               if choose and ease_knn_weight is None and cfg.ease_knn_grid else None)
    # Side weights the blended scorer judges: plain EASE and the weight EASE alone preferred (the
    # text the neural part already carries can make a side weight that helps EASE alone hurt the blend).
    side_weights = (0.0, ease.side_weight) if choose and ease.side_tried and ease.side_weight else (ease.side_weight,)
    world = shard[1]
    if batch_size is None:
        per_epoch = min(len(train), cfg.epoch_samples) // world
        batch_size = int(np.clip(per_epoch // max(1, cfg.min_steps_per_epoch), cfg.min_batch_size, cfg.batch_size))
    decays = (cfg.text_decay,) if text_decay is None else (text_decay,)
    if (text_decay is None and val_eval is not None and cfg.text_decay_grid
            and len(train) <= cfg.text_decay_tune_max_ratings and (item_text.any() or user_text.any())):
        decays = tuple(cfg.text_decay_grid)
    ctx = dict(train=train, n_users=n_users, n_items=n_items, item_text=item_text, user_text=user_text,
               rating_max=rating_max, cfg=cfg, T=T, H=H, X=X, profile=profile, own=own, val_eval=val_eval,
               batch_size=batch_size, shard=shard, device=device,
               epochs=epochs if epochs is not None else cfg.epochs, progress=progress)
    rng_state = rng.bit_generator.state
    trained = []
    for decay in decays:
        rng.bit_generator.state = rng_state  # every value trains from the same start and batches
        trained.append((decay, *_train_epochs(decay=decay, rng=rng, **ctx)))
    # Each (text decay, side weight) is judged by what it serves: the scorer after its blend is
    # chosen (the decay that helps the blend can weaken the neural part alone). One EASE matrix
    # alive at a time (1.6 GB at 20,000 items): a best one dropped for the next is built again.
    knn_chosen = {}  # side weight -> (kNN weight, {weight tried: val NDCG@10 of EASE alone})

    def ease_for(w: float):
        """(B, its items, c): EASE at side weight ``w`` with item-kNN folded in as c · cosine, the
        kNN weight given or (with validation) chosen over all the EASE items, once per ``w``."""
        if not cfg.use_ease:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), 0.0
        B, active = ease_matrix(X, ease.lam, cfg.ease_max_items, side=item_text, side_weight=w)
        sim = None
        if w not in knn_chosen:
            if ease_knn_weight is None and choose and cfg.ease_knn_grid and len(active):
                sim = item_cosine(X[:, active])
                knn_chosen[w] = choose_knn_weight(X, B, sim, active, train, val_knn, n_items, cfg.ease_knn_grid)
            else:
                knn_chosen[w] = (cfg.ease_knn_weight if ease_knn_weight is None else ease_knn_weight, {})
        knn_weight = knn_chosen[w][0]
        if not knn_weight:
            return B, active, 0.0
        return B, active, add_knn(B, item_cosine(X[:, active]) if sim is None else sim, knn_weight)

    best, decay_tried, side_blended = None, {}, {}
    for w in side_weights:
        if best is not None:
            best[1].ease_B = None
        B, active, knn_scale = ease_for(w)
        for decay, state, hist in trained:
            state = dataclasses.replace(state, ease_B=B, ease_items=np.asarray(active, dtype=np.int64),
                                        ease_knn_scale=knn_scale)
            chosen = (choose_blend(state, train, val_eval, H, X, item_text, user_text, n_items, grid=cfg.blend_grid)
                      if choose and len(active) else None)
            score = chosen[2] if chosen else hist["best_val_ndcg_at_10"]
            decay_tried[decay] = max(decay_tried.get(decay, -np.inf), score)
            side_blended[w] = max(side_blended.get(w, -np.inf), score)
            if len(decays) > 1 or len(side_weights) > 1:
                log.info("scorer text decay %g, EASE side weight %.4g: val NDCG@10 %.4f (neural part alone %.4f at "
                         "epoch %d)", decay, w, score, hist["best_val_ndcg_at_10"], hist["best_epoch"])
            if best is None or score > best[0] + 1e-9:
                best = (score, state, dict(hist, blend=chosen, text_decay=decay, ease_side_weight=w))
        del B
    _, best_state, history = best
    if best_state.ease_B is None:
        best_state.ease_B, _, _ = ease_for(history["ease_side_weight"])
    history["text_decay_tried"] = decay_tried if len(decays) > 1 else {}
    history["batch_size"] = batch_size
    history["ease_lambda"], history["ease_lambda_tried"] = ease.lam, ease.lam_tried
    history["ease_side_weight_tried"] = ease.side_tried  # EASE alone, on the tuning items
    history["ease_side_weight_blended"] = side_blended if len(side_weights) > 1 else {}
    history["ease_knn_weight"], history["ease_knn_weight_tried"] = knn_chosen.get(history["ease_side_weight"], (0.0, {}))
    if history["blend"] is not None:
        blend = history["blend"][:2]
    else:
        blend = blend or ((1.0, 0.0) if not (cfg.use_ease and len(best_state.ease_items)) else (1.0, 1.0))
    best_state.alpha, best_state.gamma = blend
    history["blend"] = blend
    return best_state, history


def _train_epochs(*, train, n_users, n_items, item_text, user_text, rating_max, cfg, T, H, X, profile, own, val_eval,
                  batch_size, shard, device, epochs, progress, decay, rng) -> tuple[ScorerParams, dict]:
    """One training of the neural part with text decay ``decay``: up to ``epochs`` epochs, early
    stopping on ``val_eval`` when given. Returns (the best epoch's params, without an EASE part;
    history)."""
    import torch

    from lmrec.model.evaluation import ranking_metrics

    torch.manual_seed(cfg.seed)
    mu = float(train[S.COL_RATING].mean())
    net = _Net.build(n_users, n_items, item_text.shape[1], cfg, mu).to(device)
    rank, world = shard
    model = net
    if world > 1:  # data parallel: equal shards of the same permutation; DDP averages the gradients
        from torch.nn.parallel import DistributedDataParallel

        on_gpu = str(device).startswith("cuda")
        model = DistributedDataParallel(net, device_ids=[torch.cuda.current_device()] if on_gpu else None)
    text = [net.W_item.weight, net.W_user.weight, net.W_hist.weight, net.bias_text.weight, net.rbias_text.weight]
    rest = [p for p in net.parameters() if p.requires_grad and all(p is not q for q in text)]
    # fused: one kernel over every parameter instead of a loop of tensor ops; the same AdamW update
    # within float rounding. At 25M ratings (162,000 users, 62,000 items, d=64) the step of
    # ~21M parameters took 75.7 ms of a 139 ms training step on 2 cores, fused 12.7 ms.
    opt = torch.optim.AdamW([{"params": text, "weight_decay": decay}, {"params": rest, "weight_decay": 0.0}], lr=cfg.lr,
                            fused=str(device).split(":")[0] in ("cpu", "cuda"))

    u_all = train[S.COL_USER_IDX].to_numpy().astype(np.int64)
    i_all = train[S.COL_ITEM_IDX].to_numpy().astype(np.int64)
    r_all = train[S.COL_RATING].to_numpy().astype(np.float32)
    pos_items = np.unique(i_all)
    # Rows no rating trained keep their random start: exported as zero, so an item (user) without
    # ratings here is scored by its text alone, as a new one is.
    untrained = (np.setdiff1d(np.arange(n_items), pos_items), np.setdiff1d(np.arange(n_users), u_all))
    history = {"epoch": [], "loss": [], "mse": [], "bpr": [], "val_ndcg_at_10": []}
    best, best_state, best_epoch, waited = -1.0, None, 0, 0

    for epoch in range(1, epochs + 1):
        net.train()
        perm = rng.permutation(len(u_all))[: cfg.epoch_samples]
        if world > 1:
            perm = perm[: len(perm) - len(perm) % world][rank::world]
        tot = {"loss": 0.0, "mse": 0.0, "bpr": 0.0}
        for s in range(0, len(perm), batch_size):
            b = perm[s:s + batch_size]
            u = torch.from_numpy(u_all[b]).to(device)
            i = torch.from_numpy(i_all[b]).to(device)
            r = torch.from_numpy(r_all[b]).to(device)
            j = torch.from_numpy(rng.choice(pos_items, (len(b), cfg.negatives))).to(device)  # (B, n)
            U, bu, Ii, beta_i, bi, Ij, beta_j, mu_t = model(u, _sparse_rows(H, u_all[b], device), profile[u], own[u],
                                                            i, j.reshape(-1), T)
            Ij = Ij.reshape(len(b), cfg.negatives, -1)
            dot_i = (U * Ii).sum(-1)  # (B,)
            dot_j = torch.einsum("bd,bnd->bn", U, Ij)  # (B, n)
            rating = mu_t + bu + bi + dot_i
            s_i = dot_i + beta_i
            s_j = dot_j + beta_j.reshape(len(b), -1)
            mse = torch.mean((rating - r) ** 2)
            bpr = -torch.nn.functional.logsigmoid(s_i[:, None] - s_j).mean()
            reg = cfg.reg * (U.pow(2).sum() + Ii.pow(2).sum() + Ij.pow(2).sum()) / len(b)
            loss = cfg.mse_weight * mse + cfg.rank_weight * bpr + reg
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot["loss"] += float(loss.detach()) * len(b)
            tot["mse"] += float(mse.detach()) * len(b)
            tot["bpr"] += float(bpr.detach()) * len(b)
        for k in tot:
            history[k].append(tot[k] / len(perm))
        history["epoch"].append(epoch)
        params = _export(net, np.zeros((0, 0), np.float32), np.zeros(0, np.int64), rating_max, cfg, alpha=1.0,
                         gamma=0.0, untrained=untrained)
        ndcg = float("nan")
        if val_eval is not None:
            score_fn = make_score_fn(params, H, X, item_text, user_text, n_items)
            ndcg = ranking_metrics(score_fn, train, val_eval, n_items, k=10)["ndcg_at_10"]
            if ndcg > best:
                best, best_state, best_epoch, waited = ndcg, params, epoch, 0
            else:
                waited += 1
        history["val_ndcg_at_10"].append(ndcg)
        if progress:
            progress(epoch, history)
        log.info("scorer epoch %d: loss %.4f (mse %.4f, bpr %.4f) val NDCG@10 %.4f", epoch, history["loss"][-1],
                 history["mse"][-1], history["bpr"][-1], ndcg)
        if val_eval is not None and waited >= cfg.patience:
            break
    if best_state is None:
        best_state, best_epoch = params, epochs
    history["best_epoch"] = best_epoch
    history["best_val_ndcg_at_10"] = best
    return best_state, history


@dataclass
class EaseChoice:
    """EASE's knobs chosen on validation: λ and the side weight (collective EASE), each as used
    over all the EASE items, with the validation NDCG@10 of every value tried."""

    lam: float
    side_weight: float
    lam_tried: dict
    side_tried: dict


def choose_ease(X: sp.csr_matrix, train: pd.DataFrame, val: pd.DataFrame, n_items: int, cfg: ScorerConfig,
                side: np.ndarray | None = None) -> EaseChoice:
    """EASE's λ, then (with ``side``, the item text vectors) the side weight w of collective EASE
    at that λ, each with the best validation NDCG@10 of the EASE part alone, from
    ``cfg.ease_lambda_grid`` and ``cfg.ease_side_grid``: multiples c of the mean interaction count
    of the EASE items, so the grids scale with the data; when the best is at an end, a grid goes
    on past it, x4 a step, at most 3 steps (not below a side weight of 0: plain EASE). Each point is
    an n x n inverse, so the choice is made over the ``ease_tune_max_items`` most popular items;
    the returned values are c times the mean count over all the EASE items (the same items when
    the catalogue is within the cap)."""
    from lmrec.model.baselines import popular_items
    from lmrec.model.evaluation import ranking_metrics

    full = popular_items(X, cfg.ease_max_items)
    tune = popular_items(X, min(cfg.ease_tune_max_items, cfg.ease_max_items))
    if not len(tune):
        return EaseChoice(cfg.ease_lambda, cfg.ease_side_weight, {}, {})
    X_tune = X[:, tune]
    count_tune = X_tune.nnz / len(tune)
    count_full = X[:, full].nnz / len(full)
    side_tune = side[tune] if side is not None else None

    def val_ndcg(lam: float, w: float) -> float:
        B, active = ease_matrix(X_tune, lam, len(tune), side=side_tune, side_weight=w)
        ndcg = ranking_metrics(ease_score_fn(X, B, tune[active], n_items), train, val, n_items, k=10)["ndcg_at_10"]
        log.info("EASE lambda %.4g, side weight %.4g (x mean count %.1f): val NDCG@10 %.4f", lam, w, count_tune, ndcg)
        return ndcg

    c_lam, lam_tried = _grid_search(cfg.ease_lambda_grid, lambda c: val_ndcg(c * count_tune, 0.0))
    c_side, side_tried = 0.0, {}
    if side is not None and np.any(side_tune) and cfg.ease_side_grid:
        c_side, side_tried = _grid_search(cfg.ease_side_grid, lambda c: lam_tried[c_lam] if c == 0
                                          else val_ndcg(c_lam * count_tune, c * count_tune))  # 0: plain EASE, known
    lam, w = float(c_lam * count_full), float(c_side * count_full)
    if len(full) > len(tune):
        log.info("EASE lambda %.4g, side weight %.4g: %g and %g x the mean count over all %d EASE items "
                 "(chosen on the %d most popular)", lam, w, c_lam, c_side, len(full), len(tune))
    return EaseChoice(lam, w, {float(c * count_tune): v for c, v in lam_tried.items()},
                      {float(c * count_tune): v for c, v in side_tried.items()})


def choose_knn_weight(X: sp.csr_matrix, B: np.ndarray, sim: np.ndarray, active: np.ndarray, train: pd.DataFrame,
                      val: pd.DataFrame, n_items: int, grid) -> tuple[float, dict]:
    """The weight w of the items' cosine ``sim`` folded into the EASE matrix ``B`` over the
    ``active`` items (:func:`lmrec.model.baselines.add_knn`) with the best validation NDCG@10 of
    EASE alone, from ``grid`` (0: ``B`` alone; past the top end x4 a step, like λ's), kept only
    when its gain over ``B`` alone is more than one standard error of the paired per-user
    difference (else 0: the one-standard-error rule, the simpler model unless validation says
    otherwise). Scored as X·B + c·X·S, without a third n×n matrix. Returns (w, {w tried: NDCG@10})."""
    from lmrec.model.baselines import knn_scale, sparse_dense
    from lmrec.model.evaluation import ranking_metrics

    Xa = X[:, active].tocsr().astype(np.float32, copy=False)
    ratio = knn_scale(B, sim)  # add_knn's c for a weight of 1

    def trial(w: float) -> float:
        def score(users):
            xa = Xa[users]
            part = sparse_dense(xa, B)
            if w:
                part += np.float32(w * ratio) * sparse_dense(xa, sim)
            out = np.zeros((len(users), n_items), dtype=np.float32)
            out[:, active] = part
            return out

        m = ranking_metrics(score, train, val, n_items, k=10, per_user=True)
        per_user[w] = m["ndcg_per_user"]
        log.info("EASE with item-kNN weight %.3g over all %d EASE items: val NDCG@10 %.4f", w, len(active),
                 m["ndcg_at_10"])
        return m["ndcg_at_10"]

    per_user = {}
    w, tried = _grid_search(grid, trial)
    if w:
        if 0.0 not in per_user:
            tried[0.0] = trial(0.0)
        diff = (per_user[w] - per_user[0.0]).to_numpy()
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else np.inf
        kept = float(diff.mean()) > se
        log.info("item-kNN weight %.3g: %+.5f over EASE alone (standard error %.5f, %d validation users): %s", w,
                 float(diff.mean()), se, len(diff), "kept" if kept else "not kept, EASE alone")
        w = w if kept else 0.0
    return float(w), {float(c): v for c, v in tried.items()}


def _grid_search(grid, trial) -> tuple[float, dict]:
    """The point of ``grid`` with the best ``trial``; at an end, the grid goes on past it (x4 a
    step, at most 3 steps; never below 0). Returns (best point, {point: trial})."""
    grid = sorted(grid)
    tried = {c: trial(c) for c in grid}
    best = lambda: max(grid, key=lambda c: (tried[c], -grid.index(c)))  # noqa: E731  (ties: the first)
    for _ in range(3):
        c = best()
        if len(grid) < 2 or c not in (grid[0], grid[-1]) or c == 0:
            break
        c = grid[0] / 4 if c == grid[0] else grid[-1] * 4
        grid = sorted(grid + [c])
        tried[c] = trial(c)
    return best(), tried


def choose_blend(params, train, val, H, X, item_text, user_text, n_items, *,
                 grid=BLEND_GRID) -> tuple[float, float, float]:
    """The (α, γ) of ``grid`` with the best validation NDCG@10, and that NDCG, after putting the
    neural scores on the EASE scores' scale (α is relative to the ratio of their spreads)."""
    from lmrec.model.evaluation import ranking_metrics

    users = np.sort(val[S.COL_USER_IDX].unique())[:500]
    params.alpha, params.gamma = 1.0, 0.0
    neural = make_score_fn(params, H, X, item_text, user_text, n_items)(users)
    params.alpha, params.gamma = 0.0, 1.0
    ease = make_score_fn(params, H, X, item_text, user_text, n_items)(users)
    scale = float(np.std(ease) / max(np.std(neural), 1e-9))
    best, best_blend = -1.0, (1.0, 0.0)
    for a, g in grid:
        a_eff = a * scale if g else a
        params.alpha, params.gamma = a_eff, g
        ndcg = ranking_metrics(make_score_fn(params, H, X, item_text, user_text, n_items), train, val, n_items, k=10)["ndcg_at_10"]
        log.info("blend alpha=%.4f gamma=%.1f: val NDCG@10 %.4f", a_eff, g, ndcg)
        if ndcg > best + 1e-9:
            best, best_blend = ndcg, (a_eff, g)
    return best_blend + (best,)


def _ddp_fit(train: pd.DataFrame, fit_kw: dict):
    """One TorchDistributor process: join the process group, train on this rank's shard."""
    import os

    import torch
    import torch.distributed as dist

    backend = "nccl" if fit_kw["cfg"].resolved_device().startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        params, _ = fit_scorer(train, shard=(rank, world), **fit_kw)
        # Every rank holds the same parameters (DDP: same start, averaged gradients); TorchDistributor
        # keeps whichever process writes its output last, so all return them.
        return params
    finally:
        dist.destroy_process_group()


def fit_scorer_distributed(train: pd.DataFrame, *, num_processes: int = 2, use_gpu: bool = False,
                           local_mode: bool = True, **fit_kw) -> ScorerParams:
    """Train with ``num_processes`` data-parallel workers through Spark's TorchDistributor
    (``pyspark.ml.torch``): local processes on the driver, or Spark tasks (GPUs) on a cluster
    with ``local_mode=False``. A fixed number of epochs (``epochs`` and ``blend`` from a
    validation run): this is the nightly refit on all data. Returns the trained parameters."""
    from pyspark.ml.torch.distributor import TorchDistributor

    if fit_kw.get("epochs") is None:
        raise ValueError("fit_scorer_distributed trains a fixed number of epochs: pass epochs=")
    return TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu).run(
        _ddp_fit, train, fit_kw)


def _export(net, B, active, rating_max, cfg, *, alpha: float, gamma: float,
            untrained: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0, np.int64))) -> ScorerParams:
    """The net's parameters as arrays; the ID rows of ``untrained`` (item indices, user indices)
    are zero (their random initialisation carries no information)."""
    import torch

    with torch.no_grad():
        f = lambda t: t.detach().float().cpu().numpy().copy()  # noqa: E731
        params = ScorerParams(
            W_item=f(net.W_item.weight.T), W_user=f(net.W_user.weight.T), W_hist=f(net.W_hist.weight.T),
            E_item=f(net.E_item.weight), P_user=f(net.P_user.weight), Y_hist=f(net.Y_hist.weight),
            theta=f(net.theta), w_bias_text=f(net.bias_text.weight[0]), b_rank_id=f(net.b_rank_id.weight[:, 0]),
            w_rbias_text=f(net.rbias_text.weight[0]), b_item_id=f(net.b_item_id.weight[:, 0]),
            b_user=f(net.b_user.weight[:, 0]), mu=float(net.mu), gamma=gamma, alpha=alpha,
            ease_B=B, ease_items=np.asarray(active, dtype=np.int64), rating_max=float(rating_max),
            recency_weight=float(cfg.recency_weight))
    items, users = untrained
    params.E_item[items] = 0.0
    params.Y_hist[items] = 0.0
    params.P_user[users] = 0.0
    return params


def make_score_fn(params: ScorerParams, H: sp.csr_matrix, X: sp.csr_matrix, item_text: np.ndarray,
                  user_text: np.ndarray, n_items: int):
    """``score(users) -> (B, n_items)`` ranking scores for the evaluation harness."""
    I, beta, _ = params.item_factors(np.arange(n_items), item_text)
    M = params.history_rows(item_text)  # once, not once per batch of users

    def score(users):
        U, _ = params.user_factors(users, H[users], item_text, user_text[users], M)
        neural = U @ I.T + beta if params.alpha else 0.0
        return params.alpha * neural + params.ease_scores(X[users], n_items)

    return score


def predict_ratings(params: ScorerParams, H, item_text, user_text, users, items) -> np.ndarray:
    """Predicted ratings for (user, item) index pairs."""
    U, bu = params.user_factors(users, H[users], item_text, user_text[users])
    I, _, bi = params.item_factors(items, item_text[items])
    return params.mu + bu + bi + (U * I).sum(1)
