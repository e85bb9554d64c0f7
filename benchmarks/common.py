"""Helpers shared by the benchmarks: a warehouse of real data built by the real jobs, timing, memory."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
ML_SMALL = SHARED / "ml-latest-small"
ML_DATE = dt.date(2018, 9, 30)  # after the last ml-latest-small rating (2018-09-24)


def bench_settings(name: str, **env):
    from lmrec.core.settings import Settings

    home = REPO / "var" / "bench" / name
    base = {"LMREC_HOME": str(home), "LMREC_SPARK_UI": "0", "LMREC_SHUFFLE_PARTITIONS": "4"}
    base.update({k: str(v) for k, v in env.items()})
    return Settings.from_env(base)


DATASETS = ("ml-small", "amazon")


def dataset_args(doc: str, argv=None, *flags: tuple[str, str]):
    """The command line of the two-dataset benchmarks: dataset names (default both; an unknown
    one is refused) and the given ``(flag, help)`` switches; ``--help`` prints ``doc``."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", metavar="DATASET",
                    help=f"datasets to run, of {', '.join(DATASETS)} (default: both)")
    for flag, text in flags:
        ap.add_argument(flag, action="store_true", help=text)
    args = ap.parse_args(argv)
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        ap.error(f"unknown dataset {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    args.datasets = args.datasets or list(DATASETS)
    return args


def dataset_run(name: str, names: list[str], run) -> list[str]:
    """What the two-dataset quality benchmarks share: seeded torch, a Spark session with a
    checkpoint directory (ALS grids of 10-15 iterations overflowed the stack without one), the
    MiniLM encoder; ``run(dataset, spark, encoder)`` for each dataset in ``names``.
    Returns the parts of the report."""
    import torch

    from lmrec.core import schema as S
    from lmrec.core.spark import get_spark
    from lmrec.text.encoder import TextEncoder

    torch.manual_seed(S.SEED)
    cfg = bench_settings(name)
    spark = get_spark(cfg, f"lmrec-bench-{name}")
    spark.sparkContext.setCheckpointDir(f"{cfg.home}/checkpoints")
    encoder = TextEncoder(device="cpu")
    return [run(n, spark, encoder) for n in names]


def require_ml_small() -> Path:
    if not (ML_SMALL / "ratings.csv").exists():
        raise SystemExit(f"ml-latest-small not found at {ML_SMALL}; download it from GroupLens (see README)")
    return ML_SMALL


def ml_small_warehouse(spark, cfg, jobs=("ingest", "rating_matrix", "embed_items", "embed_users")):
    """Import ml-latest-small and run the given jobs for ML_DATE (skipped when already built)."""
    from lmrec.pipeline import run_job
    from lmrec.data.importers import import_movielens
    from lmrec.core.io import is_table

    src = Path(cfg.home) / "source"
    if not (src / "ratings.csv").exists():
        import_movielens(require_ml_small(), src)
    for job in jobs:
        table = {"ingest": "ratings_raw", "rating_matrix": "rating_matrix", "embed_items": "item_embeddings",
                 "embed_users": "user_embeddings"}[job]
        if not is_table(spark, cfg, table):
            run_job(job, ML_DATE, cfg=cfg, spark=spark, source=str(src))
    return src


class PeakMemory:
    """Peak memory (MiB) of a process tree: this process (or ``pid``) and its children (Spark's
    JVM and Python workers), sampled every ``interval`` seconds while in the block: ``peak`` of
    the summed resident sets (RSS: pages shared between the processes, libraries or a forked
    child's inherited pages, counted in each) and, with ``pss``, ``peak_pss`` of the summed
    proportional sets (each shared page split among its sharers; /proc's smaps_rollup)."""

    def __init__(self, interval: float = 0.1, pid: int | None = None, pss: bool = False):
        self.interval, self.peak, self.peak_pss, self._stop = interval, 0.0, 0.0, threading.Event()
        self.pid = os.getpid() if pid is None else pid
        self.pss = pss

    def _sample(self):
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            total = total_pss = 0
            try:
                tree = [root] + root.children(recursive=True)
            except psutil.Error:
                tree = []
            for p in tree:
                try:
                    if self.pss:
                        info = p.memory_full_info()
                        total_pss += info.pss
                    else:
                        info = p.memory_info()
                    total += info.rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total / 2**20)
            self.peak_pss = max(self.peak_pss, total_pss / 2**20)
            time.sleep(self.interval)

    def __enter__(self):
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def provenance() -> str:
    """``Measured at commit <sha>[ + uncommitted changes] with `<command>` on <date> UTC.``"""
    import datetime as dt
    import shlex
    import subprocess
    import sys

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = " + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    command = shlex.join([".venv/bin/python", *sys.argv])
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")  # wall-clock ok: a label
    return f"Measured at commit {sha}{dirty} with `{command}` on {when} UTC.\n\n"


