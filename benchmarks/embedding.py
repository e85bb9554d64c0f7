"""Embedding throughput on the 9,742 ml-latest-small item texts, in one run on this machine:
the embed_items job (Spark, mapInPandas) against sentence-transformers' encode (batch 64) of the
same model, both on the CPU; a night with 1% of texts changed; int8 quantization.

    .venv/bin/python benchmarks/embedding.py          # writes benchmarks/results/embedding.md
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result, ML_DATE, REPO, bench_settings, ml_small_warehouse  # noqa: E402
from jobs import embed_items, ingest  # noqa: E402
from lmrec.text import embedding as embed  # noqa: E402
from lmrec.core import schema as S  # noqa: E402
from lmrec.core.io import read_table  # noqa: E402
from lmrec.core.spark import get_spark  # noqa: E402
from lmrec.text.builders import build_item_text  # noqa: E402


def _no_model(opts: dict, col_id: str):
    """encode_partitions without a model: zero vectors (to measure what the job costs around it)."""

    def encode(batches):
        for f in batches:
            if len(f):
                yield pd.DataFrame({col_id: f[col_id].to_numpy(), S.COL_TEXT_SHA: f[S.COL_TEXT_SHA].to_numpy(),
                                    S.COL_VECTOR: list(np.zeros((len(f), 384), np.float32))})

    return encode


def main() -> None:
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = bench_settings("ml-small")
    spark = get_spark(cfg, "lmrec-bench-embedding", gpu=True)  # the embedding jobs' session (torch daemon)
    src = ml_small_warehouse(spark, cfg, jobs=("ingest",))
    texts = build_item_text(read_table(spark, cfg, S.ITEMS_RAW, ML_DATE), read_table(spark, cfg, S.USER_TEXT_RAW, ML_DATE),
                            ML_DATE).toPandas()[S.COL_TEXT].tolist()
    n = len(texts)
    res = {}

    from sentence_transformers import SentenceTransformer

    from lmrec.text.encoder import TextEncoder, default_model_path

    st = SentenceTransformer(default_model_path(), device="cpu")
    st.encode(texts[:64], batch_size=64)  # warm-up
    t0 = time.perf_counter()
    ref = st.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    res["sentence-transformers encode (1 process, torch threads=%d)" % torch.get_num_threads()] = time.perf_counter() - t0

    enc = TextEncoder(device="cpu")
    t0 = time.perf_counter()
    ours = enc.encode(texts, progress=False)
    res["lmrec TextEncoder (1 process)"] = time.perf_counter() - t0
    cos = float((ours * ref).sum(1).min())

    q = TextEncoder(device="cpu", quantize=True)
    t0 = time.perf_counter()
    qv = q.encode(texts, progress=False)
    res["lmrec TextEncoder int8 (1 process)"] = time.perf_counter() - t0
    qcos = (qv * ours).sum(1)

    # The job: full run, then a rerun with 1% of item texts changed on the next day.
    stats = embed_items.run(ML_DATE, cfg=cfg, spark=spark, full_refresh=True)
    res["embed_items job, full, cold session (encode + Delta write; incl. Python workers and model load)"] = stats["seconds"]
    items = pd.read_csv(src / "items.csv", dtype=str)
    changed = items.sample(frac=0.01, random_state=1).index
    items.loc[changed, "title"] = items.loc[changed, "title"] + " (remastered)"
    night = Path(cfg.home) / "source-night2"
    night.mkdir(exist_ok=True)
    items.to_csv(night / "items.csv", index=False)
    for f in ("ratings.csv", "user_text.csv"):
        target = night / f
        if not target.exists():
            target.symlink_to(src / f)
    d2 = ML_DATE + dt.timedelta(days=1)
    # A real next night: no vectors stored for D+1 yet (an earlier benchmark run may have left some).
    spark.sql(f"DELETE FROM delta.`{cfg.table_path(S.ITEM_EMBEDDINGS)}` WHERE {S.COL_RUN_DATE} > DATE'{ML_DATE}'")
    ingest.run(d2, cfg=cfg, spark=spark, source=str(night))
    t0 = time.perf_counter()
    s2 = embed_items.run(d2, cfg=cfg, spark=spark)
    night_total = time.perf_counter() - t0
    # Spark's floor for this job: the same full run with the model replaced by zero vectors (text
    # build, hashing, matching, the mapInPandas round trip and the Delta write; no encoding).
    real = embed.encode_partitions
    embed.encode_partitions = _no_model
    try:
        t0 = time.perf_counter()
        embed_items.run(ML_DATE, cfg=cfg, spark=spark, full_refresh=True)
        floor = time.perf_counter() - t0
    finally:
        embed.encode_partitions = real
    t0 = time.perf_counter()
    embed_items.run(ML_DATE, cfg=cfg, spark=spark, full_refresh=True)  # also restores D's real vectors
    full_total = time.perf_counter() - t0
    res["embed_items job, full, warm session (whole job)"] = full_total

    st_time = next(v for k, v in res.items() if k.startswith("sentence"))
    lines = ["| path | seconds | texts/s | vs sentence-transformers |", "|---|---|---|---|"]
    for k, v in res.items():
        lines.append(f"| {k} | {v:.1f} | {n / v:.0f} | {st_time / v:.2f}x |")
    text = (f"{n:,} ml-latest-small item texts, all-MiniLM-L6-v2 (packaged), CPU, {torch.get_num_threads()} torch threads, "
            f"Spark {spark.sparkContext.master}.\n\n" + "\n".join(lines) + "\n\n"
            f"- lmrec vs sentence-transformers vectors: min cosine {cos:.6f}\n"
            f"- int8 dynamic quantization vs fp32: mean cosine {qcos.mean():.4f}, min {qcos.min():.4f}\n"
            f"- 1% night: {s2['computed']} texts re-embedded, {s2['reused']} reused; whole job {night_total:.1f}s "
            f"vs full job {full_total:.1f}s = {night_total / full_total:.1%} of the full run "
            f"(encode+write part: {s2['seconds']:.1f}s vs {stats['seconds']:.1f}s)\n"
            f"- Spark's floor (the same full job, zero vectors instead of the model): {floor:.1f}s = "
            f"{floor / st_time:.0%} of sentence-transformers' encode time; the full warm job minus the floor: "
            f"{full_total - floor:.1f}s = {n / max(full_total - floor, 1e-9):.0f} texts/s "
            f"({st_time / max(full_total - floor, 1e-9):.2f}x sentence-transformers); the 1% night is "
            f"{night_total / floor:.2f}x the floor\n")
    write_result("embedding", text)


if __name__ == "__main__":
    main()
