"""N5 (DNS tunneling) on real captures: the five tunnel tools, then false alarms.

Part 1: every capture under ../shared/data/dns/tunnel_pcaps (dns2tcp, dnscat2,
DNSExfiltrator, iodine, sods; one tool each, the capture's name is its label). Per
tool: the (client, registered domain) pairs that alarmed, their windows and scores,
and whether the tunnel's domain ranks first among the capture's pairs (pairs ranked
by the score of all their queries taken as one window, :meth:`DnsTunnel.summarize`).

Part 2: every other DNS input there is (every Zeek dns.log under ../shared/data/labeled
and every capture under ../shared/data/labeled and ../shared/data/conformance that
read_dns can read). Each input is its own run. Prints the alarmed pairs and says
which are tunnels: the nDPI test captures include four tunnel/exfiltration
captures, named for it; those are counted apart from the rest.

The detector runs with its default settings and the default internal networks,
fed hour by hour as ``analyze`` feeds it, and the end of each input closes its open
windows. "alarms" counts the alarms raised at a window's crossing (the detection);
a window that alarmed and went on is reported again, whole, when it closes: those
closing alarms are shown apart (their names and score). The defaults were chosen while looking at
part 1's captures (see eval/README.md): part 1 is not held out.

Run:  .venv/bin/python eval/eval_dns_tunnel.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import polars as pl
import pyarrow as pa

from flowhawk import config
from flowhawk.detectors.base import Batch, DetectorContext, empty_dns
from flowhawk.detectors.dns_tunnel import DnsTunnel, DnsTunnelSettings
from flowhawk.diagnostics import Diagnostics
from flowhawk.dns import dns_format, read_dns
from flowhawk.errors import FlowhawkError
from flowhawk.netaddr import NetworkSet
from flowhawk.sources.base import read_head

#: The tunnel domain each tool's capture uses.
TUNNEL_DOMAINS = {
    "dns2tcp": "hsc.fr",
    "dnscat2": "biillpi.com",
    "dnsextrator": "hsc.fr",
    "iodine": "biillpi.com",
    "sods": "hsc.fr",
}
#: Inputs of part 2 that hold DNS tunnels or exfiltration (by their names, checked by
#: reading their queries): nDPI's test captures.
KNOWN_TUNNELS = (
    "dns-tunnel-iodine.pcap",
    "bad-dns-traffic.pcap",  # dnscat2 under skullseclabs.org
    "dns_exfiltration.pcap",  # dnscat2 without a domain
    "dns-exf.pcap",
    "dns_long_domainname.pcap",
)


def detector() -> DnsTunnel:
    cfg = config.Config()
    context = DetectorContext(
        internal=NetworkSet(cfg.network.internal), local_scope=NetworkSet(cfg.network.local_scope)
    )
    return DnsTunnel(DnsTunnelSettings(), context)


def read(path: Path) -> pl.DataFrame:
    tables = list(read_dns(path, Diagnostics()))
    if not tables:
        return empty_dns()
    frame = pl.from_arrow(pa.concat_tables(tables))
    assert isinstance(frame, pl.DataFrame)
    return frame.sort("ts", maintain_order=True)


def run(dns: pl.DataFrame) -> pl.DataFrame:
    """Alarms of a fresh detector fed ``dns`` hour by hour, then the end of the input;
    ``closing``: the alarm reports a whole window that alarmed before."""
    det = detector()
    hours = dns.with_columns(_h=pl.col("ts").dt.truncate("1h"))
    parts = [det.score(Batch(pl.DataFrame(), dns=p.drop("_h"))) for p in hours.partition_by("_h")]
    if dns.height:
        parts.append(det.finish(dns.get_column("ts").min()))
    if not parts:
        return pl.DataFrame()
    alarms = pl.concat(parts)
    return alarms.with_columns(closing=pl.col("observed").str.contains(", the whole "))


def dns_inputs(data: Path) -> list[Path]:
    out = []
    for root in (data / "labeled", data / "conformance"):
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.parent.name == "result":
                continue
            try:
                kind = dns_format(read_head(path))
            except OSError:
                continue
            if kind == "pcap" or (kind is not None and path.name.startswith("dns.log")):
                out.append(path)
    return out


def part1(data: Path) -> None:
    print("Part 1: tunnel captures (../shared/data/dns/tunnel_pcaps)")
    print(
        f"| {'tool':<11} | queries | pairs | alarms | alarmed pairs (max score) "
        "| tunnel pair rank (whole-capture score) | closing alarms (names, score) |"
    )
    print("|---|---|---|---|---|---|---|")
    for path in sorted((data / "dns" / "tunnel_pcaps").glob("*.pcap")):
        dns = read(path)
        everything = run(dns)
        alarms = everything.filter(~pl.col("closing")) if everything.height else everything
        closing = everything.filter(pl.col("closing")) if everything.height else everything
        whole = ", ".join(
            f"{r['observed_value']:.0f}, {r['score']:.2f}" for r in closing.iter_rows(named=True)
        )
        ranked = detector().summarize(dns).with_row_index("rank", offset=1)
        tool = path.stem
        mine = ranked.filter(pl.col("domain") == TUNNEL_DOMAINS[tool])
        rank = (
            f"{mine['rank'][0]} of {ranked.height} ({mine['score'][0]:.2f})"
            if mine.height
            else "not found"
        )
        pairs = "-"
        if alarms.height:
            by = (
                alarms.with_columns(
                    domain=pl.col("observed").str.extract(r"subdomains of (\S+) in")
                )
                .group_by("src_ip", "domain")
                .agg(pl.col("score").max(), k=pl.len())
            )
            pairs = "; ".join(
                f"{r['src_ip']} {r['domain']} ({r['score']:.2f}, {r['k']} windows)"
                for r in by.sort("src_ip", "domain").iter_rows(named=True)
            )
        print(
            f"| {tool:<11} | {dns.height} | {ranked.height} | {alarms.height} | {pairs} | {rank} "
            f"| {whole or '-'} |"
        )
    print()


def part2(data: Path) -> None:
    print("Part 2: other DNS inputs (labeled/ and conformance/), each its own run")
    inputs = dns_inputs(data)
    rows, alarmed, total_pairs, n_dns, with_dns, closings = [], [], 0, 0, 0, 0
    t0 = time.perf_counter()
    for path in inputs:
        try:
            dns = read(path)
        except FlowhawkError:
            continue
        if dns.height == 0:
            continue
        with_dns += 1
        n_dns += dns.height
        pairs = detector().summarize(dns)
        total_pairs += pairs.height
        alarms = run(dns)
        tunnel = path.name in KNOWN_TUNNELS
        if alarms.height:
            closings += alarms.filter(pl.col("closing")).height
            for r in alarms.filter(~pl.col("closing")).iter_rows(named=True):
                alarmed.append(
                    {
                        "input": str(path.relative_to(data)),
                        "tunnel": tunnel,
                        "client": r["src_ip"],
                        "score": round(r["score"], 2),
                        "observed": r["observed"][:110],
                    }
                )
        top = pairs.head(1)
        if top.height:
            rows.append(
                {
                    "input": str(path.relative_to(data)),
                    "tunnel": tunnel,
                    "top pair": f"{top['client'][0]} {top['domain'][0]}",
                    "e": top["e"][0],
                    "score": round(top["score"][0], 2),
                }
            )
    took = time.perf_counter() - t0
    print(
        f"inputs read: {len(inputs)}, with DNS: {with_dns}, transactions: {n_dns:,}, "
        f"(client, domain) pairs: {total_pairs:,}; {took:.1f} s"
    )
    print(f"closing alarms (windows that alarmed, reported whole): {closings}")
    df = pl.DataFrame(alarmed)
    with pl.Config(tbl_rows=60, tbl_width_chars=200, fmt_str_lengths=110):
        if df.height:
            summary = df.group_by("tunnel").agg(
                alarms=pl.len(),
                pairs=pl.struct("input", "client").n_unique(),
                inputs=pl.col("input").n_unique(),
            )
            print("alarms by whether the input is a known tunnel capture:")
            print(summary.sort("tunnel"))
            print("every alarm:")
            print(df.sort("tunnel", "input"))
        else:
            print("no alarms")
        print("highest whole-input pair score of each input that did not alarm (top 15):")
        quiet = pl.DataFrame(rows).filter(
            ~pl.col("input").is_in(df.get_column("input").implode()) if df.height else pl.lit(True)
        )
        print(quiet.sort("score", descending=True).head(15))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args()
    logging.getLogger("flowhawk").setLevel(logging.ERROR)
    data = args.data.resolve()
    part1(data)
    part2(data)


if __name__ == "__main__":
    main()
