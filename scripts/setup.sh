#!/usr/bin/env bash
# Sets flowhawk up on this machine and runs the main job on the embedded demo:
# installs the Debian helpers and a virtual environment (.venv) with flowhawk,
# then analyzes two simulated days of a small company network into out/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
.venv/bin/flowhawk demo --out out/demo
echo
echo "Done. Try:  .venv/bin/flowhawk sql \"SELECT src_ip, dst_ip, dst_port, risk, methods FROM events ORDER BY risk DESC LIMIT 10\" --data out/demo"
