#!/usr/bin/env bash
# Runs the whole test suite (lint included) the way CI does; sets up first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
.venv/bin/ruff check src tests bench eval
.venv/bin/ruff format --check --quiet src tests bench eval
exec .venv/bin/python -m pytest -q "$@"
