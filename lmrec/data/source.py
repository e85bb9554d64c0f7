"""A source directory (the contract's format) read and validated: every file as string columns
with its raw record, checks that give each bad row one rejection reason, and the split into
accepted bronze rows and quarantined ones. Pure DataFrame transforms; the ingest job writes."""

from __future__ import annotations

from dataclasses import dataclass

from lmrec.core import schema as S
from lmrec.core.errors import SourceError
from lmrec.core.settings import Settings

CORRUPT = "_corrupt_record"
RAW = "_raw"
ORDER = "_order"


@dataclass
class FileCounts:
    source_file: str
    rows_in: int
    accepted: int
    rejected: dict[str, int]

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def reconciles(self) -> bool:
        return self.rows_in == self.accepted + self.rejected_total


# ---------------------------------------------------------------------------------------------
# Reading: every source file becomes string columns + the raw record + its order in the file.

def read_source(spark, path: str, fmt: str, stem: str):
    """Read one source file as all-string columns plus ``_corrupt_record`` (set for malformed CSV
    lines), ``_order``, ``line`` and ``attributes``. A CSV file is parsed once, into a cache (the
    caller clears it when done); a Parquet file is scanned again by each pass instead, which is
    cheaper than building the cache (25M ratings: a scan 6 s, the cache 36 s), and a scan's
    partitions, hence ``_order`` and ``line``, are the same on every pass. The validators add
    ``_raw`` (the record as read) to rejected rows only.

    Raises:
        SourceError: a required column is missing (the message names file and column).
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    required, optional = S.SOURCE_FILES[stem]
    if fmt == "csv":
        header = spark.read.option("header", True).csv(path).columns
    else:
        header = spark.read.parquet(path).columns
    missing = [c for c in required if c not in header]
    if missing:
        raise SourceError(f"{path}: required column(s) {', '.join(missing)} missing (found: {', '.join(header)})")
    if fmt == "csv":
        schema = T.StructType([T.StructField(c, T.StringType()) for c in header]
                              + [T.StructField(CORRUPT, T.StringType())])
        df = (spark.read.schema(schema).option("header", True).option("multiLine", True)
              .option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT)
              .option("escape", '"').option("encoding", "UTF-8").csv(path))
    else:
        df = spark.read.parquet(path)
        df = df.select(*[F.col(c).cast("string").alias(c) for c in header]).withColumn(CORRUPT, F.lit(None).cast("string"))
    # A CSV file is parsed once: into this cache, which the line numbers' partition counts fill.
    # Everything else is derived lazily.
    base = df.withColumn(ORDER, F.monotonically_increasing_id())
    if fmt == "csv":
        base = base.cache()
    df = _with_line_numbers(base, header, fmt)
    for c in optional:
        if c not in header:
            df = df.withColumn(c, F.lit(None).cast("string"))
    extras = [c for c in header if c not in required and c not in optional]
    attrs = F.to_json(F.create_map(*[x for c in extras for x in (F.lit(c), F.col(c))])) if extras else F.lit(None)
    return df.withColumn(S.COL_ATTRIBUTES, attrs.cast("string"))


def _with_line_numbers(df, header: list[str], fmt: str):
    """Add ``line``: where each record starts in its file. CSV: the line number (the header is
    line 1; newlines inside quoted fields count, so a record after a multi-line review gets its
    real line). Parquet: the 1-based row number.

    ``_order`` (monotonically_increasing_id) is the partition index in its upper bits and the
    row within the partition in the lower 33; the partitions' row counts (one small job) turn it
    into the row's position in the file. A multi-line CSV is one partition (not splittable), so
    the running count of embedded newlines is a window over that one partition.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    part = F.shiftright(F.col(ORDER), 33)
    counts = sorted(tuple(r) for r in df.groupBy(part.alias("p")).count().collect())
    starts, total = [], 0
    for p, n in counts:
        starts += [F.lit(p), F.lit(total)]
        total += n
    offset = F.element_at(F.create_map(*starts), part) if starts else F.lit(0)
    row = offset + F.col(ORDER).bitwiseAND((1 << 33) - 1)  # 0-based record index in the file
    if fmt != "csv":
        return df.withColumn(S.COL_LINE, (row + 1).cast("long"))
    newlines = sum(F.coalesce(F.size(F.split(F.col(c), "\n")) - 1, F.lit(0)) for c in header)
    # A malformed line holds its text in _corrupt_record only (its fields may be partly parsed).
    extra = F.when(F.col(CORRUPT).isNotNull(), F.size(F.split(F.col(CORRUPT), "\n")) - 1).otherwise(newlines)
    before = F.sum(extra).over(Window.orderBy(ORDER).rowsBetween(Window.unboundedPreceding, -1))
    return df.withColumn(S.COL_LINE, (row + 2 + F.coalesce(before, F.lit(0))).cast("long"))


