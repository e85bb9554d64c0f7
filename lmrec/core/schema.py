"""Names shared by every job: tables, columns, defaults. One place, so nothing drifts."""

# Tables (Delta, under the warehouse root). Job module, Airflow task id and table share a noun.
RATINGS_RAW = "ratings_raw"
ITEMS_RAW = "items_raw"
USER_TEXT_RAW = "user_text_raw"
QUARANTINE = "quarantine"
RATING_MATRIX = "rating_matrix"
USER_INDEX = "user_index"
ITEM_INDEX = "item_index"
ITEM_EMBEDDINGS = "item_embeddings"
USER_EMBEDDINGS = "user_embeddings"
RECOMMENDATIONS = "recommendations"
RECOMMENDATIONS_STAGING = "recommendations_staging"  # written by score, published by validate
RUN_SUMMARY = "run_summary"
MODEL_LEDGER = "model_ledger"  # per date: the model that scores D and why (written by gate)
ALL_TABLES = (
    RATINGS_RAW, ITEMS_RAW, USER_TEXT_RAW, QUARANTINE, RATING_MATRIX, USER_INDEX, ITEM_INDEX,
    ITEM_EMBEDDINGS, USER_EMBEDDINGS, MODEL_LEDGER, RECOMMENDATIONS_STAGING, RECOMMENDATIONS, RUN_SUMMARY,
)

# Columns.
COL_RUN_DATE = "run_date"
COL_USER = "user_id"
COL_ITEM = "item_id"
COL_RATING = "rating"
COL_TIMESTAMP = "timestamp"  # in source files
COL_EVENT_TS = "event_ts"  # parsed, UTC, in tables
COL_TITLE = "title"
COL_DESCRIPTION = "description"
COL_CATEGORIES = "categories"
COL_ATTRIBUTES = "attributes"  # JSON of a source's extra columns
COL_TEXT = "text"
COL_SUMMARY = "summary"  # optional short title of a user text (Amazon review summary)
COL_USER_IDX = "user_idx"
COL_ITEM_IDX = "item_idx"
COL_SOURCE_FILE = "source_file"
COL_REASON = "reason"
COL_RAW_RECORD = "raw_record"
COL_LINE = "line"
COL_MODEL_ID = "model_id"
COL_TEXT_SHA = "text_sha256"
COL_VECTOR = "vector"
COL_RANK = "rank"
COL_SCORE = "score"
COL_MODEL_VERSION = "model_version"
COL_BECAUSE = "because_item_id"
COL_DATA_CUTOFF = "data_cutoff"
COL_DECISION = "decision"
COL_CANDIDATE_VERSION = "candidate_version"
COL_ALIAS_MOVED = "champion_alias_moved"

# model_ledger: one row per run date (gate), the model score uses for D and why.
LEDGER_COLUMNS = (
    (COL_MODEL_VERSION, "string"),  # the version that scores D (null: none yet, popularity for everyone)
    (COL_DATA_CUTOFF, "string"),  # that version's data_cutoff (ISO-8601 UTC), <= D + 1 day
    (COL_DECISION, "string"),  # promoted | kept_champion | unchanged (train kept the champion as of D)
    (COL_CANDIDATE_VERSION, "string"),  # the version trained for D, if any
    ("candidate_ndcg_at_10", "double"), ("champion_ndcg_at_10", "double"), ("popularity_ndcg_at_10", "double"),
    (COL_REASON, "string"),
    (COL_ALIAS_MOVED, "boolean"),  # whether the global champion alias moved (only forward in time)
)

# Source files (docs/ARCHITECTURE.md, Source format; a contract): stem -> (required columns, optional columns).
SOURCE_FILES = {
    "ratings": ((COL_USER, COL_ITEM, COL_RATING, COL_TIMESTAMP), ()),
    "items": ((COL_ITEM, COL_TITLE), (COL_DESCRIPTION, COL_CATEGORIES)),
    "user_text": ((COL_USER, COL_TEXT, COL_TIMESTAMP), (COL_ITEM, COL_SUMMARY)),
}
OPTIONAL_SOURCES = ("user_text",)

# Rejection reasons written to the quarantine table.
REASON_MALFORMED = "malformed_line"
REASON_MISSING_ID = "missing_id"
REASON_BAD_RATING = "unparseable_rating"
REASON_BAD_TIMESTAMP = "unparseable_timestamp"
REASON_RATING_SCALE = "rating_out_of_scale"
REASON_DUPLICATE = "exact_duplicate"
REASON_UNKNOWN_ITEM = "unknown_item"
REASON_TEXT_TOO_LONG = "text_too_long"
REASON_INVALID_UTF8 = "invalid_utf8"

DEFAULT_K = 10
MAX_K = 1000
SEED = 42
MODEL_NAME = "lmrec-scorer"  # MLflow registered model (contract)
ALIAS_CHAMPION = "champion"
ALIAS_CANDIDATE = "candidate"
POPULARITY_VERSION = "popularity"  # model_version of fallback rows
DAG_ID = "nightly_recommendations"


def require_columns(columns, required, what: str) -> None:
    """Raise ValueError naming ``what`` and every column of ``required`` missing from ``columns``
    (a list of names, or anything with ``.columns``: a Spark or pandas DataFrame)."""
    have = set(getattr(columns, "columns", columns))
    missing = [c for c in required if c not in have]
    if missing:
        raise ValueError(f"{what}: input is missing column(s) {', '.join(map(repr, missing))}")
