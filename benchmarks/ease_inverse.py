"""EASE's dense inverse, the O(n³) step of train at scale (twice at 25M: the fit and the refit,
20,000 items each): lmrec's :func:`lmrec.model.baselines.spd_inverse` (a Cholesky factor in place
and its inverse, torch's LAPACK) against ``numpy.linalg.inv`` (lmrec's inverse before
2026-12-03: the general LU inverse), on the same Gram matrices of the scale demo's ratings
(``XᵀX + λI`` over the n most popular items, λ = 16 x the mean item count, the value train
chose at 5M and 25M), in one run, the two inverses checked equal.

    .venv/bin/python benchmarks/ease_inverse.py                        # 5000,10000,20000 items
    .venv/bin/python benchmarks/ease_inverse.py --items 3000 --no-write
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PeakMemory, write_result  # noqa: E402


def demo_interactions(users: int, items: int):
    """The scale demo's 0/1 interaction matrix (the same generator and sizes as benchmarks/scale.py)."""
    import pandas as pd
    import scipy.sparse as sp

    from benchmarks.scale import D, FULL
    from lmrec.data.demo import generate

    ratings = generate(users=users, items=items, ratings_per_user=FULL["ratings_per_user"], days=30, end_date=D)[0]
    r = ratings[["user_id", "item_id"]].drop_duplicates()
    u, i = (pd.factorize(r[c])[0] for c in ("user_id", "item_id"))
    return sp.csr_matrix((np.ones(len(r), np.float32), (u, i)), shape=(u.max() + 1, i.max() + 1)), len(r)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", default="5000,10000,20000", help="matrix sizes (most popular items), comma-separated")
    ap.add_argument("--users", type=int, default=64_800, help="demo users (64,800 with 24,800 items is the 10M size)")
    ap.add_argument("--catalogue", type=int, default=24_800, help="demo items")
    ap.add_argument("--no-write", action="store_true", help="print instead of writing results/ease-inverse.md")
    args = ap.parse_args(argv)

    import torch

    from lmrec.model.baselines import gram, popular_items, spd_inverse

    t0 = time.perf_counter()
    X, nnz = demo_interactions(args.users, args.catalogue)
    print(f"demo: {X.shape[0]:,} users x {X.shape[1]:,} items, {nnz:,} ratings ({time.perf_counter() - t0:.0f}s)",
          flush=True)
    rows = []
    for n in (int(s) for s in args.items.split(",")):
        active = popular_items(X, n)
        G = gram(X[:, active], np.float64)
        lam = 16 * float(np.diag(G).mean())
        G[np.diag_indices_from(G)] += lam
        out, secs, peak = {}, {}, {}
        for name, fn in (("numpy.linalg.inv", np.linalg.inv), ("lmrec spd_inverse", spd_inverse)):
            A = G.copy()
            with PeakMemory(interval=0.05) as mem:
                t1 = time.perf_counter()
                out[name] = fn(A)
                secs[name] = time.perf_counter() - t1
            peak[name] = mem.peak / 1024
            del A
            print(f"n={len(active)}: {name} {secs[name]:.1f} s, peak {peak[name]:.1f} GiB", flush=True)
        a, b = out.values()
        rel = float(np.abs(a - b).max() / np.abs(a).max())
        assert rel < 1e-8, f"the two inverses differ (max relative difference {rel:.2e})"
        ratio = secs["numpy.linalg.inv"] / secs["lmrec spd_inverse"]
        rows.append(f"| {len(active):,} | {secs['numpy.linalg.inv']:.1f} | {secs['lmrec spd_inverse']:.1f} | "
                    f"{ratio:.2f}x | {peak['numpy.linalg.inv']:.1f} / {peak['lmrec spd_inverse']:.1f} | {rel:.1e} |")
        del G, out, a, b
    text = (f"Gram matrices of the scale demo ({X.shape[0]:,} users, {X.shape[1]:,} items, {nnz:,} ratings), "
            f"float64, λ = 16 x the mean item count; {torch.get_num_threads()} torch threads, NumPy's own BLAS. "
            "Peak: the process's resident memory during the call (GiB), which also holds the Gram matrix and the call's copy of it (2 x 3.2 GB at 20,000) and, in lmrec's call, NumPy's result.\n\n"
            "| items | numpy.linalg.inv s | lmrec spd_inverse s | ratio | peak GiB (numpy / lmrec) | max rel. diff |\n"
            "|--:|--:|--:|--:|--:|--:|\n" + "\n".join(rows) + "\n")
    print(text) if args.no_write else write_result("ease-inverse", text)


if __name__ == "__main__":
    main()
