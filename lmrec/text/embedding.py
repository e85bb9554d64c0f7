"""Shared part of the embedding jobs: incremental, distributed encoding of (id, text) with Spark.

Only texts whose sha256 (under the same model id) has no stored vector are encoded; the rest are
reused. Encoding runs in ``mapInPandas`` over partitions; each Python worker loads the model once
(workers are reused) and, on GPU executors, uses the GPU address Spark assigned to its task.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from lmrec.core import schema as S
from lmrec.core.io import is_table, read_table, write_partition
from lmrec.core.settings import Settings
from lmrec.core.spark import parallelism as default_parallelism

log = logging.getLogger(__name__)
TEXTS_PER_PARTITION = 512


def encoder_options(cfg: Settings, spark=None) -> dict:
    threads = 1
    if spark is not None:
        threads = int(spark.conf.get("spark.task.cpus", "1"))
    return {"model": cfg.text_model, "device": cfg.device, "batch_size": cfg.embed_batch_size,
            "quantize": cfg.quantize, "threads": threads}


def current_model_id(opts: dict) -> str:
    """The model id the executors will stamp on vectors, from the model's config only."""
    from lmrec.text.encoder import model_id_for

    return model_id_for(opts["model"], quantize=opts["quantize"] and not opts["device"].startswith("cuda"))


def encode_partitions(opts: dict, col_id: str):
    """A ``mapInPandas`` function: (id, text, text_sha256) batches -> (id, text_sha256, vector)."""

    def encode(batches):
        import pandas as pd
        from pyspark import TaskContext

        from lmrec.text.encoder import get_encoder

        frames = [f for f in batches if len(f)]
        if not frames:  # nothing to encode here: do not load the model
            return
        o = dict(opts)
        ctx = TaskContext.get()
        gpus = ctx.resources().get("gpu") if ctx is not None else None
        if gpus is not None and gpus.addresses:
            o["device"] = f"cuda:{gpus.addresses[0]}"  # the GPU Spark gave this task
        enc = get_encoder(**o)
        df = pd.concat(frames, ignore_index=True).sort_values(col_id, kind="stable")
        vectors = enc.encode(df[S.COL_TEXT].tolist())
        yield pd.DataFrame({col_id: df[col_id].to_numpy(), S.COL_TEXT_SHA: df[S.COL_TEXT_SHA].to_numpy(),
                            S.COL_VECTOR: list(vectors)})

    return encode


def match_stored(texts, previous, *, model_id: str):
    """``texts`` (id, text) with their sha256 and the stored vector of that text under
    ``model_id`` (null where there is none). ``previous``: stored vectors of any date, or None."""
    from pyspark.sql import functions as F

    texts = texts.withColumn(S.COL_TEXT_SHA, F.sha2(F.col(S.COL_TEXT), 256))
    if previous is None:
        return texts.withColumn(S.COL_VECTOR, F.lit(None).cast("array<float>"))
    known = (previous.where(F.col(S.COL_MODEL_ID) == model_id)
             .select(S.COL_TEXT_SHA, S.COL_VECTOR).dropDuplicates([S.COL_TEXT_SHA]))
    return texts.join(known, S.COL_TEXT_SHA, "left")


def build_embeddings(joined, *, opts: dict, model_id: str, col_id: str, partitions: int, in_driver: bool = False):
    """(id, model_id, text_sha256, vector) for every row of ``joined`` (from ``match_stored``):
    stored vectors reused, the others encoded on ``partitions`` partitions, or, ``in_driver``, in
    this process (a few texts: no Python workers to start, no model to load per worker; this
    collects the texts to encode). Lazy, except the encoding in the driver."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    reused = joined.where(F.col(S.COL_VECTOR).isNotNull()).select(col_id, S.COL_TEXT_SHA, S.COL_VECTOR)
    todo = joined.where(F.col(S.COL_VECTOR).isNull()).select(col_id, S.COL_TEXT, S.COL_TEXT_SHA)
    out_schema = T.StructType([T.StructField(col_id, T.StringType()), T.StructField(S.COL_TEXT_SHA, T.StringType()),
                               T.StructField(S.COL_VECTOR, T.ArrayType(T.FloatType()))])
    if in_driver:
        import os

        import pandas as pd

        # The driver's cores: no Spark task runs while it encodes.
        encode = encode_partitions(dict(opts, threads=os.cpu_count() or 1), col_id)
        t0 = time.perf_counter()  # wall-clock ok: duration only
        frames = list(encode(iter([todo.toPandas()])))
        log.info("encoded %d texts in the driver in %.1fs (model load included)", sum(map(len, frames)),
                 time.perf_counter() - t0)  # wall-clock ok
        done = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=out_schema.fieldNames())
        done[S.COL_VECTOR] = [v.tolist() for v in done[S.COL_VECTOR]]
        computed = joined.sparkSession.createDataFrame(done, out_schema)
    else:
        computed = todo.repartition(partitions, col_id).mapInPandas(encode_partitions(opts, col_id), out_schema)
    out = reused.unionByName(computed).withColumn(S.COL_MODEL_ID, F.lit(model_id))
    return out.select(col_id, S.COL_MODEL_ID, S.COL_TEXT_SHA, S.COL_VECTOR)


def latest_partition(spark, cfg: Settings, table: str, run_date: dt.date):
    """The stored vectors of the latest date <= ``run_date`` (D itself on a rerun, D-1 on the next
    night, the last date before D in a backfill), or None. One partition is read, not every night's."""
    from pyspark.sql import functions as F

    if not is_table(spark, cfg, table):
        return None
    stored = read_table(spark, cfg, table)
    last = stored.where(F.col(S.COL_RUN_DATE) <= F.lit(run_date)).agg(F.max(S.COL_RUN_DATE)).first()[0]
    return None if last is None else stored.where(F.col(S.COL_RUN_DATE) == F.lit(last))


