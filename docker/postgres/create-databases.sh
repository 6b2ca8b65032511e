#!/bin/sh
# Runs once, on an empty data volume (postgres image: /docker-entrypoint-initdb.d):
# one database and role per service, so Dagster and MLflow never share tables
# (monitoring's predictions database belongs to the Dagster role).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v dagster_db="$DAGSTER_PG_DB" -v dagster_user="$DAGSTER_PG_USER" -v dagster_password="$DAGSTER_PG_PASSWORD" \
  -v predictions_db="$PREDICTIONS_PG_DB" \
  -v mlflow_db="$MLFLOW_PG_DB" -v mlflow_user="$MLFLOW_PG_USER" -v mlflow_password="$MLFLOW_PG_PASSWORD" <<'SQL'
CREATE ROLE :"dagster_user" LOGIN PASSWORD :'dagster_password';
CREATE DATABASE :"dagster_db" OWNER :"dagster_user";
CREATE DATABASE :"predictions_db" OWNER :"dagster_user";
CREATE ROLE :"mlflow_user" LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE :"mlflow_db" OWNER :"mlflow_user";
SQL
