-- A second database and role for the MLflow server (Airflow uses the default database).
CREATE ROLE mlflow LOGIN PASSWORD 'mlflow';
CREATE DATABASE mlflow OWNER mlflow;
