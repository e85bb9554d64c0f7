#!/bin/sh
# MLflow's database and role beside Airflow's (the postgres image runs this once, on an empty
# data directory). The password comes from the environment (MLFLOW_DB_PASSWORD), never from a file
# in the repository.
set -eu
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD}"
psql -v ON_ERROR_STOP=1 -v pw="$MLFLOW_DB_PASSWORD" --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'pw';
CREATE DATABASE mlflow OWNER mlflow;
SQL
