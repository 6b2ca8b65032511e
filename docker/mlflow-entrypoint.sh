#!/bin/sh
# MLflow tracking server: PostgreSQL backend store, artifacts proxied to S3/MinIO.
# The database URL is built here so the password never appears in the compose file;
# +psycopg2 because SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, which is not installed.
set -eu
missing=""
for name in MLFLOW_PG_HOST MLFLOW_PG_PORT MLFLOW_PG_DB MLFLOW_PG_USER MLFLOW_PG_PASSWORD MLFLOW_ARTIFACTS_DESTINATION MLFLOW_S3_ENDPOINT_URL; do
  eval "value=\${$name:-}"
  [ -n "$value" ] || missing="$missing $name"
done
if [ -n "$missing" ]; then
  echo "mlflow: missing environment variables:$missing (see .env.example)" >&2
  exit 64
fi
password=$(python -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["MLFLOW_PG_PASSWORD"], safe=""))')
exec mlflow server \
  --backend-store-uri "postgresql+psycopg2://${MLFLOW_PG_USER}:${password}@${MLFLOW_PG_HOST}:${MLFLOW_PG_PORT}/${MLFLOW_PG_DB}" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION}" \
  --serve-artifacts \
  --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-2}" \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:5000,localhost,localhost:*,127.0.0.1:*}" \
  "$@"
