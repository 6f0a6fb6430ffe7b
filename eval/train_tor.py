"""Write M26's shape-model parameters (src/flowhawk/detectors/tor_model.json) from the data.

What there is to learn from (../shared/data, read with flowhawk's own readers):

* Tor traffic: the nDPI capture ``conformance/ndpi_pcaps/pcap/tor.pcap`` only: 7 TLS
  connections of one Tor client to 5 relays on port 443 (nDPI labels 3 of them Tor by
  DPI; the other 4 share the client's TLS fingerprint and Tor's random ``www.<x>.com``
  names). No other input holds Tor that anything labels.
* Relay-list labels: the 2024 relay lists (``intel/tor``) match 4 flows of all the
  captures, none of them Tor-shaped (UDP to a port-21301 peer that is a relay today; a
  relay address fetching a honeypot's web page). The captures are years older than the
  lists, so most relays they met are not listed, and listed addresses did other things.

That is far too little Tor to fit a supervised model honestly, so the weights are not
fitted: they follow the protocol (:data:`PRIOR`, see ``tor_model.py``). What this script
learns from data is the alarm threshold: the lowest shape score that at most
:data:`FALSE_ALARM_RATE` of the TCP flows of the *tuning* inputs (half of the inputs,
chosen by a hash of their path) reach, and never below :data:`FLOOR`. The other half
and the Tor capture are left for eval/eval_tor.py. The relay-list split (relay addresses
halved by hash) is printed so its emptiness can be checked.

Run:  .venv/bin/python eval/train_tor.py [--data ../shared/data] [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
from pathlib import Path

import polars as pl

from flowhawk import config
from flowhawk.detectors.tor_model import MODEL_FILE, ShapeModel
from flowhawk.diagnostics import Diagnostics
from flowhawk.normalize import Normalizer
from flowhawk.pipeline import read_inputs

INPUTS = (
    "labeled",
    "conformance/ndpi_pcaps/pcap",
    "conformance/dpkt_pcaps",
    "conformance/tcpdump_sflow_dns",
)
TOR_CAPTURE = "conformance/ndpi_pcaps/pcap/tor.pcap"
TOR_RESULT = "conformance/ndpi_pcaps/result/tor.pcap.out"
RELAY_LISTS = ("intel/tor/tor-nodes.lst", "intel/tor/tor-exit-nodes.lst")
FALSE_ALARM_RATE = 0.001
FLOOR = 0.5
PRIOR = {
    "bias": -6.0,
    "ports": {"relay": [9001, 9030], "socks": [9050, 9150], "tls": [443]},
    "port_weights": {"relay": 4.0, "socks": 3.0, "tls": 0.0, "other": -1.0},
    "weights": {"cells": 1.25, "long": 1.5, "busy": 0.75, "two_way": 0.75},
    "cell_band": [180.0, 720.0],
    "long_seconds": 600.0,
    "busy_packets": 200.0,
    "min_packets": 4,
}


def half(key: str) -> int:
    """0 or 1, fixed by the key's SHA-256 (the split of inputs and of relay addresses)."""
    return hashlib.sha256(key.encode()).digest()[0] & 1


def load_flows(data: Path) -> pl.DataFrame:
    """Canonical flows of every readable flow input, ``input`` relative to ``data``."""
    cfg = config.load(None)
    diag = Diagnostics()
    norm = Normalizer(cfg, diag)
    frames = []
    for name, tables in read_inputs([data / p for p in INPUTS], cfg, diag):
        try:
            frames += [pl.from_arrow(norm.process(t)) for t in tables]
        except Exception:  # a file that looks like a flow log but is not one
            continue
        frames.append(pl.from_arrow(norm.end_input(name)[0]))
    flows = pl.concat([f for f in frames if f.height], how="vertical_relaxed")  # type: ignore[misc]
    prefix = str(data) + "/"
    return flows.with_columns(pl.col("input").str.strip_prefix(prefix))


