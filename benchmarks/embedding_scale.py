"""Embedding throughput at the 25M first night: the two embedding jobs' texts per second (from
the scale benchmark's run: its results and the jobs' log) against sentence-transformers' encode
of a seeded sample of the same texts (the item and user texts those jobs built for D), with the
same model, the same CPU threads (2: the jobs run 2 Spark tasks x 1 torch thread) and batch 64.

    .venv/bin/python benchmarks/scale.py --fresh --sizes 25M      # first: the night it reads
    .venv/bin/python benchmarks/embedding_scale.py                 # writes benchmarks/results/embedding-scale.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, write_result  # noqa: E402

D = dt.date(2024, 6, 30)  # benchmarks/scale.py's night 1


def job_encode_seconds(log: Path, table: str, day: dt.date) -> tuple[int, float] | None:
    """(vectors computed, seconds of the encode + write) of the last run of ``table`` for ``day``
    in the jobs' log (run_embedding's line)."""
    pat = re.compile(rf"{table} {day}: computed (\d+) vectors, reused \d+, ([\d.]+)s")
    hits = [m for m in pat.finditer(log.read_text(errors="replace"))]
    return (int(hits[-1].group(1)), float(hits[-1].group(2))) if hits else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=str(REPO / "var" / "bench" / "scale" / "25M"), help="the scale run's LMREC_HOME")
    ap.add_argument("--sample", type=int, default=6000, help="texts of each kind sentence-transformers encodes")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of sentence-transformers")
    args = ap.parse_args()
    home = Path(args.home)
    results = json.loads((home.parent / "results.json").read_text())[home.name]
    wall = {r["job"]: r["seconds"] for r in results["night1"]}

    import torch
    from sentence_transformers import SentenceTransformer

    from jobs import embed_items, embed_users
    from lmrec.core import schema as S
    from lmrec.core.settings import Settings
    from lmrec.core.spark import get_spark
    from lmrec.text.encoder import default_model_path

    cfg = Settings.from_env({"LMREC_HOME": str(home), "LMREC_SPARK_UI": "0", "LMREC_DRIVER_MEMORY": "10g"})
    spark = get_spark(cfg, "lmrec-bench-embedding-scale")
    texts = {"item_embeddings": embed_items.texts(spark, cfg, D), "user_embeddings": embed_users.texts(spark, cfg, D)}
    sample = {t: df.select(S.COL_TEXT).orderBy(df.columns[0]).toPandas()[S.COL_TEXT] for t, df in texts.items()}
    spark.stop()

    torch.set_num_threads(args.threads)
    st = SentenceTransformer(default_model_path(), device="cpu")
    st.encode(["warm up"] * 64, batch_size=64)
    lines = ["# Embedding throughput at the 25M first night vs sentence-transformers", "",
             f"Jobs from `{home}` (night {D}, wall time of each job's process from the scale run); "
             f"sentence-transformers `encode` (batch 64, {args.threads} torch threads, 1 process) on a seeded "
             f"sample of {args.sample:,} of the same texts of each kind.", "",
             "| texts | job: texts computed | job wall s | job texts/s | encode+write s (in job) | texts/s | "
             "sentence-transformers texts/s | job / ST | in-job / ST |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for table, job in (("item_embeddings", "embed_items"), ("user_embeddings", "embed_users")):
        all_texts = sample[table]
        chosen = all_texts.sample(min(args.sample, len(all_texts)), random_state=7).tolist()
        t0 = time.perf_counter()
        st.encode(chosen, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        st_rate = len(chosen) / (time.perf_counter() - t0)
        n, secs = job_encode_seconds(home / "jobs.log", table, D) or (len(all_texts), float("nan"))
        job_rate, in_rate = n / wall[job], n / secs
        lines.append(f"| {table} ({len(all_texts):,}, mean {all_texts.str.len().mean():.0f} chars) | {n:,} | "
                     f"{wall[job]:.0f} | {job_rate:.0f} | {secs:.0f} | {in_rate:.0f} | {st_rate:.0f} | "
                     f"{job_rate / st_rate:.2f}x | {in_rate / st_rate:.2f}x |")
        print(lines[-1], flush=True)
    write_result("embedding-scale", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
