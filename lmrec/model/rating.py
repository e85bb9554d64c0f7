"""The rating model: the seed's weighted inner product over language-model profiles and
collaborative parts, trained for ratings (its own model, its own early stopping).

    r̂(u, i) = clip(μ + b_u + b_i + w·t_i + Σ_k θ_k · U_uk · I_ik,  r_min, r_max)
    I_i = q_i + W_I · t_i                                   item text vector t_i (d_t,)
    U_u = p_u + W_U · s_u + W_H · h̄_u + |N|^-½ Σ_{j ∈ N} y_j     N = N(u) without i

N(u) is the set of items u rated in the part the model is fit on: *which* items, never how they
were rated, and without i itself when (u, i) is the pair being fit, so the history carries no
target (at prediction time the pair's item is not in the history either: training and serving see
the same thing). h̄_u is the mean text vector of N, s_u the user's own text. Items without ratings
are rated from their text (q_i = 0, b_i = 0), users without ratings from their text.

b_u and b_i are Koren's baseline predictor in closed form (``baselines.regularised_biases``, its
two L2 strengths chosen on validation) and stay fixed: the rest of the model fits what they leave
(biases learnt by SGD next to the factors overfit rare users and items; fixed, ml-latest-small's
validation RMSE fell from 0.871 to 0.857 without text).

Training: SGD with momentum on MSE with L2 on the rows a block uses (the embedding tables' rows
updated lazily and exactly, :class:`LazyMomentumSGD`), fixed seeds; the epoch with
the best validation RMSE is kept (patience ``patience``), and the L2 strengths (biases, factor
rows, text projections) are chosen on validation (:func:`select_rating_model`). Predictions are
clipped to the rating scale.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lmrec.core import schema as S
from lmrec.model.baselines import fit_biases, interactions, regularised_biases

log = logging.getLogger(__name__)


@dataclass
class RatingConfig:
    dim: int = 64  # latent dimension
    epochs: int = 100  # maximum epochs; early stopping on validation RMSE picks the best
    patience: int = 4  # epochs without a better validation RMSE before stopping
    init_std: float = 0.01  # of the factor rows and text projections at the start
    init_std_grid: tuple = (0.01, 0.1)  # tried on validation after reg: small data and few steps an epoch
    # leave 0.01's factors near zero until patience runs out; more data overfits 0.1's
    batch_size: int = 1024
    lr: float = 0.1  # of the mean loss of a block (about batch_size ratings)
    reg: float = 0.1  # L2 on the factor rows a block uses (p, q, y), per rating
    reg_grid: tuple = (0.03, 0.1, 0.3, 1.0)  # L2 strengths tried on validation (1.0: nearly biases only)
    bias_regs: tuple = (15.0, 10.0)  # (user, item) L2 of the fixed closed-form biases (baselines.regularised_biases)
    bias_reg_grid: tuple = tuple((a, b) for a in (5.0, 15.0, 30.0) for b in (2.0, 10.0, 25.0))  # the biases baseline's grid
    optimizer: str = "sgd"  # sgd (with momentum) | adam; Adam overfits rare items' rows here
    momentum: float = 0.9
    text_reg: float = 1e-4  # weight decay of the text projections (W_I, W_U, W_H, w)
    text_reg_grid: tuple = (1e-4, 1e-2, 1.0)  # weight decays tried on validation after reg (1.0: text nearly off)
    epoch_samples: int = 4_000_000  # an epoch visits at most this many (seeded, shuffled) ratings
    seed: int = S.SEED
    device: str = "cpu"
    threads: int = 1  # torch CPU threads while training: the steps are small, and two threads on
    # cores a Spark JVM also uses ran an ml-latest-small epoch in 55 s instead of 0.9 s (spin-waits)

    def params(self) -> dict:
        return {f"rating.{k}": (str(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass
class RatingParams:
    """A fitted rating model as NumPy arrays (what MLflow stores)."""

    P: np.ndarray  # (n_users_fit, d) user ID factors
    Q: np.ndarray  # (n_items_fit, d) item ID factors
    Y: np.ndarray  # (n_items_fit, d) implicit history factors
    W_item: np.ndarray  # (d_t, d)
    W_user: np.ndarray  # (d_t, d)
    W_hist: np.ndarray  # (d_t, d)
    theta: np.ndarray  # (d,)
    b_user: np.ndarray  # (n_users_fit,)
    b_item: np.ndarray  # (n_items_fit,)
    w_text_bias: np.ndarray  # (d_t,)
    mu: float
    r_min: float
    r_max: float

    def predict(self, users, items, X: sp.csr_matrix, item_text: np.ndarray, user_text: np.ndarray) -> np.ndarray:
        """Ratings for (user, item) index pairs; ``X`` (n_users, n_items) 0/1: the users' rated items.

        Every part that depends on the user alone (history sums, text projections) is computed once
        per distinct user, every item part once per distinct item; a pair then costs a few
        d-vectors. The text history is projected before it is summed (Σ t_j · W_H = (Σ t_j) · W_H):
        a sparse product with d columns, not with the text's d_t."""
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        uq, inv = np.unique(users, return_inverse=True)
        iq, jnv = np.unique(items, return_inverse=True)
        I, bi = self._items(iq, item_text)
        n_fit = len(self.Y)
        TW = item_text @ self.W_hist  # every item's projected text: the histories' sums and the pairs' own items
        t_hist = TW[iq]
        y_own = np.zeros((len(iq), self.Y.shape[1]), dtype=self.Y.dtype)
        y_own[iq < n_fit] = self.Y[iq[iq < n_fit]]
        Xu = X[uq]
        n_u = np.asarray(Xu.sum(1)).ravel()
        ysum_u = np.asarray(Xu[:, :n_fit] @ self.Y)
        tsum_u = np.asarray(Xu @ TW)
        base = user_text[uq] @ self.W_user
        known = uq < len(self.P)
        base[known] += self.P[uq[known]]
        bu = np.zeros(len(uq))
        bu[known] = self.b_user[uq[known]]
        m = np.asarray(X[users, items], dtype=np.float64).ravel()  # 1 where i is in u's history: leave it out
        out = np.empty(len(users), dtype=np.float64)
        for s in range(0, len(users), 65_536):
            a, b, mm = inv[s:s + 65_536], jnv[s:s + 65_536], m[s:s + 65_536, None]
            n = n_u[a] - mm[:, 0]
            scale = np.where(n > 0, 1.0 / np.sqrt(np.maximum(n, 1)), 0.0)
            U = (base[a] + (ysum_u[a] - y_own[b] * mm) * scale[:, None]
                 + (tsum_u[a] - t_hist[b] * mm) / np.maximum(n, 1)[:, None])
            out[s:s + 65_536] = self.mu + bu[a] + bi[b] + (U * self.theta * I[b]).sum(1)
        return np.clip(out, self.r_min, self.r_max)

    def _items(self, i, item_text):
        known = i < len(self.Q)
        t = item_text[i]
        I = t @ self.W_item
        b = t @ self.w_text_bias
        I[known] += self.Q[i[known]]
        b[known] += self.b_item[i[known]]
        return I, b

    def to_npz(self, path) -> None:
        np.savez(path, **{k: np.asarray(v) for k, v in asdict(self).items()})

    @classmethod
    def from_npz(cls, path) -> "RatingParams":
        z = np.load(path)
        kw = {k: z[k] for k in z.files}
        for k in ("mu", "r_min", "r_max"):
            kw[k] = float(kw[k])
        return cls(**kw)


