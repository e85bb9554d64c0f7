"""Read-only SQL for analysts over the lmrec tables.

One statement at a time, and only a read: SELECT / WITH (set operations included), SHOW, DESCRIBE.
Tables are named, never given by path (``delta.`/path```, ``text.`/etc/hostname```) or read through
table functions (``read_csv(...)``, ``read_files(...)``); anything else is refused with
:class:`QueryRefused` before it runs, and changes nothing.

Engines: ``duckdb`` (default) answers from the Delta tables through delta-rs (``deltalake``) and
DuckDB, with no JVM, in an in-memory database whose file access is switched off and locked, so even a
statement the check missed can neither read a local file nor write anything. ``spark`` runs the same
check, then Spark SQL over temporary views of the same tables.

Both engines expose the same views: every lmrec table except the raw user text (``user_text_raw``:
reviews and tags users wrote), and ``quarantine`` without ``raw_record`` (a rejected line can be a
user's text). The same views from Python (pandas, notebooks): ``connect(cfg).sql(...).df()``.
"""

from __future__ import annotations

import logging

import sqlglot
from sqlglot import exp

from lmrec.core import schema as S
from lmrec.core.io import delta_uri, storage_options
from lmrec.core.settings import Settings

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # its "falling back to a Command" warnings (SHOW in Spark)

ENGINES = ("duckdb", "spark")
# Tables never exposed, and columns left out of the views (user-written text).
HIDDEN_TABLES = {S.USER_TEXT_RAW: "holds text users wrote (reviews, tags)"}
HIDDEN_COLUMNS = {S.QUARANTINE: (S.COL_RAW_RECORD,)}
# Leading words of the statements sqlglot keeps as raw commands that are reads.
READ_COMMANDS = {"duckdb": {"SHOW", "DESCRIBE", "DESC", "SUMMARIZE"}, "spark": {"SHOW", "DESCRIBE", "DESC"}}
# Functions that reach outside the tables (Spark's reflection calls static JVM methods).
FORBIDDEN_FUNCTIONS = {"reflect", "java_method", "try_reflect", "read_files", "read_csv", "read_csv_auto",
                       "read_parquet", "read_json", "read_json_auto", "read_text", "read_blob", "glob", "getenv"}


class QueryRefused(ValueError):
    """The statement is not a read of the lmrec tables; nothing ran."""


def analyst_tables() -> list[str]:
    return [t for t in S.ALL_TABLES if t not in HIDDEN_TABLES]


