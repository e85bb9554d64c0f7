"""Top-10 for all users with the same user and item factors, in one run on this machine:
the score job's kernel (item matrix broadcast, users over partitions with mapInPandas, blocked
matmul + argpartition, seen items removed) against Spark ALS ``recommendForAllUsers(10)`` and a
single-process NumPy blocked matmul + argpartition (the floor). Wall time and peak memory.

    .venv/bin/python benchmarks/scoring.py            # writes benchmarks/results/scoring.md
    .venv/bin/python benchmarks/scoring.py --skip-demo  # ml-latest-small only
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result, REPO, PeakMemory, bench_settings, require_ml_small  # noqa: E402
from lmrec.core import schema as S  # noqa: E402
from lmrec.model.ranking import score_partitions, top_k_block  # noqa: E402
from lmrec.core.spark import get_spark  # noqa: E402

K = 10
RANK = 64


def fit_als(spark, ratings: pd.DataFrame, max_iter: int):
    from pyspark.ml.recommendation import ALS

    df = spark.createDataFrame(ratings[["u", "i", "r"]].astype({"u": "int32", "i": "int32", "r": "float32"}))
    return ALS(rank=RANK, maxIter=max_iter, regParam=0.1, userCol="u", itemCol="i", ratingCol="r", seed=S.SEED).fit(df)


def numpy_floor(U, I, seen_rows, k=K, block=2048):
    out = []
    for s in range(0, len(U), block):
        scores = U[s:s + block] @ I.T
        for r, h in enumerate(seen_rows[s:s + block]):
            scores[r, h] = -np.inf
        out.append(top_k_block(scores, k, np.arange(I.shape[0]))[0])
    return np.vstack(out)


def lmrec_kernel(spark, U, I, seen_rows, k=K):
    bc = spark.sparkContext.broadcast({
        "I": I, "beta": np.zeros(len(I), np.float32), "I_norm": I / np.clip(np.linalg.norm(I, axis=1, keepdims=True), 1e-9, None),
        "item_ids": np.array([str(i) for i in range(len(I))], dtype=object), "item_order": np.arange(len(I)),
        "candidate": np.ones(len(I), bool), "alpha": 1.0, "gamma": 0.0, "ease_B": np.zeros((0, 0), np.float32),
        "ease_pos": np.zeros(0, np.int64), "ease_row": np.full(len(I), -1)})
    pdf = pd.DataFrame({S.COL_USER: [str(u) for u in range(len(U))], "u": list(U), "hist": [h.tolist() for h in seen_rows]})
    sdf = spark.createDataFrame(pdf, "user_id string, u array<float>, hist array<long>")
    n_parts = max(spark.sparkContext.defaultParallelism, -(-len(U) // 2048))
    schema = "user_id string, rank int, item_id string, score double, because_item_id string"
    return sdf.repartition(n_parts).mapInPandas(score_partitions(bc, k), schema)


def bench(spark, name, ratings: pd.DataFrame, max_iter: int) -> list[tuple]:
    model = fit_als(spark, ratings, max_iter)
    uf = model.userFactors.toPandas().sort_values("id")
    itf = model.itemFactors.toPandas().sort_values("id")
    n_u, n_i = int(ratings["u"].max()) + 1, int(ratings["i"].max()) + 1
    U = np.zeros((n_u, RANK), np.float32)
    I = np.zeros((n_i, RANK), np.float32)
    U[uf["id"].to_numpy()] = np.stack(uf["features"].to_numpy())
    I[itf["id"].to_numpy()] = np.stack(itf["features"].to_numpy())
    seen = ratings.groupby("u")["i"].apply(np.array).reindex(range(n_u)).apply(lambda x: x if isinstance(x, np.ndarray) else np.zeros(0, int)).tolist()
    rows = []
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        model.recommendForAllUsers(K).write.format("noop").mode("overwrite").save()
        als = time.perf_counter() - t0
    rows.append((name, "Spark ALS recommendForAllUsers(10)", als, mem.peak))
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        lmrec_kernel(spark, U, I, seen).write.format("noop").mode("overwrite").save()
        ours = time.perf_counter() - t0
    rows.append((name, "lmrec score kernel (mapInPandas, seen removed, because_item_id)", ours, mem.peak))
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        numpy_floor(U, I, seen)
        floor = time.perf_counter() - t0
    rows.append((name, "NumPy blocked matmul + argpartition (1 process)", floor, mem.peak))
    logging.info("%s: ALS %.1fs, lmrec %.1fs, NumPy %.1fs", name, als, ours, floor)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-demo", action="store_true", help="skip the 100,000 x 20,000 demo catalogue")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = bench_settings("scoring", LMREC_DRIVER_MEMORY="12g")
    spark = get_spark(cfg, "lmrec-bench-scoring")
    r = pd.read_csv(require_ml_small() / "ratings.csv")
    r["u"] = r["userId"].astype("category").cat.codes
    r["i"] = r["movieId"].astype("category").cat.codes
    r["r"] = r["rating"]
    rows = bench(spark, f"ml-latest-small ({r.u.nunique()} users x {r.i.nunique()} items)", r, max_iter=10)
    if not args.skip_demo:
        from lmrec.data.demo import generate

        d, _, _ = generate(100_000, 20_000, ratings_per_user=20, seed=S.SEED)
        d["u"] = d["user_id"].str[1:].astype(int)
        d["i"] = d["item_id"].str[1:].astype(int)
        d["r"] = d["rating"]
        rows += bench(spark, "demo (100,000 users x 20,000 items)", d, max_iter=2)
    df = pd.DataFrame(rows, columns=["data", "path", "seconds", "peak_rss_mib"])
    for data, g in df.groupby("data", sort=False):
        als = g[g.path.str.startswith("Spark")].seconds.iloc[0]
        floor = g[g.path.str.startswith("NumPy")].seconds.iloc[0]
        df.loc[g.index, "speed-up vs ALS"] = (als / g.seconds).round(2)
        df.loc[g.index, "time / NumPy floor"] = (g.seconds / floor).round(2)
    text = (f"Top-{K} for all users, rank-{RANK} ALS factors, Spark {spark.sparkContext.master}, this machine.\n\n"
            + df.round(2).to_markdown(index=False) + "\n")
    write_result("scoring", text)


if __name__ == "__main__":
    main()
