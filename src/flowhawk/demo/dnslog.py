"""The demo's DNS: what the Acme resolver saw, as a Zeek dns.log.

Every simulated DNS flow from a workstation to the company resolver becomes one
transaction: ordinary lookups of the web sites the office uses (their answers are the
web servers' addresses, so passive DNS names them), the odd AAAA without an answer
and reverse lookups of internal hosts. Two incidents add their own DNS:

* patient zero's malware looks for its C2 server through a domain generation
  algorithm shortly before it starts beaconing: forty random-looking names that do not
  exist (NXDOMAIN), then one that answers with the C2 address;
* the DNS tunneler's queries carry base32-encoded data in long labels under one
  domain, answered with TXT records.

All names are made up; the registered domains use real top-level domains so the
Public Suffix List treats them as a user's resolver would.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

#: Brand-like labels and services of the web sites the office visits.
_BRANDS = [
    "acmecorp", "globex", "initech", "umbrella", "contoso", "fabrikam", "northwind",
    "tailspin", "wingtip", "litware", "adatum", "woodgrove", "proseware", "lucerne",
    "fourthcoffee", "margiestravel", "blueyonder", "coho", "alpineski", "wideworld",
]  # fmt: skip
_SERVICES = ["www", "mail", "news", "docs", "portal", "cdn", "login", "api", "shop"]
_TLDS = ["com", "net", "org", "io", "co.uk", "de"]
#: The registered domain of the DNS tunnel (its queries are ``<data>.<n>.t.<domain>``).
TUNNEL_DOMAIN = "cloudsync-telemetry.net"
_INTERNAL_ZONE = "corp.acme.example"

COLUMNS = [
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "trans_id",
    "rtt", "query", "qclass", "qclass_name", "qtype", "qtype_name", "rcode", "rcode_name",
    "AA", "TC", "RD", "RA", "Z", "answers", "TTLs", "rejected",
]  # fmt: skip
TYPES = [
    "time", "string", "addr", "port", "addr", "port", "enum", "count", "interval", "string",
    "count", "string", "count", "string", "count", "string", "bool", "bool", "bool", "bool",
    "count", "vector[string]", "vector[interval]", "bool",
]  # fmt: skip


def site_names(web: list[str]) -> dict[str, str]:
    """A made-up host name for every web server address (stable for the same list)."""
    names = {}
    for i, ip in enumerate(web):
        service = _SERVICES[i % len(_SERVICES)]
        brand = _BRANDS[(i * 7) % len(_BRANDS)]
        tld = _TLDS[(i // len(_BRANDS)) % len(_TLDS)]
        names[ip] = f"{service}.{brand}.{tld}"
    return names


def _random_labels(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[str]:
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    out = []
    for length in rng.integers(lo, hi + 1, size=n):
        out.append(letters[rng.integers(0, 26, size=int(length))].tobytes().decode())
    return out


def transactions(
    frame: pl.DataFrame,
    *,
    web: list[str],
    resolver: str,
    dga_host: str,
    c2: str,
    dga_at: datetime,
    seed: int,
) -> pl.DataFrame:
    """The demo's DNS transactions (Zeek dns.log columns), from the simulated flows
    (``frame``: :func:`flowhawk.demo.simulate.generate_frame` with its ``stream`` column)."""
    rng = np.random.default_rng(seed + 53)
    lookups = frame.filter(pl.col("stream") == "dns").sort("ts_start", maintain_order=True)
    n = lookups.height
    names = site_names(web)
    hosts = list(names.values())
    ranks = 1.0 / np.arange(1, len(hosts) + 1) ** 1.1
    pick = rng.choice(len(hosts), size=n, p=ranks / ranks.sum())
    kind = rng.random(n)  # 85 % A, 10 % AAAA (no answer), 5 % reverse lookups
    query = np.array(hosts, dtype=object)[pick]
    addr = np.array(list(names), dtype=object)[pick]
    octet = rng.integers(10, 40, size=n)
    ptr = kind >= 0.95
    aaaa = (kind >= 0.85) & ~ptr
    query[ptr] = [f"{o}.1.10.10.in-addr.arpa" for o in octet[ptr]]
    answers = [
        [f"ws{o}.{_INTERNAL_ZONE}"] if p else ([] if a6 else [a])
        for a, o, p, a6 in zip(addr, octet, ptr, aaaa, strict=True)
    ]
    normal = lookups.select(
        ts=pl.col("ts_start"),
        orig_h=pl.col("src_ip"),
        orig_p=pl.col("src_port"),
        resp_h=pl.col("dst_ip"),
        query=pl.Series(query.tolist(), dtype=pl.String),
        qtype=pl.Series(np.where(ptr, 12, np.where(aaaa, 28, 1)).tolist(), dtype=pl.Int64),
        rcode=pl.lit(0, pl.Int64),
        answers=pl.Series(answers, dtype=pl.List(pl.String)),
        ttl=pl.lit(300.0),
    )
    parts = [normal, _tunnel(frame, rng), _dga(rng, dga_host, resolver, c2, dga_at)]
    dns = pl.concat(parts, how="vertical_relaxed").sort("ts", "orig_h", maintain_order=True)
    qtype_names = {1: "A", 12: "PTR", 16: "TXT", 28: "AAAA"}
    return dns.select(
        "ts",
        uid=pl.lit(None, pl.String),
        **{
            "id.orig_h": pl.col("orig_h"),
            "id.orig_p": pl.col("orig_p"),
            "id.resp_h": pl.col("resp_h"),
            "id.resp_p": pl.lit(53, pl.Int64),
        },
        proto=pl.lit("udp"),
        trans_id=pl.int_range(pl.len(), dtype=pl.Int64) % 65536,
        rtt=pl.lit(0.004),
        query="query",
        qclass=pl.lit(1, pl.Int64),
        qclass_name=pl.lit("C_INTERNET"),
        qtype="qtype",
        qtype_name=pl.col("qtype").replace_strict(qtype_names, return_dtype=pl.String),
        rcode="rcode",
        rcode_name=pl.when(pl.col("rcode") == 3)
        .then(pl.lit("NXDOMAIN"))
        .otherwise(pl.lit("NOERROR")),
        AA=pl.lit(False),
        TC=pl.lit(False),
        RD=pl.lit(True),
        RA=pl.lit(True),
        Z=pl.lit(0, pl.Int64),
        answers="answers",
        TTLs=pl.col("answers").list.eval(pl.element().str.len_bytes() * 0.0) + pl.col("ttl"),
        rejected=pl.lit(False),
    )


def _tunnel(frame: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """One TXT query per tunnel flow: 30-40 bytes of data, base32 in a long label."""
    flows = frame.filter(pl.col("stream") == "dns-tunnel").sort("ts_start", maintain_order=True)
    data = [rng.bytes(int(k)) for k in rng.integers(30, 41, size=flows.height)]
    labels = [base64.b32encode(d).decode().rstrip("=").lower() for d in data]
    query = [f"{lab}.{i}.t.{TUNNEL_DOMAIN}" for i, lab in enumerate(labels)]
    reply = [base64.b64encode(rng.bytes(48)).decode() for _ in labels]
    return flows.select(
        ts=pl.col("ts_start"),
        orig_h=pl.col("src_ip"),
        orig_p=pl.col("src_port"),
        resp_h=pl.col("dst_ip"),
        query=pl.Series(query, dtype=pl.String),
        qtype=pl.lit(16, pl.Int64),
        rcode=pl.lit(0, pl.Int64),
        answers=pl.Series([[r] for r in reply], dtype=pl.List(pl.String)),
        ttl=pl.lit(0.0),
    )


def _dga(
    rng: np.random.Generator, host: str, resolver: str, c2: str, at: datetime, tries: int = 40
) -> pl.DataFrame:
    """``tries`` random names that do not exist over five minutes, then one that does."""
    tlds = np.array(["com", "net", "org", "biz", "info"])
    labels = _random_labels(rng, tries + 1, 10, 16)
    names = [f"{lab}.{tlds[i % len(tlds)]}" for i, lab in enumerate(labels)]
    times = sorted(at + timedelta(seconds=float(s)) for s in rng.uniform(0, 290, size=tries))
    times.append(at + timedelta(seconds=295))
    ts = pl.Series(times, dtype=pl.Datetime("us", "UTC"))
    return pl.DataFrame(
        {
            "ts": ts,
            "orig_h": [host] * (tries + 1),
            "orig_p": rng.integers(49152, 65535, size=tries + 1).astype(np.int64),
            "resp_h": [resolver] * (tries + 1),
            "query": names,
            "qtype": [1] * (tries + 1),
            "rcode": [3] * tries + [0],
            "answers": [[] for _ in range(tries)] + [[c2]],
            "ttl": [300.0] * (tries + 1),
        },
        schema_overrides={"answers": pl.List(pl.String)},
    ).with_columns(pl.col("orig_p").cast(pl.Int32))


def write_dns_log(dns: pl.DataFrame, path: Path) -> None:
    """Write :func:`transactions` as a Zeek dns.log (TSV with Zeek's header)."""

    def vector(col: str, fmt: pl.Expr) -> pl.Expr:
        joined = pl.col(col).list.eval(fmt).list.join(",")
        return pl.when(pl.col(col).list.len() == 0).then(pl.lit("-")).otherwise(joined)

    def flag(col: str) -> pl.Expr:
        return pl.when(pl.col(col)).then(pl.lit("T")).otherwise(pl.lit("F"))

    text = dns.select(
        ts=pl.concat_str(
            pl.col("ts").dt.epoch("us") // 1_000_000,
            pl.lit("."),
            (pl.col("ts").dt.epoch("us") % 1_000_000).cast(pl.String).str.zfill(6),
        ),
        uid=pl.col("uid").fill_null("-"),
        **{c: pl.col(c).cast(pl.String) for c in ("id.orig_h", "id.orig_p", "id.resp_h")},
        **{c: pl.col(c).cast(pl.String) for c in ("id.resp_p", "proto", "trans_id")},
        rtt=pl.col("rtt").cast(pl.String),
        query=pl.col("query"),
        **{c: pl.col(c).cast(pl.String) for c in COLUMNS[10:16]},
        **{c: flag(c) for c in ("AA", "TC", "RD", "RA")},
        Z=pl.col("Z").cast(pl.String),
        answers=vector("answers", pl.element()),
        TTLs=vector("TTLs", pl.element().cast(pl.String)),
        rejected=flag("rejected"),
    )
    header = [
        "#separator \\x09",
        "#set_separator\t,",
        "#empty_field\t(empty)",
        "#unset_field\t-",
        "#path\tdns",
        "#fields\t" + "\t".join(COLUMNS),
        "#types\t" + "\t".join(TYPES),
    ]
    with open(path, "w") as fh:
        fh.write("\n".join(header) + "\n")
        text.write_csv(fh, separator="\t", include_header=False, quote_style="never")
        fh.write("#close\n")
