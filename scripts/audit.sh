#!/usr/bin/env bash
# pip-audit over constraints.txt (the full lock): fails on any known vulnerability that is not allow-listed in
# audit-ignore.txt (one "<ID> <reason>" per line), and fails when any pinned package could not be audited, so
# an unreachable vulnerability database is never a silent pass. See docs/security.md.
#
#   bash scripts/audit.sh                       # PyPI's JSON API (default)
#   PIP_AUDIT_SERVICE=osv bash scripts/audit.sh # OSV instead
#
# pip-audit runs from its own virtualenv: its dependencies must not change the locked project environment.
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_AUDIT_VERSION="${PIP_AUDIT_VERSION:-2.10.1}"
AUDIT_VENV="${AUDIT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/covidflow/pip-audit-${PIP_AUDIT_VERSION}}"
SERVICE="${PIP_AUDIT_SERVICE:-pypi}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
IGNORE_FILE="audit-ignore.txt"

if [[ ! -x "$AUDIT_VENV/bin/pip-audit" ]]; then
    "$PYTHON" -m venv "$AUDIT_VENV"
    "$AUDIT_VENV/bin/pip" install --quiet "pip-audit==${PIP_AUDIT_VERSION}"
fi

ignores=()
if [[ -f "$IGNORE_FILE" ]]; then
    while read -r id reason; do
        [[ -z "$id" || "$id" == \#* ]] && continue
        if [[ -z "$reason" ]]; then
            echo "audit: $IGNORE_FILE: $id has no reason; every allow-listed vulnerability needs one" >&2
            exit 2
        fi
        ignores+=(--ignore-vuln "$id")
    done < "$IGNORE_FILE"
fi

# --no-deps --disable-pip: constraints.txt pins every package, nothing to resolve.
# --strict: a package the service does not know (or cannot be reached for) fails the audit.
exec "$AUDIT_VENV/bin/pip-audit" \
    --requirement constraints.txt --no-deps --disable-pip --strict \
    --vulnerability-service "$SERVICE" --progress-spinner off --desc on \
    "${ignores[@]}"