def tor_endpoints(data: Path) -> set[tuple[str, int, str, int]]:
    """(client, port, server, port) of the Tor connections in the nDPI capture: nDPI's
    Tor label, or the TLS client fingerprint of those flows with a random www name."""
    rows = []
    line_re = re.compile(r"TCP (\S+):(\d+) <-> (\S+):(\d+) \[proto: [\d.]+/([\w.]+)\]")
    for line in (data / TOR_RESULT).read_text().splitlines():
        m = line_re.search(line)
        if m:
            ja3 = re.search(r"JA3C: (\w+)", line)
            sni = re.search(r"Hostname/SNI: ([^\]]+)", line)
            rows.append((m.groups(), ja3.group(1) if ja3 else "", sni.group(1) if sni else ""))
    tor_ja3 = {j for (*_, proto), j, _ in rows if "Tor" in proto}
    random_name = re.compile(r"^www\.[a-z2-7]{5,}\.(com|net)$")
    return {
        (c, int(cp), s, int(sp))
        for (c, cp, s, sp, proto), j, n in rows
        if "Tor" in proto or (j in tor_ja3 and random_name.match(n))
    }


def relays(data: Path) -> set[str]:
    return {a for f in RELAY_LISTS for a in (data / f).read_text().split() if a[0].isalnum()}


def labeled(data: Path) -> pl.DataFrame:
    """Every flow with ``tor`` (the nDPI capture's Tor connections), ``listed`` (a side
    is a listed relay, with its address ``relay``) and ``part`` (tune/holdout/tor)."""
    flows = load_flows(data)
    tor = pl.DataFrame(
        list(tor_endpoints(data)),
        schema={
            "src_ip": pl.String,
            "src_port": pl.Int32,
            "dst_ip": pl.String,
            "dst_port": pl.Int32,
        },
        orient="row",
    ).with_columns(tor=pl.lit(True), input=pl.lit(TOR_CAPTURE))
    flows = flows.join(tor, on=["input", "src_ip", "src_port", "dst_ip", "dst_port"], how="left")
    listed = list(relays(data))
    relay = (
        pl.when(pl.col("dst_ip").is_in(listed))
        .then(pl.col("dst_ip"))
        .when(pl.col("src_ip").is_in(listed))
        .then(pl.col("src_ip"))
    )
    inputs = flows.get_column("input").unique().to_list()
    parts = {i: ("tor" if i == TOR_CAPTURE else ("tune", "holdout")[half(i)]) for i in inputs}
    return flows.with_columns(
        tor=pl.col("tor").fill_null(False),
        relay=relay,
        part=pl.col("input").replace_strict(parts, return_dtype=pl.String),
    ).with_columns(listed=pl.col("relay").is_not_null())


def threshold(scores: pl.Series) -> float:
    """The lowest score (2 decimals) reached by at most FALSE_ALARM_RATE of ``scores``."""
    allowed = math.floor(FALSE_ALARM_RATE * scores.len())
    ranked = scores.sort(descending=True)
    level = ranked[allowed] if allowed < ranked.len() else 0.0
    return max(FLOOR, math.floor(level * 100 + 1) / 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=MODEL_FILE)
    args = ap.parse_args()
    logging.getLogger("flowhawk").setLevel(logging.ERROR)
    flows = labeled(args.data.resolve())
    print(f"flows read: {flows.height:,} from {flows.get_column('input').n_unique()} inputs")
    print(f"Tor connections in {TOR_CAPTURE}: {int(flows.get_column('tor').sum())}")
    hits = flows.filter(pl.col("listed")).with_columns(
        relay_part=pl.col("relay").map_elements(half, return_dtype=pl.Int64)
    )
    print("flows with a listed relay on either side, by relay-address half (0 train, 1 test):")
    print(hits.select("relay_part", "input", "src_ip", "dst_ip", "dst_port", "proto"))
    tune = flows.filter((pl.col("part") == "tune") & ~pl.col("listed") & (pl.col("proto") == 6))
    prior = ShapeModel.from_dict({**PRIOR, "threshold": 1.0})
    level = threshold(prior.score(tune))
    model = ShapeModel.from_dict({**PRIOR, "threshold": level})
    doc = {
        "about": "M26 Tor flow-shape model; written by eval/train_tor.py, read by tor_model.py",
        "model": model.to_dict(),
        "provenance": {
            "weights": "set from the protocol, not fitted (too little labeled Tor traffic)",
            "threshold": f"lowest score at most {FALSE_ALARM_RATE} of tuning TCP flows reach",
            "tuning_inputs": int(tune.get_column("input").n_unique()),
            "tuning_tcp_flows": tune.height,
        },
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"tuning TCP flows: {tune.height:,}; threshold {level:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
