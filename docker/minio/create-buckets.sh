#!/bin/sh
# One-shot (compose service `minio-init`): the buckets the stack writes to, created
# if missing. Idempotent, so it runs on every `docker compose up`.
set -eu
mc alias set stellar "${MINIO_ENDPOINT}" "${MINIO_ROOT_USER}" "${MINIO_ROOT_PASSWORD}"
for bucket in "${STELLAR_S3_BUCKET}" "${MLFLOW_ARTIFACT_BUCKET}"; do
  mc mb --ignore-existing "stellar/${bucket}"
done
# Object versioning: an overwritten partition or model file can be recovered.
mc version enable "stellar/${STELLAR_S3_BUCKET}"
echo "buckets ready: ${STELLAR_S3_BUCKET} ${MLFLOW_ARTIFACT_BUCKET}"