def _bags(X: sp.csr_matrix, users: np.ndarray):
    """(flat item indices, offsets) of the users' rows of CSR ``X``, for ``EmbeddingBag``."""
    starts, ends = X.indptr[users], X.indptr[users + 1]
    lens = ends - starts
    offsets = np.concatenate([[0], np.cumsum(lens)[:-1]])
    flat = np.repeat(starts - offsets, lens) + np.arange(lens.sum())
    return X.indices[flat].astype(np.int64), offsets.astype(np.int64)


@dataclass
class FitData:
    """What a fit reads that no knob but the biases' L2 changes: built once per
    :func:`select_rating_model` and shared by its trials (at 25M ratings each rebuild cost a pass
    over every pair: the history and text sums, the closed-form biases, the CSR conversions)."""

    X: sp.csr_matrix  # (n_users, n_items) 0/1: each user's rated items
    R: sp.csr_matrix  # the same pattern with the ratings (float32)
    raters: np.ndarray  # users with at least one rating
    item_text: np.ndarray  # (n_items, d_t), as given (validation predictions read it)
    user_text: np.ndarray  # (n_users, d_t), as given
    T: object  # torch (n_items, d_t): item text vectors
    Tsum: object  # torch (n_users, d_t): the sum of each user's items' text vectors
    own: object  # torch (n_users, d_t): the users' own text vectors
    n_hist: object  # torch (n_users,): history lengths
    mu: float
    b_user: np.ndarray
    b_item: np.ndarray  # the closed-form biases with the L2 pair ``build`` was given

    @classmethod
    def build(cls, train: pd.DataFrame, *, n_users: int, n_items: int, item_text: np.ndarray,
              user_text: np.ndarray, bias_regs: tuple, device: str = "cpu") -> "FitData":
        import torch

        X = interactions(train, n_users, n_items)
        X.sort_indices()
        R = sp.csr_matrix((train[S.COL_RATING].to_numpy().astype(np.float32),
                           (train[S.COL_USER_IDX].to_numpy(), train[S.COL_ITEM_IDX].to_numpy())), shape=(n_users, n_items))
        R.sort_indices()
        t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32)).to(device)  # noqa: E731
        mu, bu, bi = regularised_biases(train, n_users, n_items, reg_user=bias_regs[0], reg_item=bias_regs[1])
        return cls(X=X, R=R, raters=np.flatnonzero(np.diff(R.indptr) > 0), item_text=item_text, user_text=user_text,
                   T=t(item_text), Tsum=t(X @ item_text), own=t(user_text), n_hist=t(X.sum(1)).ravel(),
                   mu=mu, b_user=bu, b_item=bi)


