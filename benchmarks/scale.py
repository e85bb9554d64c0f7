"""Scale: one nightly run of every job on the demo catalogue at 1M, 5M and 25M ratings (the last is
MovieLens-25M size: 162,000 users, 62,000 items), each job in its own process as the Airflow
local runner runs it, with wall time and peak memory (the job's process tree: Python driver,
Spark's JVM, Python workers); then the next night with 1% new ratings and 1% changed item texts.

    .venv/bin/python benchmarks/scale.py --fresh --sizes 1M,5M,25M   # writes benchmarks/results/scale.md
    .venv/bin/python benchmarks/scale.py --fresh --sizes 5M --next-night 5M  # ... results/scale-5M.md
    .venv/bin/python benchmarks/scale.py --fresh --sizes 0.1M --next-night 0.1M --connect  # ... scale-0.1M-connect.md

``--connect`` runs the jobs on one long-lived Spark Connect server (``lmrec spark-server``, started
for each size and stopped after it) instead of a JVM per job: a job's peak memory is then its own
process tree, and the server's peak is reported apart.

The results file holds the sizes this run measured, never older runs' (they may be of other
commits): all three sizes write ``scale.md``, fewer ``scale-<sizes>.md``.

Sizes scale users and items together (the generator's ratings per user fixed so that 25M is ~25 million ratings after de-duplication).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, PeakMemory, write_result  # noqa: E402
from lmrec.pipeline import JOB_NAMES  # noqa: E402

JOBS = list(JOB_NAMES)
FULL = {"users": 162_000, "items": 62_000, "ratings_per_user": 160.0}
D = dt.date(2024, 6, 30)


def size_of(label: str) -> float:
    return float(label.rstrip("M")) * 1e6


def run_job(name: str, day: dt.date, env: dict, log: Path) -> dict:
    """Run ``lmrec job name --date day`` in its own process; wall time and peak RSS of its tree."""
    t0 = time.perf_counter()
    with log.open("a") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "lmrec.cli", "job", name, "--date", str(day)], env=env,
                                cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
        with PeakMemory(interval=0.5, pid=proc.pid, pss=True) as mem:
            proc.wait()
    secs = time.perf_counter() - t0
    return {"job": name, "seconds": round(secs, 1), "peak_gib": round(mem.peak / 1024, 2),
            "peak_pss_gib": round(mem.peak_pss / 1024, 2), "ok": proc.returncode == 0}


def next_night(src: Path, out: Path, day: dt.date, seed: int = 7) -> dict:
    """The source of night D+1: every rating so far plus 1% new ones dated D+1, and 1% of the
    item descriptions changed."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    ratings = pd.read_parquet(src / "ratings.parquet") if (src / "ratings.parquet").exists() else pd.read_csv(src / "ratings.csv")
    items = pd.read_parquet(src / "items.parquet") if (src / "items.parquet").exists() else pd.read_csv(src / "items.csv")
    n_new = len(ratings) // 100
    users = ratings["user_id"].unique()
    new = pd.DataFrame({"user_id": rng.choice(users, n_new), "item_id": rng.choice(items["item_id"].to_numpy(), n_new),
                        "rating": rng.integers(1, 11, n_new) / 2.0,
                        "timestamp": int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(12), tzinfo=dt.timezone.utc).timestamp())})
    new = new.drop_duplicates(["user_id", "item_id"])
    ratings = pd.concat([ratings, new], ignore_index=True).drop_duplicates(["user_id", "item_id"], keep="last")
    changed = rng.choice(len(items), len(items) // 100, replace=False)
    items.loc[changed, "description"] = items.loc[changed, "description"] + " Restored edition with new extras."
    from lmrec.data.importers import write_source

    text = pd.read_parquet(src / "user_text.parquet") if (src / "user_text.parquet").exists() else pd.read_csv(src / "user_text.csv")
    write_source(out, ratings, items, text, fmt="parquet")
    return {"new_ratings": len(new), "changed_items": len(changed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1M,5M,25M", help="comma-separated rating counts (e.g. 1M,5M,25M)")
    ap.add_argument("--next-night", default="25M", help="sizes that also run the 1%% next night")
    ap.add_argument("--root", default=str(REPO / "var" / "bench" / "scale"))
    ap.add_argument("--fresh", action="store_true", help="delete each size's warehouse, MLflow store and logs "
                    "first (the generated source is kept), so night 1 is a first night")
    ap.add_argument("--connect", action="store_true", help="run the jobs on one Spark Connect server per size "
                    "(LMREC_SPARK_REMOTE) instead of a JVM per job")
    ap.add_argument("--rerun", default="", help="with --resume: night-1 jobs to run again on the kept warehouse "
                    "(comma-separated; the others are resumed), e.g. train after a change to it (train then "
                    "trains whatever the champion: LMREC_RETRAIN=always)")
    ap.add_argument("--resume", action="store_true", help="keep the warehouse and skip the night-1 jobs that "
                    "results.json records as done for this size (after a failed job was fixed)")
    args = ap.parse_args()
    from lmrec.data.demo import write_demo

    global RESULTS_FILE
    RESULTS_FILE = "results-connect.json" if args.connect else "results.json"
    results = json.loads((Path(args.root) / RESULTS_FILE).read_text()) if (Path(args.root) / RESULTS_FILE).exists() else {}
    for label in args.sizes.split(","):
        f = size_of(label) / 25e6  # 25M = MovieLens-25M's users and items
        home = Path(args.root) / label
        src = home / "source"
        env = {**os.environ, "LMREC_HOME": str(home), "LMREC_SOURCE": str(src), "LMREC_SPARK_UI": "0",
               "LMREC_DRIVER_MEMORY": "10g", "LMREC_SHUFFLE_PARTITIONS": "16", "PYTHONUNBUFFERED": "1",
               # The scorer's training budget for a night on 2 CPU cores (see BENCHMARKS.md), and no
               # Spark ALS baselines (they are compared in benchmarks/quality.py).
               "LMREC_TRAIN_EPOCHS": "3", "LMREC_TRAIN_EPOCH_SAMPLES": "1000000", "LMREC_TRAIN_ALS": "0"}
        if args.fresh and home.exists():
            for p in home.iterdir():
                if p.name != "source":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        t0 = time.perf_counter()
        if not (src / "ratings.parquet").exists():
            counts = write_demo(src, users=int(FULL["users"] * f), items=int(FULL["items"] * f),
                                ratings_per_user=FULL["ratings_per_user"], days=30, end_date=D, fmt="parquet")
        else:
            counts = {"ratings": len(pd.read_parquet(src / "ratings.parquet", columns=["user_id"]))}
        print(f"[{label}] source {counts} ({time.perf_counter() - t0:.0f}s)", flush=True)
        entry = {"ratings": counts.get("ratings"), "users": int(FULL["users"] * f), "items": int(FULL["items"] * f),
                 "night1": []}  # saved after every job, so --resume works after a kill as well
        night1 = entry["night1"]
        with contextlib.ExitStack() as server:  # the Connect server, if any, lives for both nights
            if args.connect:
                env["LMREC_SPARK_REMOTE"], entry["server_start_s"], mem = start_server(server, env, home / "server.log")
            done = {r["job"]: r for r in results.get(label, {}).get("night1", []) if r["ok"]} if args.resume else {}
            rerun = set(args.rerun.split(",")) - {""}
            if rerun - set(done):
                sys.exit(f"--rerun {args.rerun}: needs --resume and a finished night 1 of {label} "
                         f"(done: {', '.join(done) or 'none'})")
            if "train" in rerun:
                env["LMREC_RETRAIN"] = "always"
            for name in JOBS:
                # A rerun keeps every other job's measurement; a resume only a prefix of finished jobs.
                keep = name not in rerun if rerun else name in done and len(night1) == JOBS.index(name)
                if keep:
                    night1.append({**done[name], "resumed": True})
                    continue
                r = run_job(name, D, env, home / "jobs.log")
                night1.append(r)
                print(f"[{label}] night 1 {r}", flush=True)
                save(args.root, results, label, entry)
                if not r["ok"]:
                    break
            if label in args.next_night.split(",") and all(r["ok"] for r in night1):
                changes = next_night(src, home / "source2", D)
                env2 = {**env, "LMREC_SOURCE": str(home / "source2")}
                entry.update(night2=[], night2_changes=changes)
                for name in JOBS:
                    r = run_job(name, D + dt.timedelta(days=1), env2, home / "jobs.log")
                    entry["night2"].append(r)
                    print(f"[{label}] night 2 {r}", flush=True)
                    save(args.root, results, label, entry)
                    if not r["ok"]:
                        break
        if args.connect:
            entry["server_peak_gib"] = round(mem.peak / 1024, 2)
        results[label] = entry
        save(args.root, results, label, entry)
    labels = args.sizes.split(",")
    name = "scale" if sorted(labels, key=size_of) == ["1M", "5M", "25M"] else "scale-" + "-".join(labels)
    name += "-connect" if args.connect else ""
    write_result(name, report({label: results[label] for label in labels}))


RESULTS_FILE = "results.json"


def start_server(stack: contextlib.ExitStack, env: dict, log: Path):
    """``lmrec spark-server`` on a free port with the size's settings, for the life of ``stack``:
    its URL, the seconds until it listened, and a peak-memory sampler of it (read once ``stack``
    is closed)."""
    from lmrec.core.spark import spark_server

    t0 = time.perf_counter()
    url, proc = stack.enter_context(spark_server(env, log, timeout=600))
    start_s = round(time.perf_counter() - t0, 1)
    print(f"Spark Connect server at {url} in {start_s:.1f}s", flush=True)
    return url, start_s, stack.enter_context(PeakMemory(interval=0.5, pid=proc.pid))


def save(root: str, results: dict, label: str, entry: dict) -> None:
    """The results file with ``label``'s entry as it stands (the other sizes as they were)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    (Path(root) / RESULTS_FILE).write_text(json.dumps({**results, label: entry}, indent=1))


def _peak(r: dict) -> str:
    """A job's peak memory cell: summed RSS, and summed PSS where measured."""
    return f"{r['peak_gib']:.1f}" + (f" / PSS {r['peak_pss_gib']:.1f}" if "peak_pss_gib" in r else "")


def report(results: dict) -> str:
    labels = sorted(results, key=size_of)
    lines = ["# Scale: one night per size (demo catalogue, each job in its own process)", "",
             "| job | " + " | ".join(f"{l} s (peak GiB: summed RSS / PSS)" for l in labels) + " |", "|---|" + "---|" * len(labels)]
    for name in JOBS + ["total"]:
        cells = []
        for l in labels:
            rows = {r["job"]: r for r in results[l]["night1"]}
            mixed = any(r.get("resumed") for r in rows.values())  # some jobs kept from an earlier run
            if name == "total":
                done = all(r["ok"] for r in rows.values()) and len(rows) == len(JOBS)
                cells.append(f"**{sum(r['seconds'] for r in rows.values()):.0f}**" + ("" if done else " (incomplete)"))
            elif name in rows:
                r = rows[name]
                now = " (run now)" if mixed and not r.get("resumed") else ""
                cells.append(f"{r['seconds']:.0f} ({_peak(r)})" + ("" if r["ok"] else " FAILED") + now)
            else:
                cells.append("–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for l in labels:
        if "server_peak_gib" in results[l]:
            lines += ["", f"{l}: the jobs ran on one Spark Connect server (listening after "
                      f"{results[l]['server_start_s']} s, peak {results[l]['server_peak_gib']} GiB over both nights; "
                      "a job's peak above is its own process tree, without the server)"]
    lines += ["", "Ratings: " + ", ".join(f"{l} = {results[l]['ratings']:,} ({results[l]['users']:,} users, "
                                           f"{results[l]['items']:,} items)" for l in labels)]
    for l in labels:
        if "night2" in results[l]:
            n1 = {r["job"]: r["seconds"] for r in results[l]["night1"]}
            n2 = {r["job"]: r["seconds"] for r in results[l]["night2"]}
            peak2 = {r["job"]: _peak(r) for r in results[l]["night2"]}
            lines += ["", f"## {l}: the next night ({results[l]['night2_changes']})", "",
                      "| job | night 1 s | next night s (peak GiB: summed RSS / PSS) | ratio |", "|---|---|---|---|"]
            for name in JOBS:
                if name in n2:
                    lines.append(f"| {name} | {n1[name]:.0f} | {n2[name]:.0f} ({peak2[name]}) | "
                                 f"{n2[name] / max(n1[name], 1e-9):.2f} |")
            both = [j for j in JOBS if j in n2]
            t1, t2 = sum(n1[j] for j in both), sum(n2[j] for j in both)
            label_total = "**total**" if len(both) == len(JOBS) else f"**total of the {len(both)} jobs run**"
            lines.append(f"| {label_total} | {t1:.0f} | {t2:.0f} | {t2 / t1:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
