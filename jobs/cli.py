"""The ``lmrec`` command: run a job for a logical date, import data, generate the demo catalogue,
query the tables."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import logging
import sys
import time

from jobs import analyst
from jobs import schema as S
from jobs.settings import FALSE_WORDS, TRUE_WORDS, Settings

# Job name -> module. Order is the pipeline's order (the DAG wires the same names).
JOBS = {
    "ingest": "jobs.ingest",
    "rating_matrix": "jobs.rating_matrix",
    "embed_items": "jobs.embed_items",
    "embed_users": "jobs.embed_users",
    "train": "jobs.train",
    "gate": "jobs.gate",
    "score": "jobs.score",
    "validate": "jobs.validate",
}

log = logging.getLogger("lmrec")


def available_jobs() -> list[str]:
    return [name for name, mod in JOBS.items() if importlib.util.find_spec(mod) is not None]


def parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def parse_bool(text: str) -> bool:
    if text.strip().lower() in TRUE_WORDS:
        return True
    if text.strip().lower() in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"not a boolean (true/false): {text!r}")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "urllib3", "alembic", "filelock", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_job(name: str, run_date: dt.date, *, cfg: Settings | None = None, spark=None, source: str | None = None, **kw):
    """Run job ``name`` for ``run_date`` in this process; returns what the job returns."""
    from jobs.spark import get_spark

    if name not in JOBS:
        raise SystemExit(f"unknown job {name!r}; jobs: {', '.join(available_jobs())}")
    cfg = cfg or Settings.from_env()
    spark = spark or get_spark(cfg, app_name=f"lmrec-{name}-{run_date}", gpu=name in S.GPU_JOBS)
    module = importlib.import_module(JOBS[name])
    # The command line's job options go to every job (spark-submit passes one argument list);
    # each job takes those it has.
    accepted = inspect.signature(module.run).parameters
    kw = {k: v for k, v in kw.items() if k in accepted or k not in JOB_OPTIONS}
    t0 = time.perf_counter()  # wall-clock ok: duration only
    log.info("job %s for %s starting (warehouse %s)", name, run_date, cfg.warehouse)
    result = module.run(run_date, cfg=cfg, spark=spark, source=source, **kw)
    log.info("job %s for %s done in %.1fs", name, run_date, time.perf_counter() - t0)  # wall-clock ok
    return result


def _job_parser(prog: str | None = None, parser: argparse.ArgumentParser | None = None):
    p = parser or argparse.ArgumentParser(prog=prog)
    p.add_argument("--date", required=True, type=parse_date, help="logical date D (YYYY-MM-DD); the job sees events before D+1 day UTC")
    p.add_argument("--source", help="source directory (default: $LMREC_SOURCE, the demo catalogue)")
    p.add_argument("--top-k", type=int, default=None, help=f"recommendations per user (score; default $LMREC_TOP_K or {S.DEFAULT_K})")
    p.add_argument("--retrain", choices=["auto", "always"], default=None,
                   help="train: 'auto' trains only when the champion is stale (README, Retraining), 'always' "
                        "trains tonight (default $LMREC_RETRAIN or auto)")
    p.add_argument("--full-refresh", nargs="?", const=True, default=False, type=parse_bool, metavar="BOOL",
                   help="embed_items, embed_users: re-embed every text")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


JOB_OPTIONS = ("top_k", "retrain", "full_refresh")


def _job_kwargs(args) -> dict:
    kw = {"top_k": args.top_k, "retrain": args.retrain, "full_refresh": args.full_refresh or None}
    return {k: v for k, v in kw.items() if v is not None}


def job_entry(name: str, argv: list[str] | None = None) -> None:
    """Entry point of ``spark-submit jobs/<name>.py --date D``."""
    args = _job_parser(prog=f"jobs/{name}.py").parse_args(argv)
    setup_logging(args.verbose)
    _report(run_job(name, args.date, source=args.source, **_job_kwargs(args)))


def _report(result) -> None:
    if result is not None:
        print(result, flush=True)


def table_counts(cfg: Settings, spark, run_date: dt.date | None = None) -> list[tuple[str, str, int]]:
    """(table, path, rows) for every existing table (rows of ``run_date`` where partitioned)."""
    from jobs.io import is_table, read_table

    out = []
    for name in S.ALL_TABLES:
        if not is_table(spark, cfg, name):
            continue
        df = read_table(spark, cfg, name)
        if run_date is not None and S.COL_RUN_DATE in df.columns:
            df = read_table(spark, cfg, name, run_date)
        out.append((name, cfg.table_path(name), df.count()))
    return out


def print_table(rows: list, headers: list[str]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    sys.stdout.flush()


# --------------------------------------------------------------------------------- commands

def cmd_job(args) -> None:
    _report(run_job(args.name, args.date, source=args.source, **_job_kwargs(args)))


def cmd_pipeline(args) -> None:
    from jobs.spark import get_spark

    cfg = Settings.from_env()
    spark = get_spark(cfg, app_name=f"lmrec-pipeline-{args.date}", gpu=True)
    names = args.jobs.split(",") if args.jobs else available_jobs()
    for name in names:
        run_job(name, args.date, cfg=cfg, spark=spark, source=args.source, **_job_kwargs(args))
    print(f"\nTables under {cfg.warehouse} (rows for {args.date} where partitioned by run_date):")
    print_table([(n, c, p) for n, p, c in table_counts(cfg, spark, args.date)], ["table", "rows", "path"])


def cmd_tables(args) -> None:
    from jobs.spark import get_spark

    cfg = Settings.from_env()
    rows = table_counts(cfg, get_spark(cfg), args.date)
    print_table([(n, c, p) for n, p, c in rows], ["table", "rows", "path"])


def cmd_import(args) -> None:
    from jobs import importers

    fn = {"movielens": importers.import_movielens, "amazon-reviews": importers.import_amazon_reviews}[args.dataset]
    counts = fn(args.path, args.out, fmt=args.format)
    print(f"wrote source {args.out}: " + ", ".join(f"{k} {v:,} rows" for k, v in counts.items()), flush=True)


def cmd_demo(args) -> None:
    from jobs.demo_data import write_demo

    counts = write_demo(args.out, users=args.users, items=args.items, ratings_per_user=args.ratings_per_user,
                        days=args.days, end_date=args.end_date, seed=args.seed, fmt=args.format)
    print(f"wrote demo source {args.out}: " + ", ".join(f"{k} {v:,} rows" for k, v in counts.items()), flush=True)


def build_parser() -> argparse.ArgumentParser:
    from jobs.demo_data import DEFAULT_END

    p = argparse.ArgumentParser(prog="lmrec", description=(
        "Nightly batch recommendations: BERT text profiles + collaborative filtering on Spark, "
        "Delta and MLflow. Settings come from the environment (LMREC_*, MLFLOW_TRACKING_URI, SPARK_MASTER)."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    j = sub.add_parser("job", help="run one job for a logical date", description=(
        "Run one pipeline job for logical date D, in this process, with the environment's settings "
        "(the same entry point spark-submit runs). Jobs: " + ", ".join(JOBS)))
    j.add_argument("name", choices=list(JOBS), metavar="NAME", help="job: " + ", ".join(JOBS))
    _job_parser(parser=j)
    j.set_defaults(fn=cmd_job)

    pl = sub.add_parser("pipeline", help="run every job in order for a date, in one process", description=(
        "Run the jobs in pipeline order for date D in one Spark session (no Airflow)."))
    _job_parser(parser=pl)
    pl.add_argument("--jobs", help="comma-separated subset of jobs (default: all)")
    pl.set_defaults(fn=cmd_pipeline)

    t = sub.add_parser("tables", help="list the Delta tables and their row counts")
    t.add_argument("--date", type=parse_date, help="count only this run_date's partition where partitioned")
    t.set_defaults(fn=cmd_tables)

    im = sub.add_parser("import", help="convert a public dataset into a source directory", description=(
        "Convert MovieLens (100K u.data, 1M .dat, latest/25M .csv) or Amazon reviews (JSON lines, .gz or not) "
        "into the source format (ratings, items, user_text)."))
    im.add_argument("dataset", choices=["movielens", "amazon-reviews"])
    im.add_argument("path", help="MovieLens directory, or the Amazon reviews .json[.gz] file")
    im.add_argument("--out", required=True, help="source directory to write")
    im.add_argument("--format", choices=["csv", "parquet"], default="csv")
    im.set_defaults(fn=cmd_import)

    d = sub.add_parser("demo-data", help="generate the deterministic demo catalogue", description=(
        "Generate the embedded default: items with titles, descriptions and genres whose words predict "
        "who likes them; ratings spread over --days days ending at --end-date; some user text."))
    d.add_argument("--out", required=True)
    d.add_argument("--users", type=int, default=300)
    d.add_argument("--items", type=int, default=400)
    d.add_argument("--ratings-per-user", type=float, default=30.0, help="mean ratings per user (heavy-tailed)")
    d.add_argument("--days", type=int, default=7, help="days the rating timestamps span")
    d.add_argument("--end-date", type=parse_date, default=DEFAULT_END, help=f"last day with events (default {DEFAULT_END})")
    d.add_argument("--seed", type=int, default=S.SEED)
    d.add_argument("--format", choices=["csv", "parquet"], default=None, help="default: csv, parquet above 2M ratings")
    d.set_defaults(fn=cmd_demo)

    analyst.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
        args.fn(args)
    except Exception as exc:  # clear one-line error for users; the traceback with -v
        if getattr(args, "verbose", False):
            raise
        log.error("%s: %s", type(exc).__name__, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())