def check_read_only(sql: str, *, dialect: str, tables: list[str], database: str = "lmrec") -> exp.Expression:
    """The parsed statement; QueryRefused unless ``sql`` is one read-only statement over ``tables`` (by name).

    Args:
        sql: the statement.
        dialect: ``duckdb`` or ``spark`` (the engine's SQL dialect).
        tables: the table names a query may reference (CTE names are allowed besides).
        database: a qualifier the tables may carry (``lmrec.recommendations``).
    """
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise QueryRefused(f"could not parse the statement as {dialect} SQL: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise QueryRefused(f"one statement at a time (found {len(statements)})")
    stmt = statements[0]
    if isinstance(stmt, exp.Command):
        word = str(stmt.this).upper()
        if word not in READ_COMMANDS[dialect]:
            raise QueryRefused(f"{word} is not allowed: lmrec query only reads (SELECT, WITH, SHOW, DESCRIBE)")
        return stmt
    if not isinstance(stmt, (exp.Query, exp.Describe, exp.Show, exp.Summarize)):
        raise QueryRefused(f"{stmt.key.upper()} is not allowed: lmrec query only reads (SELECT, WITH, SHOW, DESCRIBE)")
    if stmt.find(exp.Into) is not None:
        raise QueryRefused("SELECT ... INTO is not allowed: lmrec query only reads")
    for fn in stmt.find_all(exp.Func):
        name = (fn.name if isinstance(fn, exp.Anonymous) else fn.sql_name()).lower()
        if name in FORBIDDEN_FUNCTIONS:
            raise QueryRefused(f"function {name}() is not allowed: it reaches outside the lmrec tables")
    ctes = {cte.alias_or_name for cte in stmt.find_all(exp.CTE)}
    for table in stmt.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise QueryRefused("table functions are not allowed: name an lmrec table (see SHOW TABLES)")
        name = table.name
        if table.catalog or (table.db and table.db != database) or "/" in name or "." in name:
            raise QueryRefused(f"{table.sql(dialect=dialect)} is not an lmrec table: tables are referenced by name "
                               f"(optionally {database}.NAME), never by path")
        if name in ctes and not table.db:
            continue
        if name in HIDDEN_TABLES:
            raise QueryRefused(f"{name} is not available to queries: it {HIDDEN_TABLES[name]}")
        if name not in tables:
            raise QueryRefused(f"unknown table {name!r}; tables: {', '.join(sorted(tables)) or '(none yet)'}")
    return stmt


def connect(cfg: Settings | None = None):
    """An in-memory DuckDB connection with a view per existing lmrec table, file access off and locked.

    Returns:
        (duckdb.DuckDBPyConnection) whose views read the Delta tables' current versions through
        delta-rs; ``connect().sql("SELECT ...").df()`` gives pandas.
    """
    import duckdb
    from deltalake import DeltaTable

    cfg = cfg or Settings.from_env()
    con = duckdb.connect(":memory:")
    con.execute(f'CREATE SCHEMA "{cfg.database}"')
    opts = storage_options(cfg)
    for name in analyst_tables():
        uri = delta_uri(cfg, name)
        if not DeltaTable.is_deltatable(uri, storage_options=opts):
            continue
        dataset = DeltaTable(uri, storage_options=opts).to_pyarrow_dataset()
        con.register(f"_{name}_arrow", dataset)
        hidden = HIDDEN_COLUMNS.get(name, ())
        columns = ", ".join(f'"{c}"' for c in dataset.schema.names if c not in hidden)
        con.execute(f'CREATE VIEW "{cfg.database}"."{name}" AS SELECT {columns} FROM "_{name}_arrow"')
    con.execute(f'USE "{cfg.database}"')
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _duckdb_tables(con, database: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE schema_name = ?", [database]).fetchall()]


def run_query(sql: str, *, cfg: Settings | None = None, engine: str = "duckdb",
              limit: int | None = None) -> tuple[list[str], list[tuple]]:
    """Check ``sql`` (QueryRefused when it is not a read) and run it on ``engine``.

    Returns:
        (column names, rows), at most ``limit`` rows when given.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    cfg = cfg or Settings.from_env()
    if engine == "duckdb":
        con = connect(cfg)
        stmt = check_read_only(sql, dialect="duckdb", tables=_duckdb_tables(con, cfg.database), database=cfg.database)
        if isinstance(stmt, exp.Show) and stmt.name.upper() == "TABLES":  # DuckDB's would list the Arrow scans
            sql = f"SELECT view_name AS name FROM duckdb_views() WHERE schema_name = '{cfg.database}' ORDER BY 1"
        rel = con.sql(sql)
        if rel is None:
            return [], []
        rel = rel.limit(limit) if limit is not None else rel
        return list(rel.columns), rel.fetchall()
    return _run_spark(sql, cfg, limit)


def _run_spark(sql: str, cfg: Settings, limit: int | None) -> tuple[list[str], list[tuple]]:
    from lmrec.core.io import is_table
    from lmrec.core.spark import get_spark

    spark = get_spark(cfg, app_name="lmrec-query")
    names = [n for n in analyst_tables() if is_table(spark, cfg, n)]
    stmt = check_read_only(sql, dialect="spark", tables=names, database=cfg.database)
    for name in names:
        df = spark.read.format("delta").load(cfg.table_path(name)).drop(*HIDDEN_COLUMNS.get(name, ()))
        df.createOrReplaceTempView(name)
    qualified = [t for t in stmt.find_all(exp.Table) if t.db]
    if qualified:  # the views are session-scoped, without a database: drop the qualifier
        for table in qualified:
            table.set("db", None)
        sql = stmt.sql(dialect="spark")
    df = spark.sql(sql)
    df = df.limit(limit) if limit is not None else df
    return df.columns, [tuple(r) for r in df.collect()]
