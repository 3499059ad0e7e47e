#!/usr/bin/env bash
# One-shot: Kibana must not use the elastic superuser; give the built-in kibana_system user the password
# from .env. Safe to run again (setting the same password twice is fine).
set -euo pipefail
: "${ELASTIC_PASSWORD:?}" "${KIBANA_SYSTEM_PASSWORD:?}"
url=http://elasticsearch:9200
body=$(printf '{"password":"%s"}' "$KIBANA_SYSTEM_PASSWORD")
for attempt in $(seq 1 30); do
  if curl -fsS -u "elastic:${ELASTIC_PASSWORD}" -H 'Content-Type: application/json' \
      -X POST "$url/_security/user/kibana_system/_password" -d "$body" >/dev/null; then
    echo "elasticsearch-setup: kibana_system password set"
    exit 0
  fi
  echo "elasticsearch-setup: not ready, retry $attempt/30"
  sleep 2
done
exit 1