def write_result(name: str, text: str) -> None:
    """Write ``benchmarks/results/<name>.md`` (headed by :func:`provenance`) and print it."""
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    text = provenance() + text
    (out / f"{name}.md").write_text(text)
    print(text)


# ---------------------------------------------------------------- datasets for the quality benchmarks

def load(name: str):
    """(ratings with indices and ids, items, user texts) of a dataset, through lmrec's importers."""
    import tempfile

    import numpy as np
    import pandas as pd

    from lmrec.core import schema as S
    from lmrec.data.importers import import_amazon_reviews, import_movielens

    with tempfile.TemporaryDirectory() as tmp:
        if name == "ml-small":
            import_movielens(SHARED / "ml-latest-small", tmp)
        else:
            import_amazon_reviews(SHARED / "amazon-musical-instruments-5core" / "reviews_Musical_Instruments_5.json.gz", tmp)
        r = pd.read_csv(Path(tmp) / "ratings.csv", dtype={S.COL_USER: str, S.COL_ITEM: str})
        items = pd.read_csv(Path(tmp) / "items.csv", dtype={S.COL_ITEM: str}, keep_default_na=False)
        ut_path = Path(tmp) / "user_text.csv"
        ut = pd.read_csv(ut_path, dtype={S.COL_USER: str, S.COL_ITEM: str}, keep_default_na=False) if ut_path.exists() else None
    users = np.sort(r[S.COL_USER].unique())
    item_ids = np.sort(items[S.COL_ITEM].unique())
    r[S.COL_USER_IDX] = np.searchsorted(users, r[S.COL_USER])
    r[S.COL_ITEM_IDX] = np.searchsorted(item_ids, r[S.COL_ITEM])
    r[S.COL_EVENT_TS] = pd.to_datetime(r["timestamp"], unit="s")
    if ut is not None:
        ut[S.COL_EVENT_TS] = pd.to_datetime(pd.to_numeric(ut["timestamp"]), unit="s")
        ut[S.COL_ITEM] = ut[S.COL_ITEM].replace("", None)
    return r, items, ut, users, item_ids


def text_vectors(encoder, items, ut, known, users, item_ids):
    """(item vectors, user vectors) from the texts known through the ``known`` pairs only."""
    import numpy as np

    from lmrec.text.profiles import split_profiles

    it, us = split_profiles(items, ut, known)
    T = np.zeros((len(item_ids), encoder.dim), np.float32)
    U = np.zeros((len(users), encoder.dim), np.float32)
    if len(it):
        T[np.searchsorted(item_ids, it.index.to_numpy())] = _encode(encoder, it.tolist())
    if len(us):
        U[np.searchsorted(users, us.index.to_numpy())] = _encode(encoder, us.tolist())
    return T, U


_VECTORS: dict = {}


def _encode(encoder, texts: list[str]):
    """Encode, each distinct text once per process (the selection and final profiles share most)."""
    import numpy as np

    new = sorted({t for t in texts if t not in _VECTORS})
    if new:
        _VECTORS.update(zip(new, encoder.encode(new)))
    return np.stack([_VECTORS[t] for t in texts])
