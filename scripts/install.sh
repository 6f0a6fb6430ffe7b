#!/usr/bin/env bash
# Installs what flowhawk and its tests need, idempotently: the Debian programs used
# as peers and helpers (nfdump for nfdump files and as a collector/capture peer,
# softflowd and pmacct as real exporters, tcpdump for live capture, tshark/capinfos as
# test oracles, rsyslog as the receiver the syslog outputs are tested against, chromium
# for the web UI's browser tests, driven by Playwright without a browser download,
# mmdb-bin's mmdblookup as the GeoIP oracle, nginx as a real relaying web server, tor
# for the private Tor network M26 is trained and tested on), a
# virtual environment in .venv, and flowhawk itself in editable mode with its
# development extras.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
APT_PACKAGES=(nfdump softflowd tcpdump pmacct tshark rsyslog rsyslog-gnutls openssl chromium mmdb-bin nginx-light tor)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
  else
    echo "note: not root; flowhawk works without ${missing[*]}, but some inputs and tests need them" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.flowhawk-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # (the grep hides pip's notes about unused local index locations; pip's status is kept)
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | { grep -v '^WARNING: Location' || true; }
  .venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | { grep -v '^WARNING: Location' || true; }
  .venv/bin/python -c 'import flowhawk' && touch "$stamp"
fi

# Real GeoIP/ASN databases for [context] geoip and its tests (scripts/fetch-geoip.sh:
# DB-IP country lite, GeoLite2 ASN, into ~/.cache/flowhawk/geoip); best effort, never
# failing setup: without them the tests that need them fetch again or say why they skip.
./scripts/fetch-geoip.sh country asn >/dev/null 2>&1 \
  || echo "note: GeoIP databases not fetched (scripts/fetch-geoip.sh country asn)" >&2
