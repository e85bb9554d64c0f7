# lmrec: `make run` sets up and runs the nightly pipeline on the embedded default;
# `make test` sets up and runs the tests. Nothing needs installing first but Python 3.11+ and Java 17+.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
export LMREC_HOME ?= $(CURDIR)/var
export AIRFLOW_HOME ?= $(LMREC_HOME)/airflow
export PYTHONUNBUFFERED := 1
# Logical date of `make run`: yesterday (UTC), as the nightly schedule would run it.
DATE ?= $(shell date -u -d yesterday +%F)
# `make test` leaves out tests marked slow (two more whole-DAG runs); `make test-all` runs them too.
PYTEST_ARGS ?= -m "not slow" --durations=25

.PHONY: help check venv run pipeline demo-source airflow-db test test-all bench bench-scale airflow backfill spark-server clean
help:
	@echo "make run      set up .venv and run the nightly pipeline on the demo catalogue (DATE=$(DATE))"
	@echo "make test     set up .venv and run the tests"
	@echo "make airflow  Airflow standalone (web UI + scheduler) on http://localhost:8080"
	@echo "make backfill START=YYYY-MM-DD END=YYYY-MM-DD  backfill the DAG over past dates"
	@echo "make spark-server  one Spark Connect server for every job (then export LMREC_SPARK_REMOTE=sc://127.0.0.1:15002)"
	@echo "make bench    run the benchmarks (BENCHMARKS.md)"

check:
	@$(PYTHON) -c 'import sys; v=sys.version_info; sys.exit(0 if v >= (3, 11) else "lmrec needs Python 3.11 or newer, found %d.%d at $(PYTHON). Install it (e.g. apt-get install python3.11, pyenv install 3.11) and run: make PYTHON=python3.11 ..." % v[:2])'
	@command -v java >/dev/null || { echo "lmrec needs Java 17+ (for Spark) and found no 'java' on PATH. Install it: apt-get install openjdk-17-jre-headless (or set JAVA_HOME and PATH)." >&2; exit 1; }
	@v=$$(java -version 2>&1 | awk -F'"' '/version/ {print $$2}' | cut -d. -f1); \
	  [ "$$v" -ge 17 ] 2>/dev/null || { echo "lmrec needs Java 17+ (for Spark); 'java -version' says $$v. Install openjdk-17 and put it first on PATH." >&2; exit 1; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --python $(BIN)/python -c constraints.txt -e '.[test]'
	touch $@

venv: check $(VENV)/.installed

demo-source: venv
	@[ -f "$(LMREC_HOME)/demo-source/ratings.csv" ] || $(BIN)/lmrec demo-data --out "$(LMREC_HOME)/demo-source" --end-date $(DATE)

export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT := 120

airflow-db: venv
	@mkdir -p "$(AIRFLOW_HOME)"
	$(BIN)/airflow db migrate > "$(AIRFLOW_HOME)/db-migrate.log" 2>&1 || { tail -20 "$(AIRFLOW_HOME)/db-migrate.log"; exit 1; }
	@# At most 2 Spark jobs at once on this machine (a backfill's runs share it); LMREC_SPARK_POOL names the pool.
	$(BIN)/airflow pools set lmrec_spark 2 "Spark jobs of lmrec: at most this many at once" > /dev/null

# The nightly DAG for DATE on the embedded default, then a summary.
run: venv demo-source airflow-db
	@echo "Running DAG nightly_recommendations for $(DATE) (log: $(AIRFLOW_HOME)/dags-test.log) ..."
	@start=$$(date +%s); \
	  $(BIN)/airflow dags test nightly_recommendations $(DATE) > "$(AIRFLOW_HOME)/dags-test.log" 2>&1; rc=$$?; \
	  grep -aoE "end task task_id=[a-z_]+|Marking run .* (successful|failed)" "$(AIRFLOW_HOME)/dags-test.log" | sed 's/^/  /'; \
	  [ $$rc -eq 0 ] && ! grep -aq "state=failed" "$(AIRFLOW_HOME)/dags-test.log" || { echo "DAG run failed; see $(AIRFLOW_HOME)/dags-test.log"; exit 1; }; \
	  echo "DAG run took $$(( $$(date +%s) - start ))s"
	$(BIN)/lmrec summary --date $(DATE)

# Without Airflow: every job in one process.
pipeline: venv demo-source
	$(BIN)/lmrec pipeline --date $(DATE)

# standalone starts its components by running `airflow` from PATH: put the venv first.
# One long-lived Spark (Spark Connect) the jobs share when LMREC_SPARK_REMOTE points at it.
spark-server: venv
	$(BIN)/lmrec spark-server

airflow: venv airflow-db
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/airflow standalone

START ?= $(shell date -u -d '3 days ago' +%F)
END ?= $(DATE)
# Airflow 3 starts backfill runs only for an unpaused DAG; the scheduler must be running (make airflow).
backfill: venv airflow-db
	$(BIN)/airflow dags reserialize
	$(BIN)/airflow dags unpause nightly_recommendations
	$(BIN)/airflow backfill create --dag-id nightly_recommendations --from-date $(START) --to-date $(END) --max-active-runs 4 --reprocess-behavior failed

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: venv
	$(BIN)/python -m pytest

# Benchmarks (not tests): real data from ../shared/data; results in benchmarks/results/, summary in BENCHMARKS.md.
bench: venv
	$(BIN)/uv pip install -q --python $(BIN)/python -c constraints.txt -e '.[test,bench]'
	$(BIN)/python benchmarks/ratings.py
	$(BIN)/python benchmarks/quality.py
	$(BIN)/python benchmarks/embedding.py
	$(BIN)/python benchmarks/scoring.py

# The scale benchmark (1M, 5M, 25M ratings and the 25M next night; about 2.5 hours on 2 cores): benchmarks/results/scale.md
bench-scale: venv
	$(BIN)/python benchmarks/scale.py --fresh --sizes 1M,5M,25M --next-night 25M

clean:
	rm -rf $(LMREC_HOME)
