"""Storage over 30 simulated nights: the whole nightly pipeline (every job, in one process) for 30
consecutive dates of a demo source whose ratings arrive day by day, each night followed by the
maintenance run (``lmrec maintain``), with the bytes of every table measured after the jobs and
after the maintenance.

Three figures per table and night: bytes on disk (data files + ``_delta_log``), live bytes (the
files the current version references, ``DESCRIBE DETAIL``'s ``sizeInBytes``), and log bytes.
Retention bounds the live bytes; VACUUM removes a file only 7 days (of wall clock) after it was
unreferenced, which a one-hour simulation never reaches, so the run ends with a VACUUM at 0 hours
to show what the same maintenance leaves once that window has passed. MLflow's model artifacts are
measured too (maintenance does not touch them).

    .venv/bin/python benchmarks/storage.py            # writes benchmarks/results/storage.md
    .venv/bin/python benchmarks/storage.py --nights 10 --snapshot-days 3 --result-days 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import bench_settings, write_result  # noqa: E402
from lmrec.core import maintenance  # noqa: E402
from lmrec.core import schema as S  # noqa: E402
from lmrec.core.spark import get_spark  # noqa: E402
from lmrec.data.demo import write_demo  # noqa: E402
from lmrec.pipeline import JOB_NAMES, run_job  # noqa: E402

log = logging.getLogger("bench.storage")
FIRST = dt.date(2024, 6, 1)
MiB = 2**20


def dir_bytes(path: Path) -> tuple[int, int]:
    """(all bytes under ``path``, bytes under its ``_delta_log``)."""
    total = logb = 0
    for f in path.rglob("*"):
        if f.is_file():
            n = f.stat().st_size
            total += n
            if "_delta_log" in f.parts:
                logb += n
    return total, logb


def measure(spark, cfg, night: int, when: str) -> list[dict]:
    rows = []
    for table in S.ALL_TABLES:
        path = Path(cfg.table_path(table))
        if not (path / "_delta_log").exists():
            continue
        disk, logb = dir_bytes(path)
        detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
        rows.append({"night": night, "when": when, "table": table, "disk": disk, "live": int(detail["sizeInBytes"]),
                     "log": logb, "files": int(detail["numFiles"])})
    ml = Path(cfg.home) / "mlartifacts"
    if ml.exists():
        sizes = [f.stat().st_size for f in ml.rglob("*") if f.is_file()]
        rows.append({"night": night, "when": when, "table": "(mlflow artifacts)", "disk": sum(sizes),
                     "live": sum(sizes), "log": 0, "files": len(sizes)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nights", type=int, default=30, help="consecutive dates to run (default 30)")
    ap.add_argument("--snapshot-days", type=int, default=14, help="LMREC_SNAPSHOT_RETENTION_DAYS (default 14, as shipped)")
    ap.add_argument("--result-days", type=int, default=14,
                    help="LMREC_RESULT_RETENTION_DAYS (shipped: 400; default 14 so the run reaches the plateau)")
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--report", action="store_true", help="only write the report from the last run's measurements")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("py4j", "lmrec", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = bench_settings("storage", LMREC_SNAPSHOT_RETENTION_DAYS=args.snapshot_days,
                         LMREC_RESULT_RETENTION_DAYS=args.result_days)
    home = Path(cfg.home)
    if args.report:
        return report(*load(home), args)
    shutil.rmtree(home, ignore_errors=True)
    last = FIRST + dt.timedelta(days=args.nights - 1)
    src = home / "source"
    # Ratings spread over the simulated nights (plus a week of history before the first).
    counts = write_demo(src, users=args.users, items=args.items, days=args.nights + 7, end_date=last)
    log.info("demo source %s: %s", src, counts)
    spark = get_spark(cfg, app_name="lmrec-bench-storage", gpu=True)
    rows, timing = [], []
    for n in range(1, args.nights + 1):
        day = FIRST + dt.timedelta(days=n - 1)
        t0 = time.perf_counter()
        for name in JOB_NAMES:
            run_job(name, day, cfg=cfg, spark=spark, source=str(src))
        t1 = time.perf_counter()
        rows += measure(spark, cfg, n, "after jobs")
        maintenance.run(day, cfg=cfg, spark=spark)
        t2 = time.perf_counter()
        rows += measure(spark, cfg, n, "after maintenance")
        timing.append((n, day, t1 - t0, t2 - t1))
        save(home, rows, timing)  # a run stopped early can still be reported (--report)
        tot = pd.DataFrame([r for r in rows if r["night"] == n and r["when"] == "after maintenance"])
        log.info("night %d/%d (%s): jobs %.0fs, maintenance %.0fs; disk %.1f MiB, live %.1f MiB", n, args.nights, day,
                 t1 - t0, t2 - t1, tot.disk.sum() / MiB, tot.live.sum() / MiB)
    # What the same VACUUM leaves once the 7-day window has passed (the simulation ran for hours).
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    for table in S.ALL_TABLES:
        path = cfg.table_path(table)
        if Path(path, "_delta_log").exists():
            spark.sql(f"VACUUM delta.`{path}` RETAIN 0 HOURS")
    rows += measure(spark, cfg, args.nights, "after VACUUM RETAIN 0 HOURS")
    save(home, rows, timing)
    report(*load(home), args)


def save(home: Path, rows: list[dict], timing: list[tuple]) -> None:
    pd.DataFrame(rows).to_csv(home / "measurements.csv", index=False)
    pd.DataFrame(timing, columns=["night", "date", "jobs_s", "maintenance_s"]).to_csv(home / "timing.csv", index=False)


def load(home: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(home / "measurements.csv"), pd.read_csv(home / "timing.csv")


def report(df: pd.DataFrame, timing: pd.DataFrame, args) -> None:
    delta = df[~df.table.str.startswith("(")]
    per_night = (delta.groupby(["night", "when"], sort=False)[["disk", "live", "log"]].sum() / MiB).round(2)
    per_night = per_night.unstack("when")
    per_night.columns = [f"{a} MiB {b}" for a, b in per_night.columns]
    keep = [c for c in per_night.columns if "VACUUM" not in c]
    night_table = per_night[keep].join(timing.set_index("night")[["jobs_s", "maintenance_s"]].round(0))
    final = df[df.when == "after VACUUM RETAIN 0 HOURS"].set_index("table")[["disk", "live", "log", "files"]]
    written = (delta[delta.when == "after jobs"].set_index(["night", "table"]).disk.unstack("table").diff()
               .iloc[1:].clip(lower=0).mean() / MiB)  # disk added by one night's jobs (maintenance removes some)
    final["MiB disk"] = (final.disk / MiB).round(3)
    final["MiB live"] = (final.live / MiB).round(3)
    final["MiB log"] = (final.log / MiB).round(3)
    final["MiB written per night (mean)"] = written.reindex(final.index).round(3)
    text = (f"{args.nights} nights ({FIRST} ..), demo source {args.users} users x {args.items} items, every job then "
            f"`maintenance.run` each night; LMREC_SNAPSHOT_RETENTION_DAYS={args.snapshot_days}, "
            f"LMREC_RESULT_RETENTION_DAYS={args.result_days}. Sums over the Delta tables, MiB.\n\n"
            + night_table.to_markdown() + "\n\nPer table at the end, after `VACUUM RETAIN 0 HOURS` (what the nightly "
            "VACUUM leaves 7 days later):\n\n" + final.drop(columns=["disk", "live", "log"]).to_markdown() + "\n")
    write_result("storage", text)


if __name__ == "__main__":
    main()
