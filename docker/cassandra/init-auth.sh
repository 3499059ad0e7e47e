#!/usr/bin/env bash
# One-shot: with PasswordAuthenticator on, Cassandra starts with the well-known superuser cassandra/cassandra.
# Create the covidflow superuser with the password from .env, then lock the default one. Safe to run again.
set -euo pipefail
: "${CASSANDRA_USERNAME:?}" "${CASSANDRA_PASSWORD:?}" "${CASSANDRA_DEFAULT_SUPERUSER_PASSWORD:?}"
host=cassandra
cql() { cqlsh "$host" 9042 --request-timeout=30 "$@"; }
esc() { printf "%s" "$1" | sed "s/'/''/g"; }

if cql -u "$CASSANDRA_USERNAME" -p "$CASSANDRA_PASSWORD" -e "SELECT release_version FROM system.local" >/dev/null 2>&1; then
  echo "cassandra-init: role ${CASSANDRA_USERNAME} already set up"
  exit 0
fi
cql -u cassandra -p cassandra -e "CREATE ROLE IF NOT EXISTS \"${CASSANDRA_USERNAME}\" WITH SUPERUSER = true AND LOGIN = true AND PASSWORD = '$(esc "$CASSANDRA_PASSWORD")';"
# From now on, log in as the new role: the default superuser gets a random password and no login.
cql -u "$CASSANDRA_USERNAME" -p "$CASSANDRA_PASSWORD" \
  -e "ALTER ROLE cassandra WITH PASSWORD = '$(esc "$CASSANDRA_DEFAULT_SUPERUSER_PASSWORD")' AND LOGIN = false AND SUPERUSER = false;"
echo "cassandra-init: created role ${CASSANDRA_USERNAME}; default superuser disabled"