def fit_rating_model(train: pd.DataFrame, *, n_users: int, n_items: int, item_text: np.ndarray,
                     user_text: np.ndarray, r_min: float, r_max: float, cfg: RatingConfig,
                     val: pd.DataFrame | None = None, epochs: int | None = None,
                     progress=None) -> tuple[RatingParams, dict]:
    """Fit on ``train`` (user_idx, item_idx, rating). With ``val``: early stopping on validation
    RMSE (best epoch kept); without: exactly ``epochs`` epochs (a refit with the chosen count).
    Returns (params, history) with per-epoch train MSE and validation RMSE, and ``best_epoch``."""
    data = FitData.build(train, n_users=n_users, n_items=n_items, item_text=item_text, user_text=user_text,
                         bias_regs=cfg.bias_regs, device=cfg.device)
    return _fit(data, r_min=r_min, r_max=r_max, cfg=cfg, val=val, epochs=epochs, progress=progress)


class LazyMomentumSGD:
    """torch's SGD with momentum (v ← m·v + g, p ← p − lr·v; no decay, no dampening) for
    embedding tables whose gradients are sparse (the rows a step used), exactly and at the cost of
    those rows: a row no step touches only decays its velocity, v ← m·v and p ← p − lr·v each
    step, whose closed form over k steps (v ← mᵏ·v, p ← p − lr·v·m(1 − mᵏ)/(1 − m)) is applied
    to the rows a step will read by :meth:`catch_up` before its forward pass (their gradient
    depends on their current value), or to every row by :meth:`sync` (before the tables are
    read). Dense torch SGD touched all 18M numbers of a 25M-rating model on every step."""

    def __init__(self, params, *, lr: float, momentum: float):
        import torch

        self.params, self.lr, self.m, self.t = list(params), float(lr), float(momentum), 0
        self.v = [torch.zeros_like(p) for p in self.params]
        self.last = [torch.zeros(p.shape[0], dtype=torch.long, device=p.device) for p in self.params]

    def _decay(self, j: int, rows, k):
        """Apply ``k`` (per row) gradient-free steps to ``rows`` of table ``j``; their velocity."""
        v = self.v[j][rows]
        k = k.to(v.dtype)[:, None]
        mk = self.m ** k
        drift = k if self.m == 1 else self.m * (1 - mk) / (1 - self.m)
        self.params[j].data[rows] -= self.lr * v * drift
        return v * mk

    def catch_up(self, rows: list) -> None:
        """Bring ``rows[j]`` (unique row numbers, a tensor) of table j up to the current step:
        the rows the next forward pass reads."""
        import torch

        with torch.no_grad():
            for j, r in enumerate(rows):
                self.v[j][r] = self._decay(j, r, self.t - self.last[j][r])
                self.last[j][r] = self.t

    def step(self) -> None:
        import torch

        self.t += 1
        with torch.no_grad():
            for j, p in enumerate(self.params):
                if p.grad is None:
                    continue
                g = p.grad.coalesce()
                rows, vals = g.indices()[0], g.values()
                k = self.t - 1 - self.last[j][rows]  # 0 for the rows catch_up brought up (every row, as _fit calls it)
                v = self.m * (self._decay(j, rows, k) if bool(k.any()) else self.v[j][rows]) + vals
                self.v[j][rows] = v
                p.data[rows] -= self.lr * v
                self.last[j][rows] = self.t

    def sync(self) -> None:
        """Bring every row up to the current step (before the tables are read or exported)."""
        import torch

        with torch.no_grad():
            for j, p in enumerate(self.params):
                rows = torch.arange(p.shape[0], device=p.device)
                self.v[j] = self._decay(j, rows, self.t - self.last[j])
                self.last[j][:] = self.t

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def _fit(data: FitData, *, r_min, r_max, cfg, val=None, epochs=None, progress=None):
    """:func:`fit_rating_model` on prepared data (whose biases stand: ``cfg.bias_regs`` is not read),
    with ``cfg.threads`` torch threads."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(data, r_min=r_min, r_max=r_max, cfg=cfg, val=val, epochs=epochs, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _train(data: FitData, *, r_min, r_max, cfg, val, epochs, progress):
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    dev = cfg.device
    (n_users, n_items), d, d_t = data.X.shape, cfg.dim, data.item_text.shape[1]
    X, R, raters, T, Tsum, own, n_hist = data.X, data.R, data.raters, data.T, data.Tsum, data.own, data.n_hist
    # Koren's baseline predictor in closed form, held fixed (buffers, not parameters): biases learnt
    # by SGD next to the factors overfit rare users and items.
    mu, bu0, bi0 = data.mu, data.b_user, data.b_item

    sparse = cfg.optimizer == "sgd"  # the tables' rows a step uses, updated by LazyMomentumSGD

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.P, self.Q = nn.Embedding(n_users, d, sparse=sparse), nn.Embedding(n_items, d, sparse=sparse)
            self.Y = nn.EmbeddingBag(n_items, d, mode="sum", sparse=sparse)
            for e in (self.P, self.Q, self.Y):
                nn.init.normal_(e.weight, std=cfg.init_std)
            self.W_item, self.W_user, self.W_hist = (nn.Linear(d_t, d, bias=False) for _ in range(3))
            for w in (self.W_item, self.W_user, self.W_hist):
                nn.init.normal_(w.weight, std=cfg.init_std)
            self.theta = nn.Parameter(torch.ones(d))
            self.register_buffer("b_user", torch.from_numpy(bu0.astype(np.float32)))
            self.register_buffer("b_item", torch.from_numpy(bi0.astype(np.float32)))
            self.text_bias = nn.Linear(d_t, 1, bias=False)
            nn.init.zeros_(self.text_bias.weight)

        def forward(self, users, flat, offsets, rep, i):
            # users (nb,): a block of users; flat/offsets: their histories (every item they rated);
            # rep (B,): each rating's position in ``users``; i (B,): its item. Each rating's own item
            # is left out of its user's history (it is always in it: these are the fit pairs).
            u = users[rep]
            n = (n_hist[u] - 1).clamp(min=0)
            ysum = self.Y(flat, offsets)[rep] - F.embedding(i, self.Y.weight, sparse=sparse)
            tmean = (Tsum[u] - T[i]) / n.clamp(min=1)[:, None]
            scale = torch.where(n > 0, n.clamp(min=1).rsqrt(), torch.zeros_like(n))
            U = self.P(u) + ysum * scale[:, None] + self.W_user(own[u]) + self.W_hist(tmean)
            I = self.Q(i) + self.W_item(T[i])
            bi = self.b_item[i] + self.text_bias(T[i]).squeeze(-1)
            return mu + self.b_user[u] + bi + (U * self.theta * I).sum(-1), u

    net = Net().to(dev)
    text_params = [net.W_item.weight, net.W_user.weight, net.W_hist.weight, net.text_bias.weight]
    tables = [net.P.weight, net.Q.weight, net.Y.weight] if sparse else []
    rest = [p for p in net.parameters() if all(p is not q for q in text_params + tables)]
    groups = [{"params": rest, "weight_decay": 0.0}, {"params": text_params, "weight_decay": cfg.text_reg}]
    opt = (torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum) if cfg.optimizer == "sgd"
           else torch.optim.Adam(groups, lr=cfg.lr))
    lazy = LazyMomentumSGD(tables, lr=cfg.lr, momentum=cfg.momentum) if sparse else None
    if val is not None and len(val):
        vu, vi = val[S.COL_USER_IDX].to_numpy(), val[S.COL_ITEM_IDX].to_numpy()
        vr = val[S.COL_RATING].to_numpy()
    n_epochs = epochs if epochs is not None else cfg.epochs
    history = {"epoch": [], "train_mse": [], "val_rmse": []}
    best, best_state, best_epoch, waited = np.inf, None, 0, 0
    for epoch in range(1, n_epochs + 1):
        net.train()
        # Steps over blocks of users (shuffled), about ``batch_size`` ratings a block: each user's
        # history is summed once per step, not once per rating (SVD++'s cost otherwise).
        perm = rng.permutation(raters)
        counts = np.cumsum(np.diff(R.indptr)[perm])
        perm = perm[: max(1, int(np.searchsorted(counts, cfg.epoch_samples, side="right")))]
        cuts = np.flatnonzero(np.diff(counts[: len(perm)] // cfg.batch_size)) + 1
        total, seen = 0.0, 0
        for block in np.split(perm, cuts):
            flat, offsets = _bags(R, block)
            lens = np.diff(np.append(offsets, len(flat)))
            rep = torch.from_numpy(np.repeat(np.arange(len(block)), lens)).to(dev)
            i = torch.from_numpy(flat).to(dev)
            r = torch.from_numpy(R.data[np.repeat(R.indptr[block] - offsets, lens) + np.arange(len(flat))]).to(dev)
            users = torch.from_numpy(block.astype(np.int64)).to(dev)
            if lazy:  # the rows this step reads (P: the block's users; Q and Y: their items)
                items = torch.from_numpy(np.unique(flat)).to(dev)
                lazy.catch_up([users, items, items])
            pred, u = net(users, i, torch.from_numpy(offsets).to(dev), rep, i)
            mse = torch.mean((pred - r) ** 2)
            reg = cfg.reg * (net.P(u).pow(2).sum() + net.Q(i).pow(2).sum()
                             + net.Y(i, torch.arange(len(i), device=dev)).pow(2).sum()) / len(i)
            opt.zero_grad()
            if lazy:
                lazy.zero_grad()
            (mse + reg).backward()
            opt.step()
            if lazy:
                lazy.step()
            total += float(mse.detach()) * len(i)
            seen += len(i)
        if lazy:
            lazy.sync()
        params = _export(net, mu, r_min, r_max)
        history["epoch"].append(epoch)
        history["train_mse"].append(total / max(seen, 1))
        v = float("nan")
        if val is not None and len(val):
            v = float(np.sqrt(np.mean((params.predict(vu, vi, X, data.item_text, data.user_text) - vr) ** 2)))
            if v < best - 1e-6:
                best, best_state, best_epoch, waited = v, params, epoch, 0
            else:
                waited += 1
        history["val_rmse"].append(v)
        if progress:
            progress(epoch, history)
        log.info("rating model epoch %d: train MSE %.4f, validation RMSE %.4f", epoch, history["train_mse"][-1], v)
        if val is not None and len(val) and (waited >= cfg.patience or not np.isfinite(history["train_mse"][-1])):
            break  # no better for ``patience`` epochs, or diverged (a too-large initial scale or rate)
    if best_state is None:
        best_state, best_epoch = params, n_epochs
    history["best_epoch"], history["best_val_rmse"] = best_epoch, best
    return best_state, history


def _export(net, mu, r_min, r_max) -> RatingParams:
    import torch

    with torch.no_grad():
        f = lambda t: t.detach().float().cpu().numpy().copy()  # noqa: E731
        return RatingParams(P=f(net.P.weight), Q=f(net.Q.weight), Y=f(net.Y.weight), W_item=f(net.W_item.weight.T),
                            W_user=f(net.W_user.weight.T), W_hist=f(net.W_hist.weight.T), theta=f(net.theta),
                            b_user=f(net.b_user), b_item=f(net.b_item),
                            w_text_bias=f(net.text_bias.weight[0]), mu=float(mu), r_min=float(r_min), r_max=float(r_max))


def select_rating_model(fit: pd.DataFrame, val: pd.DataFrame, *, cfg: RatingConfig, n_users: int, n_items: int,
                        item_text: np.ndarray, user_text: np.ndarray, r_min: float,
                        r_max: float) -> tuple[RatingConfig, dict, RatingParams]:
    """The L2 strengths and the epoch count with the best validation RMSE (models fit on ``fit``),
    by coordinate search: first the fixed biases' L2 pair over ``cfg.bias_reg_grid``
    (closed form, by the biases' own validation RMSE); then ``reg`` over ``cfg.reg_grid`` at
    ``cfg.text_reg`` and ``cfg.init_std``, then the initial scale over ``cfg.init_std_grid`` at the
    chosen ``reg``, then the text projections' weight decay over ``cfg.text_reg_grid`` at the
    chosen pair (a large decay turns the text parts off, so validation decides whether the text
    earns its place). Returns (the chosen config, {(reg, text_reg, init_std): (best val RMSE, best epoch)},
    the chosen model as fit on ``fit``)."""
    import dataclasses

    vu, vi, vr = (val[c].to_numpy() for c in (S.COL_USER_IDX, S.COL_ITEM_IDX, S.COL_RATING))
    bias_rmse = {g: float(np.sqrt(np.mean((fit_biases(fit, n_users, n_items, reg_user=g[0], reg_item=g[1])(vu, vi)
                                           - vr) ** 2))) for g in cfg.bias_reg_grid}
    cfg = dataclasses.replace(cfg, bias_regs=min(bias_rmse, key=bias_rmse.get))
    log.info("rating model biases: L2 (user, item) %s, validation RMSE %.4f", cfg.bias_regs, bias_rmse[cfg.bias_regs])
    tried, best = {}, None
    data = FitData.build(fit, n_users=n_users, n_items=n_items, item_text=item_text, user_text=user_text,
                         bias_regs=cfg.bias_regs, device=cfg.device)

    def trial(c: RatingConfig):
        nonlocal best
        key = (c.reg, c.text_reg, c.init_std)
        if key in tried:
            return
        params, hist = _fit(data, r_min=r_min, r_max=r_max, cfg=c, val=val)
        tried[key] = (hist["best_val_rmse"], hist["best_epoch"])
        log.info("rating model reg %.3g, text_reg %.3g, init_std %.3g: validation RMSE %.4f at epoch %d", *key, *tried[key])
        if best is None or tried[key][0] < tried[best[0]][0]:
            best = (key, params)

    for reg in cfg.reg_grid:
        trial(dataclasses.replace(cfg, reg=reg))
    for init_std in cfg.init_std_grid:
        trial(dataclasses.replace(cfg, reg=best[0][0], init_std=init_std))
    for text_reg in cfg.text_reg_grid:
        trial(dataclasses.replace(cfg, reg=best[0][0], init_std=best[0][2], text_reg=text_reg))
    (reg, text_reg, init_std), params = best
    return dataclasses.replace(cfg, reg=reg, text_reg=text_reg, init_std=init_std, epochs=tried[best[0]][1]), tried, params
