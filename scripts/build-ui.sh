#!/usr/bin/env bash
# Builds the web UI (ui/) into src/flowhawk/serve/ui/, where `flowhawk serve` serves it
# from the Python package: the built files are committed, so installing flowhawk needs
# no Node. Needs Node >= 18 and npm; libraries come from ui/package-lock.json exactly
# (npm ci), and the same lockfile and sources give the same output bytes.
set -euo pipefail
cd "$(dirname "$0")/../ui"

command -v npm >/dev/null || { echo "build-ui: npm is missing (apt-get install npm)" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error
node build.mjs
