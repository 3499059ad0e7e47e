#!/usr/bin/env bash
# Print requirements.txt without its development and tests section (from the line "# development and tests" to
# the end): what the production image installs. Fails if the marker is missing, so the section cannot silently
# slip into the image. Checked by tests/unit/test_compose.py.
set -euo pipefail
file="${1:?usage: runtime-requirements.sh requirements.txt}"
marker="# development and tests"
grep -qxF "$marker" "$file" || { echo "runtime-requirements.sh: no '$marker' line in $file" >&2; exit 1; }
sed "/^${marker}\$/,\$d" "$file"
