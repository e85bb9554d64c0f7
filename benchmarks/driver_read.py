"""Reading a date's training data into the driver, at the 25M size: what train, gate and score
do first. lmrec's read (:func:`lmrec.core.io.read_arrow`: delta-rs, multi-threaded Arrow, no JVM)
against Spark's ``toPandas`` (Arrow enabled; lmrec's read before 2026-12-03), on the same Delta
partitions in one run, with the frames checked equal: D's rating matrix (user_idx, item_idx,
rating, event_ts) and D's item vectors (62,000 x 384 floats, to one NumPy matrix).

The partitions are synthetic and shaped like the scale demo's (162,000 users, 62,000 items).

    .venv/bin/python benchmarks/driver_read.py                 # 25M rows, writes results/driver-read.md
    .venv/bin/python benchmarks/driver_read.py --rows 2000000 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PeakMemory, bench_settings, write_result  # noqa: E402
from lmrec.core import schema as S  # noqa: E402

D = dt.date(2024, 6, 30)
USERS, ITEMS, DIM = 162_000, 62_000, 384
COLS = [S.COL_USER_IDX, S.COL_ITEM_IDX, S.COL_RATING, S.COL_EVENT_TS]


def write_tables(spark, cfg, rows: int) -> None:
    from pyspark.sql import functions as F

    ids = spark.range(rows)
    u = (F.col("id") * 7) % USERS
    i = (F.col("id") * 7919 + F.col("id") / USERS) % ITEMS
    (ids.select(u.cast("long").alias(S.COL_USER_IDX), i.cast("long").alias(S.COL_ITEM_IDX),
                F.concat(F.lit("u"), u.cast("string")).alias(S.COL_USER),
                F.concat(F.lit("i"), i.cast("long").cast("string")).alias(S.COL_ITEM),
                ((F.abs(F.xxhash64("id")) % 10 + 1) / 2).cast("double").alias(S.COL_RATING),
                F.timestamp_seconds(F.lit(1_700_000_000) + F.col("id") % 10_000_000).alias(S.COL_EVENT_TS),
                F.lit(D).cast("date").alias(S.COL_RUN_DATE))
     .write.format("delta").mode("overwrite").partitionBy(S.COL_RUN_DATE).save(cfg.table_path(S.RATING_MATRIX)))
    vec = F.transform(F.sequence(F.lit(0), F.lit(DIM - 1)), lambda k: (F.sin(F.col("id") + k)).cast("float"))
    (spark.range(ITEMS).select(F.concat(F.lit("i"), F.col("id").cast("string")).alias(S.COL_ITEM),
                               vec.alias(S.COL_VECTOR), F.lit(D).cast("date").alias(S.COL_RUN_DATE))
     .write.format("delta").mode("overwrite").partitionBy(S.COL_RUN_DATE).save(cfg.table_path(S.ITEM_EMBEDDINGS)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=25_000_000, help="ratings in D's partition (default 25M)")
    ap.add_argument("--no-write", action="store_true", help="print the table, do not write results/driver-read.md")
    args = ap.parse_args(argv)
    from lmrec.core.io import read_arrow, read_table
    from lmrec.core.spark import get_spark

    cfg = bench_settings("driver_read", LMREC_DRIVER_MEMORY="10g")
    shutil.rmtree(cfg.warehouse, ignore_errors=True)
    spark = get_spark(cfg, "bench-driver-read")
    t0 = time.perf_counter()
    write_tables(spark, cfg, args.rows)
    print(f"wrote {args.rows:,} ratings and {ITEMS:,} vectors in {time.perf_counter() - t0:.0f}s", flush=True)

    def spark_ratings():
        return read_table(spark, cfg, S.RATING_MATRIX, D).select(*COLS).toPandas()

    def lmrec_ratings():
        return read_arrow(spark, cfg, S.RATING_MATRIX, D, COLS)[0].to_pandas(coerce_temporal_nanoseconds=True)

    def spark_vectors():
        pdf = read_table(spark, cfg, S.ITEM_EMBEDDINGS, D).select(S.COL_ITEM, S.COL_VECTOR).toPandas()
        return pdf[S.COL_ITEM].to_numpy(), np.stack(pdf[S.COL_VECTOR].to_numpy()).astype(np.float32)

    def lmrec_vectors():
        t = read_arrow(spark, cfg, S.ITEM_EMBEDDINGS, D, [S.COL_ITEM, S.COL_VECTOR])[0]
        v = t.column(S.COL_VECTOR).combine_chunks()
        return t.column(S.COL_ITEM).to_numpy(), np.asarray(v.flatten().to_numpy(), np.float32).reshape(len(v), DIM)

    rows, out = [], {}
    for what, runs in (("rating matrix", (("Spark toPandas", spark_ratings), ("lmrec read_arrow", lmrec_ratings))),
                       ("item vectors", (("Spark toPandas", spark_vectors), ("lmrec read_arrow", lmrec_vectors)))):
        secs = {}
        for name, fn in runs:
            with PeakMemory() as mem:
                t0 = time.perf_counter()
                out[(what, name)] = fn()
                secs[name] = time.perf_counter() - t0
            rows.append(f"| {what} | {name} | {secs[name]:.1f} | {mem.peak / 1024:.1f} |")
            print(rows[-1], flush=True)
        rows.append(f"| {what} | ratio (Spark / lmrec) | {secs['Spark toPandas'] / secs['lmrec read_arrow']:.1f}x | |")
    a, b = out[("rating matrix", "Spark toPandas")], out[("rating matrix", "lmrec read_arrow")]
    key = [S.COL_USER_IDX, S.COL_ITEM_IDX]
    a, b = (f.sort_values(key, kind="stable").reset_index(drop=True) for f in (a, b))
    b[S.COL_EVENT_TS] = b[S.COL_EVENT_TS].dt.tz_convert(None) if b[S.COL_EVENT_TS].dt.tz is not None else b[S.COL_EVENT_TS]
    assert a.equals(b), "the two reads of the rating matrix differ"
    (ia, va), (ib, vb) = out[("item vectors", "Spark toPandas")], out[("item vectors", "lmrec read_arrow")]
    assert np.array_equal(va[np.argsort(ia)], vb[np.argsort(ib)]), "the two reads of the vectors differ"
    text = (f"D's partitions: {args.rows:,} ratings, {ITEMS:,} item vectors of {DIM} floats; local Delta "
            f"warehouse, Spark local[*] with a 10g driver. Seconds and peak memory of the process tree "
            f"(GiB, driver JVM included); the frames were checked equal.\n\n"
            "| read | how | seconds | peak GiB |\n|:--|:--|--:|--:|\n" + "\n".join(rows) + "\n")
    print(text) if args.no_write else write_result("driver-read", text)
    spark.stop()


if __name__ == "__main__":
    main()