# ---------------------------------------------------------------------------------------------
# Validation: pure DataFrame -> DataFrame transforms.

def _blank(c):
    from pyspark.sql import functions as F

    return F.col(c).isNull() | (F.trim(F.col(c)) == "")


def parse_timestamp(c):
    """Unix seconds (integer or decimal) or ISO-8601 -> UTC timestamp; null when unparseable."""
    from pyspark.sql import functions as F

    col = F.trim(F.col(c))
    numeric = col.rlike(r"^-?\d+(\.\d+)?$")
    return F.when(numeric, F.timestamp_seconds(col.try_cast("double"))).otherwise(F.try_to_timestamp(col))


def _first_reason(checks):
    """``checks`` is [(condition, reason)]; returns a column with the first failing reason."""
    from pyspark.sql import functions as F

    expr = F.lit(None).cast("string")
    for cond, reason in reversed(checks):
        expr = F.when(cond, F.lit(reason)).otherwise(expr)
    return expr


def _mark_duplicates(df, key_cols, *, broadcast_max: int = 500_000):
    """Reason ``exact_duplicate`` for every repeat of an identical record (the first in the file
    kept; nulls count as equal).

    The records themselves are neither shuffled nor sorted, as a window over the keys would (at
    25M ratings that sort was most of ingest's validation): a hash aggregate over a 64-bit hash
    of the keys finds the hashes seen more than once (a shuffle of longs), the rows with those
    hashes (few, in a real file; collisions included) are grouped by their real keys, and the
    keys that repeat come back with where each first occurs, broadcast when at most
    ``broadcast_max``.
    """
    from functools import reduce

    from pyspark.sql import functions as F

    digest = F.xxhash64(*[F.coalesce(F.col(c), F.lit("\u0000null")) for c in key_cols])  # nulls hash apart from ""
    def small(frame):  # computed once (cached); broadcast to the joins when small enough
        frame = frame.cache()
        return F.broadcast(frame) if frame.count() <= broadcast_max else frame

    seen_twice = small(df.groupBy(digest.alias("_h")).count().where(F.col("count") > 1).select("_h"))
    candidates = df.join(seen_twice, digest == F.col("_h"), "left_semi")
    keys = [f"_dup{i}" for i in range(len(key_cols))]
    repeated = small(candidates.groupBy(*[F.col(c).alias(k) for c, k in zip(key_cols, keys)])
                     .agg(F.min(ORDER).alias("_first"), F.count(F.lit(1)).alias("_n"))
                     .where(F.col("_n") > 1).drop("_n"))
    same = reduce(lambda a, b: a & b, [F.col(c).eqNullSafe(F.col(k)) for c, k in zip(key_cols, keys)])
    marked = df.join(repeated, same, "left")
    later = F.col(S.COL_REASON).isNull() & F.col("_first").isNotNull() & (F.col(ORDER) != F.col("_first"))
    return marked.withColumn(S.COL_REASON, F.when(later, F.lit(S.REASON_DUPLICATE))
                             .otherwise(F.col(S.COL_REASON))).drop("_first", *keys)