@dataclass
class Embedded:
    """What :func:`embed_texts` planned: ``vectors`` (lazy DataFrame: id, model_id, text_sha256,
    vector), ``joined`` (the cached match of texts and stored vectors: unpersist when done), how
    many texts, how many to compute, where (``in_driver``, else on ``partitions`` Spark tasks)."""

    vectors: object
    joined: object
    total: int
    todo: int
    partitions: int
    in_driver: bool
    model_id: str


def embed_texts(spark, cfg: Settings, texts, *, previous, col_id: str) -> Embedded:
    """``texts`` (id, text) as vectors. Texts with a vector in ``previous`` (stored vectors, or
    None) reuse it; the others are encoded in ``mapInPandas``, or in the driver when they are at
    most ``LMREC_EMBED_IN_DRIVER_MAX`` (a next night's few changed texts: the driver encodes them
    in about a second where starting the Python workers and loading the model in each took tens
    of seconds)."""
    from pyspark.sql import functions as F

    opts = encoder_options(cfg, spark)
    model_id = current_model_id(opts)
    # One pass builds the texts, hashes them, matches stored vectors and counts what is left to
    # compute (so the partition count fits the work); the caller's action reads the cached result.
    joined = match_stored(texts, previous, model_id=model_id).cache()
    row = joined.agg(F.count(F.lit(1)).alias("n"), F.count_if(F.col(S.COL_VECTOR).isNull()).alias("todo")).first()
    total, n_todo = int(row["n"]), int(row["todo"])
    parallelism = default_parallelism(spark)
    partitions = max(1, min(parallelism * 4, -(-n_todo // TEXTS_PER_PARTITION)))
    if n_todo:
        partitions = max(partitions, min(parallelism, n_todo))
    # Not with LMREC_DEVICE=cuda: the GPUs are the executors', the driver may have none.
    in_driver = 0 < n_todo <= cfg.embed_in_driver_max and not opts["device"].startswith("cuda")
    out = build_embeddings(joined, opts=opts, model_id=model_id, col_id=col_id, partitions=partitions,
                           in_driver=in_driver)
    return Embedded(out, joined, total, n_todo, partitions, in_driver, model_id)


def run_embedding(spark, cfg: Settings, run_date: dt.date, texts, *, table: str, col_id: str,
                  full_refresh: bool = False) -> dict:
    """Embed ``texts`` (id, text) for ``run_date`` into ``table``; returns counts and speed.
    ``full_refresh`` ignores stored vectors and embeds every text again."""
    previous = None if full_refresh else latest_partition(spark, cfg, table, run_date)
    e = embed_texts(spark, cfg, texts, previous=previous, col_id=col_id)
    log.info("%s %s: %d texts, %d reused, %d computed %s (model %s)", table, run_date, e.total, e.total - e.todo, e.todo,
             "in the driver" if e.in_driver else f"on {e.partitions} partitions", e.model_id)
    t0 = time.perf_counter()  # wall-clock ok: throughput only
    write_partition(e.vectors, cfg, table, run_date)
    secs = time.perf_counter() - t0  # wall-clock ok
    e.joined.unpersist()
    tasks = bool(e.todo) and not e.in_driver
    stats = {"texts": e.total, "reused": e.total - e.todo, "computed": e.todo,
             "where": "driver" if e.in_driver else "tasks", "seconds": round(secs, 2),
             # Encoding and writing in Spark tasks: their throughput (in the driver, encoding came first).
             "texts_per_second": round(e.todo / secs, 1) if tasks else None, "model_id": e.model_id}
    log.info("%s %s: computed %d vectors, reused %d, %.1fs%s", table, run_date, e.todo, e.total - e.todo, secs,
             f" ({stats['texts_per_second']} texts/s)" if stats["texts_per_second"] else "")
    # One model id per partition by construction: every row gets ``model_id`` and replaceWhere
    # replaces the whole partition (tested in tests/test_embeddings.py).
    return stats
