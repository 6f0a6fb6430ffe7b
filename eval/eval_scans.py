"""N6 (scans) and N7 (long connections) on real captures: scan captures and normal days.

Every input is read with flowhawk's own readers and normalizer (default configuration:
RFC 1918 internal), then N6 and N7 run with their default settings over the flows in
hour batches, as ``analyze`` feeds them, *without* a learning period (these captures are
single short recordings; with nothing learned, every alarm is shown).

Scan captures and the truth used for each (from the capture's README or file name; the
target counts are then measured on the capture's own flows from that scanner, so they
say what there was to find, not what N6 found):

* ``002-zeek-scenario-port-scanning``: README: "one client 172.16.1.11 performing
  multiple scans using Nmap in different local networks"; scanner 172.16.1.11;
* Slips ``port-scans/horizontal``: the folder name; the one source, 10.0.2.112, and its
  port-80 attempts (10 unanswered, 14 answered among 24 addresses);
* Slips ``port-scans/vertical``: the one source, 192.168.1.9, probing 45.33.32.156
  (scanme.nmap.org);
* Slips ``test11-portscan.binetflow``: the file name; the source 10.8.0.69 probing ports
  of 14.1.11.113;
* Slips ``test12-icmp-portscan.pcap``: the file name; 192.168.1.109's echo requests to
  192.168.1.0/24.

Printed per capture: flows, the true scanner's distinct targets per port and ports per
target (the largest), N6 alarms by kind with their numbers, scanners found, false
scanners (alarmed sources other than the true one), N7 alarms. For the two normal days
(008 and 010, CTU-Normal hosts attacked from the internet, per-flow labels from the
captures' netflowlabeler rules) it prints how many N6/N7 alarms a person would read, and
how many of the alarmed sources have flows labeled malicious. Nothing here was tuned on
these captures' labels; thresholds are the shipped defaults.

Run:  .venv/bin/python eval/eval_scans.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import polars as pl

from flowhawk import config
from flowhawk.detectors.base import Batch, DetectorContext
from flowhawk.detectors.longconn import LongConnection, LongConnSettings
from flowhawk.detectors.scan import Scan, ScanSettings
from flowhawk.diagnostics import Diagnostics
from flowhawk.netaddr import NetworkSet
from flowhawk.normalize import Normalizer
from flowhawk.pipeline import read_inputs

STRATO = "labeled/stratosphere_scenarios"
SLIPS = "labeled/slips_dataset/dataset_HEAD"
SCANS = [
    ("002-port-scanning", f"{STRATO}/002-zeek-scenario-port-scanning/conn.log", "172.16.1.11"),
    ("slips-horizontal", f"{SLIPS}/port-scans/horizontal/conn.log", "10.0.2.112"),
    ("slips-vertical", f"{SLIPS}/port-scans/vertical/conn.log", "192.168.1.9"),
    ("test11-portscan", f"{SLIPS}/test11-portscan.binetflow", "10.8.0.69"),
    ("test12-icmp-sweep", f"{SLIPS}/test12-icmp-portscan.pcap", "192.168.1.109"),
]
#: The normal days' hosts have public CTU addresses: their network is the internal one.
NORMAL = [
    ("008-mixed", f"{STRATO}/008-zeek-mixed/data/conn.log.labeled"),
    ("010-mixed", f"{STRATO}/010-zeek-mixed/data/conn.log.labeled"),
]
CTU = "147.32.0.0/16"


def load(path: Path, internal: list[str] | None = None) -> pl.DataFrame:
    """Canonical flows of one input, sorted by start (``internal``: more internal networks)."""
    cfg = config.load(None)
    if internal:
        cfg = config.from_dict({"network": {"internal": [*cfg.network.internal, *internal]}})
    diag = Diagnostics()
    norm = Normalizer(cfg, diag)
    frames = []
    for name, tables in read_inputs([path], cfg, diag):
        frames += [pl.from_arrow(norm.process(t)) for t in tables]
        frames.append(pl.from_arrow(norm.end_input(name)[0]))
    flows = pl.concat([f for f in frames if f.height], how="vertical_relaxed")  # type: ignore[misc]
    return flows.sort("ts_start", maintain_order=True)


def detect(flows: pl.DataFrame, internal: list[str] | None = None, **scan: float) -> pl.DataFrame:
    """N6 and N7 alarms over the flows in hour batches (no learning period); ``internal``
    replaces the internal networks, ``scan`` overrides N6 settings."""
    cfg = config.load(None)
    nets = NetworkSet([*cfg.network.internal, *(internal or [])])
    ctx = DetectorContext(nets, NetworkSet(cfg.network.local_scope))
    dets = [Scan(ScanSettings(**scan), ctx), LongConnection(LongConnSettings(), ctx)]
    hours = flows.with_columns(_h=pl.col("ts_start").dt.truncate("1h"))
    out = []
    for part in hours.partition_by("_h", maintain_order=True):
        batch = Batch(part.drop("_h"))
        out += [d.score(batch) for d in dets]
    alarms = pl.concat(out)
    return alarms.with_columns(
        kind=pl.when(pl.col("method") == "N7")
        .then(pl.lit("long"))
        .otherwise(pl.col("reason").str.extract(r"^([a-zA-Z ]+):", 1))
    )


def truth(flows: pl.DataFrame, scanner: str) -> str:
    """What the true scanner did, measured on the capture's flows."""
    own = flows.filter(pl.col("src_ip") == scanner)
    per_port = (
        own.group_by("proto", "dst_port")
        .agg(n=pl.col("dst_ip").n_unique())
        .sort("n", "dst_port", descending=[True, False])
    )
    per_dst = (
        own.filter(pl.col("proto") != 1)
        .group_by("dst_ip")
        .agg(n=pl.col("dst_port").n_unique())
        .sort("n", "dst_ip", descending=[True, False])
    )
    wide = per_port.filter(pl.col("n") >= 5).height
    deep = per_dst.filter(pl.col("n") >= 5).height
    top_port = per_port.row(0, named=True) if per_port.height else None
    top_dst = per_dst.row(0, named=True) if per_dst.height else None
    parts = [f"{own.height} flows from {scanner}"]
    if top_port:
        parts.append(
            f"most addresses on one port: {top_port['n']} on {top_port['dst_port']}/"
            f"{top_port['proto']}; ports with >= 5 addresses: {wide}"
        )
    if top_dst:
        parts.append(
            f"most ports of one address: {top_dst['n']} of {top_dst['dst_ip']}; "
            f"addresses with >= 5 ports: {deep}"
        )
    return "; ".join(parts)


