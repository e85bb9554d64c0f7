"""The job registry and the runner: one table of the nightly jobs (name, outputs, timeout, GPU,
options) that drives the ``lmrec`` command, the DAG, spark-submit and the scale benchmark.

Adding a job: one :class:`Job` row here and one module ``jobs/<name>.py`` with
``run(run_date, *, cfg, spark, source=None, <options>) -> dict`` and ``main()``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lmrec.core import schema as S
from lmrec.core.settings import FALSE_WORDS, TRUE_WORDS, Settings

log = logging.getLogger("lmrec")


@dataclass(frozen=True)
class Job:
    name: str  # module jobs/<name>.py, Airflow task id, and (mostly) the table it writes
    outputs: tuple[str, ...]  # Delta tables it writes (the DAG's Assets)
    timeout_minutes: int  # Airflow execution timeout of its task
    gpu: bool = False  # gets the GPU executor settings and the torch daemon
    options: tuple[str, ...] = ()  # run options it takes besides --date and --source (see OPTIONS)
    in_date_order: bool = False  # runs only after its own run of the previous date succeeded
    after_previous_downstream: bool = False  # ... and after that run's direct downstream tasks


# The pipeline's order; the DAG wires embed_items and embed_users in parallel.
JOBS: tuple[Job, ...] = (
    Job("ingest", (S.RATINGS_RAW, S.ITEMS_RAW, S.USER_TEXT_RAW, S.QUARANTINE), 60),
    # New ids get the next integers: in date order, so they are numbered as one-at-a-time runs
    # number them (splits and training depend on the numbering; found by the six-date backfill).
    Job("rating_matrix", (S.RATING_MATRIX, S.USER_INDEX, S.ITEM_INDEX), 60, in_date_order=True),
    # Unchanged texts reuse the vectors of the latest earlier date: in date order, each date reuses
    # what a one-at-a-time run would (the same vectors, not ones encoded in other batches) and a
    # backfill encodes each text once instead of once per concurrent date.
    Job("embed_items", (S.ITEM_EMBEDDINGS,), 180, gpu=True, options=("full_refresh",), in_date_order=True),
    Job("embed_users", (S.USER_EMBEDDINGS,), 180, gpu=True, options=("full_refresh",), in_date_order=True),
    # The model of D depends on the champion as of D: train of D runs after the gate of D-1 has
    # decided; with the id maps read as of D (training_data) and the orders above, a backfill's
    # concurrent runs are meant to give what the same dates run one at a time give (the six-date
    # backfill test checks it; README "Backfills" has its last result).
    Job("train", (), 180, gpu=True, options=("retrain",), in_date_order=True, after_previous_downstream=True),
    Job("gate", (S.MODEL_LEDGER,), 60, in_date_order=True),
    Job("score", (S.RECOMMENDATIONS_STAGING,), 120, options=("top_k", "full_refresh")),
    Job("validate", (S.RECOMMENDATIONS,), 60, options=("top_k",)),
)
JOB_NAMES = tuple(j.name for j in JOBS)


def parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def parse_bool(text: str) -> bool:
    if str(text).strip().lower() in TRUE_WORDS:
        return True
    if str(text).strip().lower() in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"not a boolean (true/false): {text!r}")


# Run options: name -> (flag, argparse keywords, DAG param). One list for the CLI, spark-submit
# and the DAG; a job takes those its registry row names.
OPTIONS: dict[str, tuple[str, dict, str]] = {
    "top_k": ("--top-k", dict(type=int, help=f"recommendations per user (default $LMREC_TOP_K or {S.DEFAULT_K})"),
              "{{ params.top_k }}"),
    "retrain": ("--retrain", dict(choices=["auto", "always"], help=(
        "'auto' trains only when the champion is stale (README, Retraining), 'always' trains tonight "
        "(default $LMREC_RETRAIN or auto)")), "{{ params.retrain }}"),
    "full_refresh": ("--full-refresh", dict(nargs="?", const=True, type=parse_bool, metavar="BOOL",
                                            help="recompute from scratch: re-embed every text (ignoring stored "
                                                 "vectors) and score every user (ignoring D-1's lists)"),
                     "{{ params.full_refresh }}"),
}


def job(name: str) -> Job:
    for j in JOBS:
        if j.name == name:
            return j
    raise SystemExit(f"unknown job {name!r}; jobs: {', '.join(JOB_NAMES)}")


def job_module(name: str, cfg: Settings):
    """The module ``jobs/<name>.py`` (from ``cfg.jobs_dir``: the checkout's or the image's jobs/)."""
    jobs_dir = Path(cfg.jobs_dir).resolve()
    if not (jobs_dir / f"{name}.py").exists():
        raise SystemExit(f"job module {jobs_dir / (name + '.py')} not found; set LMREC_JOBS_DIR to the jobs/ folder")
    if str(jobs_dir.parent) not in sys.path:
        sys.path.append(str(jobs_dir.parent))
    return importlib.import_module(f"{jobs_dir.name}.{name}")


def job_options(name: str, values: dict) -> dict:
    """The options of ``values`` that job ``name`` takes (those set, i.e. not None)."""
    return {k: v for k, v in values.items() if k in job(name).options and v is not None}


def run_job(name: str, run_date: dt.date, *, cfg: Settings | None = None, spark=None, source: str | None = None,
            **options):
    """Run job ``name`` for ``run_date`` in this process; returns what the job returns. ``options``
    may hold any run option: the job gets those its registry row names."""
    from lmrec.core.spark import get_spark

    spec = job(name)
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise TypeError(f"unknown run option(s) {', '.join(sorted(unknown))}; options: {', '.join(OPTIONS)}")
    cfg = cfg or Settings.from_env()
    module = job_module(name, cfg)
    spark = spark or get_spark(cfg, app_name=f"lmrec-{name}-{run_date}", gpu=spec.gpu)
    from lmrec.core.io import is_connect, record_run

    # A Spark Connect server's cache is shared by all its sessions and outlives them: a job killed
    # with frames cached would leave them to match a later job's reads of the same file or table
    # (yesterday's rows). Each job starts and ends with it empty (a concurrent job recomputes).
    shared_cache = is_connect(spark)
    t0 = time.perf_counter()  # wall-clock ok: duration only
    log.info("job %s for %s starting (warehouse %s%s)", name, run_date, cfg.warehouse,
             f", Spark Connect {cfg.spark_remote}" if shared_cache else "")
    try:
        if shared_cache:
            spark.catalog.clearCache()
        result = module.run(run_date, cfg=cfg, spark=spark, source=source, **job_options(name, options))
    except Exception as exc:
        _record(record_run, spark, cfg, run_date, name, status="failed", seconds=time.perf_counter() - t0, error=exc)
        raise
    finally:
        if shared_cache:
            spark.catalog.clearCache()
    seconds = time.perf_counter() - t0  # wall-clock ok: duration only
    log.info("job %s for %s done in %.1fs", name, run_date, seconds)
    _record(record_run, spark, cfg, run_date, name, status="succeeded", seconds=seconds, result=result)
    return result


def _record(record_run, *args, **kw) -> None:
    """Write the job's run_summary row; a failure to write it is logged, never the job's failure."""
    try:
        record_run(*args, **kw)
    except Exception as exc:  # the summary is bookkeeping: the job's own outcome stands
        log.warning("could not write %s for %s: %s", S.RUN_SUMMARY, args[3], type(exc).__name__)


def add_job_arguments(p: argparse.ArgumentParser, options=tuple(OPTIONS)) -> argparse.ArgumentParser:
    """--date, --source, the run ``options`` and -v on parser ``p``."""
    p.add_argument("--date", required=True, type=parse_date,
                   help="logical date D (YYYY-MM-DD); the job sees events before D+1 day UTC")
    p.add_argument("--source", help="source directory (default: $LMREC_SOURCE, the demo catalogue)")
    for name in options:
        flag, kw, _ = OPTIONS[name]
        p.add_argument(flag, dest=name, default=None, **kw)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def options_of(args) -> dict:
    """The run options given on a command line parsed by :func:`add_job_arguments`."""
    return {k: getattr(args, k) for k in OPTIONS if getattr(args, k, None) is not None}


def spark_submit_args(name: str) -> list[str]:
    """The application arguments of job ``name`` under spark-submit (Airflow templates)."""
    args = ["--date", "{{ ds }}", "--source", "{{ params.source }}"]
    for opt in job(name).options:
        flag, _, template = OPTIONS[opt]
        args += [flag, template]
    return args


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "urllib3", "alembic", "filelock", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def report(result) -> None:
    """Print a job's result (its references and counts) on stdout."""
    if result is not None:
        print(result, flush=True)


def job_entry(name: str, argv: list[str] | None = None) -> None:
    """Entry point of ``spark-submit jobs/<name>.py --date D [options]``."""
    p = argparse.ArgumentParser(prog=f"jobs/{name}.py", description=f"Run the {name} job for logical date D.")
    args = add_job_arguments(p, job(name).options).parse_args(argv)
    setup_logging(args.verbose)
    report(run_job(name, args.date, source=args.source, **options_of(args)))
