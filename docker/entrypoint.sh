#!/bin/sh
# Dagster containers: refuse to start on missing instance settings with a message
# naming them, instead of a stack trace from deep inside dagster-postgres.
set -eu
missing=""
for name in DAGSTER_HOME DAGSTER_PG_HOST DAGSTER_PG_PORT DAGSTER_PG_DB DAGSTER_PG_USER DAGSTER_PG_PASSWORD DAGSTER_COMPUTE_LOG_DIR; do
  eval "value=\${$name:-}"
  [ -n "$value" ] || missing="$missing $name"
done
if [ -n "$missing" ]; then
  echo "stellar: missing environment variables:$missing (see .env.example and README.md, Operations)" >&2
  exit 64
fi
exec "$@"
