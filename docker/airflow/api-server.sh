#!/usr/bin/env bash
# Start the API server with the admin password from the environment (.env), not a generated one.
# The simple auth manager keeps passwords in a JSON file and only generates one for users missing from it.
set -euo pipefail
: "${AIRFLOW_ADMIN_PASSWORD:?AIRFLOW_ADMIN_PASSWORD is not set (see .env.example)}"
python - <<'PY'
import json
import os

path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
users = [item.split(":")[0] for item in os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",") if item]
passwords = {user: os.environ["AIRFLOW_ADMIN_PASSWORD"] for user in users}
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as handle:
    json.dump(passwords, handle)
PY
exec airflow api-server
