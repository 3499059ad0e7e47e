#!/usr/bin/env bash
# Install what the dashboard browser tests need: Debian's Chromium (apt). The tests drive it through its
# DevTools protocol with websocket-client (pinned in requirements.txt). Idempotent; no browser build is
# ever downloaded.
#
#   bash scripts/install-browser.sh
set -euo pipefail

sudo_=""
[ "$(id -u)" -eq 0 ] || sudo_="sudo"

if ! command -v chromium >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    $sudo_ apt-get update -qq
    $sudo_ apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

chromium --version
