#!/bin/sh
# One Postgres for the stack: a database for Prefect and one for MLflow.
set -eu
for db in prefect mlflow; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -c "CREATE DATABASE $db OWNER $POSTGRES_USER"
done