def report_scan(name: str, path: Path, scanner: str, **scan: float) -> dict[str, object]:
    flows = load(path)
    alarms = detect(flows, **scan)
    n6 = alarms.filter(pl.col("method") == "N6")
    found = sorted(set(n6.get_column("src_ip").to_list()))
    if not scan:
        print(f"\n== {name}: {flows.height:,} flows; truth: {truth(flows, scanner)}")
    with pl.Config(tbl_rows=30, fmt_str_lengths=200, tbl_width_chars=220):
        if alarms.height and not scan:
            print(
                alarms.select("method", "ts", "src_ip", "dst_ip", "dst_port", "score", "observed")
            )
    return {
        "capture": name,
        "flows": flows.height,
        "scanner found": scanner in found,
        "horizontal": n6.filter(pl.col("kind") == "horizontal scan").height,
        "vertical": n6.filter(pl.col("kind") == "vertical scan").height,
        "sweeps": n6.filter(pl.col("kind").str.contains("sweep")).height,
        "false scanners": len([s for s in found if s != scanner]),
        "N7": alarms.filter(pl.col("method") == "N7").height,
    }


def labels(path: Path) -> pl.DataFrame:
    fields: list[str] = []
    with open(path) as fh:
        for line in fh:
            if line.startswith("#fields"):
                fields = line.rstrip("\n").split("\t")[1:]
                break
    df = pl.read_csv(path, separator="\t", comment_prefix="#", has_header=False,
                     new_columns=fields, infer_schema=False, quote_char=None)  # fmt: skip
    return df.select(pl.col("id.orig_h").alias("src_ip"), "label")


def report_normal(name: str, path: Path, **scan: float) -> dict[str, object]:
    flows = load(path, [CTU])
    alarms = detect(flows, [CTU], **scan)
    bad = set(
        labels(path).filter(pl.col("label").str.to_lowercase() == "malicious")
        .get_column("src_ip").unique().to_list()
    )  # fmt: skip
    if not scan:
        print(f"\n== {name}: {flows.height:,} flows, {len(bad)} sources with malicious flows")
    with pl.Config(tbl_rows=40, fmt_str_lengths=200, tbl_width_chars=220):
        if alarms.height and not scan:
            print(
                alarms.select("method", "ts", "src_ip", "dst_ip", "dst_port", "score", "observed")
            )
    n6 = alarms.filter(pl.col("method") == "N6")
    srcs = set(n6.get_column("src_ip").to_list())
    return {
        "capture": name,
        "flows": flows.height,
        "N6 alarms": n6.height,
        "N6 sources": len(srcs),
        "N6 sources labeled malicious": len(srcs & bad),
        "N7 alarms": alarms.filter(pl.col("method") == "N7").height,
        "N7 north-south": alarms.filter(
            (pl.col("method") == "N7") & (pl.col("direction") == "north-south")
        ).height,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    args = ap.parse_args()
    logging.getLogger("flowhawk").setLevel(logging.ERROR)
    scans = [report_scan(n, args.data / p, s) for n, p, s in SCANS]
    normal = [report_normal(n, args.data / p) for n, p in NORMAL]
    # the same at half the thresholds: what a more sensitive setting would add
    half = {"horizontal_threshold": 8.0, "vertical_threshold": 8.0}
    scans8 = [report_scan(n, args.data / p, s, **half) for n, p, s in SCANS]
    normal8 = [report_normal(n, args.data / p, **half) for n, p in NORMAL]
    with pl.Config(tbl_cols=-1, tbl_width_chars=220):
        print("\nscan captures (default thresholds, 16):")
        print(pl.DataFrame(scans))
        print("normal days (alarms a person would read; default thresholds):")
        print(pl.DataFrame(normal))
        print("scan captures at thresholds 8:")
        print(pl.DataFrame(scans8))
        print("normal days at thresholds 8:")
        print(pl.DataFrame(normal8))


if __name__ == "__main__":
    main()
