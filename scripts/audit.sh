#!/usr/bin/env bash
# pip-audit over constraints.txt (the full lock). Exit status:
#   0  every pinned package audited, no known vulnerability outside audit-ignore.txt ("<ID> <reason>" lines)
#   1  a known vulnerability, or some packages could not be audited (a partial audit is not a pass)
#   3  the audit could not run at all: the vulnerability service answered for none of the packages
# so an unreachable database is never a silent pass. .ci/run fails on 1 and prints a warning on 3.
# See docs/security.md.
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

# --no-deps --disable-pip: constraints.txt pins every package, nothing to resolve. No --strict: the JSON report
# below tells "not audited" from "vulnerable" (pip-audit's own exit status mixes them).
report="$(mktemp)"
trap 'rm -f "$report" "$report.err"' EXIT
set +e
"$AUDIT_VENV/bin/pip-audit" \
    --requirement constraints.txt --no-deps --disable-pip \
    --vulnerability-service "$SERVICE" --progress-spinner off --desc on --format json --output "$report" \
    "${ignores[@]}" 2>"$report.err"
set -e
"$PYTHON" scripts/audit_report.py "$report" "$report.err" "$SERVICE"