def _with_raw_record(df):
    """``_raw`` for rejected rows (null for accepted ones, so no JSON is built for them): the
    malformed line as read, or the record's source columns as JSON (null fields left out). Call
    before any source column is replaced by its parsed value."""
    from pyspark.sql import functions as F

    internal = {CORRUPT, ORDER, RAW, S.COL_LINE, S.COL_ATTRIBUTES, S.COL_REASON}
    record = F.to_json(F.struct(*[F.col(c) for c in df.columns if c not in internal]))
    return df.withColumn(RAW, F.when(F.col(S.COL_REASON).isNotNull(), F.coalesce(F.col(CORRUPT), record)))


def _text_checks(cols, max_chars):
    from pyspark.sql import functions as F

    checks = []
    for c in cols:
        checks.append((F.coalesce(F.col(c).contains("\ufffd"), F.lit(False)), S.REASON_INVALID_UTF8))
    for c in cols:
        checks.append((F.coalesce(F.length(c) > max_chars, F.lit(False)), S.REASON_TEXT_TOO_LONG))
    return checks


def validate_items(df, *, max_chars: int):
    """Items with a ``reason`` column (null = accepted)."""
    from pyspark.sql import functions as F

    checks = [(F.col(CORRUPT).isNotNull(), S.REASON_MALFORMED), (_blank(S.COL_ITEM), S.REASON_MISSING_ID)]
    checks += _text_checks([S.COL_ITEM, S.COL_TITLE, S.COL_DESCRIPTION, S.COL_CATEGORIES], max_chars)
    df = df.withColumn(S.COL_REASON, _first_reason(checks))
    # An item id listed twice is a duplicate record: the first one wins.
    return _with_raw_record(_mark_duplicates(df, [S.COL_ITEM]))


def validate_ratings(df, item_ids, *, rating_min: float, rating_max: float):
    """Ratings with ``reason`` (null = accepted), ``rating`` as double and ``event_ts``.

    Args:
        item_ids: one column ``item_id``, the accepted catalogue.
    """
    from pyspark.sql import functions as F

    rating = F.trim(F.col(S.COL_RATING)).try_cast("double")
    ts = parse_timestamp(S.COL_TIMESTAMP)
    checks = [
        (F.col(CORRUPT).isNotNull(), S.REASON_MALFORMED),
        (_blank(S.COL_USER) | _blank(S.COL_ITEM), S.REASON_MISSING_ID),
        (F.coalesce(F.col(S.COL_USER).contains("\ufffd") | F.col(S.COL_ITEM).contains("\ufffd"), F.lit(False)), S.REASON_INVALID_UTF8),
        (rating.isNull() | F.isnan(F.coalesce(rating, F.lit(0.0))), S.REASON_BAD_RATING),
        (ts.isNull(), S.REASON_BAD_TIMESTAMP),
        ((rating < rating_min) | (rating > rating_max), S.REASON_RATING_SCALE),
    ]
    df = df.withColumn(S.COL_REASON, _first_reason(checks))
    df = _mark_duplicates(df, [S.COL_USER, S.COL_ITEM, S.COL_RATING, S.COL_TIMESTAMP])
    known = item_ids.select(F.col(S.COL_ITEM).alias("_known")).distinct()
    df = df.join(known, F.col(S.COL_ITEM) == F.col("_known"), "left")
    df = df.withColumn(S.COL_REASON, F.when(F.col(S.COL_REASON).isNull() & F.col("_known").isNull(),
                                            F.lit(S.REASON_UNKNOWN_ITEM)).otherwise(F.col(S.COL_REASON)))
    return _with_raw_record(df.drop("_known")).withColumn(S.COL_RATING, rating).withColumn(S.COL_EVENT_TS, ts)


def validate_user_text(df, *, max_chars: int):
    """User texts with ``reason`` (null = accepted) and ``event_ts``."""
    from pyspark.sql import functions as F

    ts = parse_timestamp(S.COL_TIMESTAMP)
    checks = [
        (F.col(CORRUPT).isNotNull(), S.REASON_MALFORMED),
        (_blank(S.COL_USER), S.REASON_MISSING_ID),
        (ts.isNull(), S.REASON_BAD_TIMESTAMP),
    ] + _text_checks([S.COL_USER, S.COL_ITEM, S.COL_TEXT, S.COL_SUMMARY], max_chars)
    df = df.withColumn(S.COL_REASON, _first_reason(checks))
    df = _mark_duplicates(df, [S.COL_USER, S.COL_ITEM, S.COL_TEXT, S.COL_TIMESTAMP])
    return _with_raw_record(df).withColumn(S.COL_EVENT_TS, ts)


BRONZE_COLUMNS = {
    "items": [S.COL_ITEM, S.COL_TITLE, S.COL_DESCRIPTION, S.COL_CATEGORIES, S.COL_ATTRIBUTES],
    "ratings": [S.COL_USER, S.COL_ITEM, S.COL_RATING, S.COL_EVENT_TS],
    "user_text": [S.COL_USER, S.COL_ITEM, S.COL_TEXT, S.COL_SUMMARY, S.COL_EVENT_TS],
}
BRONZE_TABLE = {"items": S.ITEMS_RAW, "ratings": S.RATINGS_RAW, "user_text": S.USER_TEXT_RAW}


def split(validated, stem: str, source_file: str):
    """(accepted rows in the bronze schema, rejected rows in the quarantine schema)."""
    from pyspark.sql import functions as F

    accepted = validated.where(F.col(S.COL_REASON).isNull()).select(*BRONZE_COLUMNS[stem])
    if stem == "items":
        accepted = accepted.withColumn(S.COL_TITLE, F.coalesce(F.col(S.COL_TITLE), F.lit("")))
    rejected = validated.where(F.col(S.COL_REASON).isNotNull()).select(
        F.lit(source_file).alias(S.COL_SOURCE_FILE), S.COL_REASON,
        F.col(RAW).alias(S.COL_RAW_RECORD), S.COL_LINE)
    return accepted, rejected


def build_ingest(raw: dict, *, cfg: Settings) -> dict:
    """Validate raw source frames.

    Args:
        raw: stem -> (source file, frame from :func:`read_source`); ``items`` and ``ratings``
            required, ``user_text`` optional.
    Returns:
        stem -> (accepted frame, rejected frame, validated frame with ``reason``). Only the
        (small) catalogue is cached, as the ratings' known items; the others are recomputed
        by each pass over them (counts, quarantine, bronze), which at 25M ratings is cheaper
        than caching them (the cache took 60 s, a pass 18 s).
    """
    out = {}
    items_file, items = raw["items"]
    items_v = validate_items(items, max_chars=cfg.max_text_chars).cache()
    out["items"] = (*split(items_v, "items", items_file), items_v)
    ratings_file, ratings = raw["ratings"]
    ratings_v = validate_ratings(ratings, out["items"][0].select(S.COL_ITEM),
                                 rating_min=cfg.rating_min, rating_max=cfg.rating_max)
    out["ratings"] = (*split(ratings_v, "ratings", ratings_file), ratings_v)
    if "user_text" in raw:
        text_file, text = raw["user_text"]
        text_v = validate_user_text(text, max_chars=cfg.max_text_chars)
        out["user_text"] = (*split(text_v, "user_text", text_file), text_v)
    return out


def missing_source_files(source: str) -> list[str]:
    """The required source files not (yet) in ``source`` (a local directory), by name; [] when all
    are there. Remote sources (``s3a://``…) are checked by ingest through Hadoop, so [] here."""
    from pathlib import Path

    if "://" in source and not source.startswith("file://"):
        return []
    root = Path(source.removeprefix("file://"))
    if not root.is_dir():
        return [f"source directory {source} does not exist"]
    return [f"{root / stem}.csv (or .parquet)" for stem in S.SOURCE_FILES if stem not in S.OPTIONAL_SOURCES
            and not any((root / f"{stem}.{ext}").exists() for ext in ("csv", "parquet"))]
