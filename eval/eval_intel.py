"""Threat intelligence on real flows: M26-M29 and hop context on every labeled capture.

Loads the real feeds under ../shared/data/intel once (public feeds, Tor relay and exit
lists, maltrail's static trails), then runs ``analyze`` (default configuration) over each
Zeek conn.log under ../shared/data/labeled (with the dns.log beside it, if any: passive
DNS lets M27 match domain indicators) and each of Slips' other flow inputs. Prints per
capture: flows, DNS transactions, alarms of M26-M29, distinct listed addresses, events
with an east-west hop graph and with relays; where the capture has per-flow labels, how
many of the flows that an intelligence method (M26-M29) marked are labeled malicious (the
labels are the captures' own, from their netflowlabeler rules; nothing here was tuned on
them).

Run:  .venv/bin/python eval/eval_intel.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl
from eval_labeled import labels_of

from flowhawk import config, intelstore
from flowhawk.intel import IntelSet, load
from flowhawk.pipeline import run

INTEL_METHODS = ("M26", "M27", "M28", "M29")
FEEDS = [
    "intel/public_feeds",
    "intel/tor/tor-nodes.lst",
    "intel/tor/tor-exit-nodes.lst",
    "intel/maltrail/trails_static",
]


def evaluate(path: Path, intel: IntelSet, data: Path) -> dict[str, object]:
    cfg = config.from_dict({})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        intelstore.save_current(intel, work)  # the run detects with the snapshot
        dns = sorted(path.parent.glob("dns.log*")) if "conn" in path.name else []
        result = run([path, *dns], cfg, work, work)
        events = [json.loads(line) for line in (work / "events.jsonl").open()]
        scores = pl.read_csv(work / "flow_scores.csv", schema_overrides={"flow_id": pl.String})
    alarms = result.alarms
    counts = {m: alarms.filter(pl.col("method") == m).height for m in INTEL_METHODS}
    listed = alarms.filter(pl.col("method") == "M27").get_column("entity").n_unique()
    row: dict[str, object] = {
        "capture": path.name
        if path.name.startswith("test")
        else path.parent.name
        if path.parent.name != "data"
        else path.parent.parent.name,
        "flows": result.flows,
        "dns": result.dns,
        **counts,
        "listed": listed,
        "risky_ns_events": sum(
            1
            for e in events
            if e["direction"] == "north-south" and {"M28", "M29"} & set(e["methods"])
        ),
        "with_hops": sum(1 for e in events if e.get("hops")),
        "with_relays": sum(1 for e in events if e.get("relays")),
    }
    if "labeled" in path.name:  # the captures with per-flow labels
        labels = labels_of(path)
        marked = scores.filter(pl.col("methods").str.contains("|".join(INTEL_METHODS))).join(
            labels, left_on="flow_id", right_on="uid", how="inner"
        )
        row["marked_flows"] = marked.height
        row["marked_malicious"] = marked.filter(pl.col("label") == "Malicious").height
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    ap.add_argument("--data", type=Path, default=default)
    args = ap.parse_args()
    t0 = time.perf_counter()
    intel = load([args.data / f for f in FEEDS])
    print(f"intel: {len(intel):,} indicators from {len(FEEDS)} feeds and folders in "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    captures = sorted(
        p
        for p in (args.data / "labeled").rglob("*conn*.log*")
        if not (p.name == "conn.log" and (p.parent / "labeled-conn.log").exists())
    )
    # Slips' other flow inputs: nfdump, Argus binetflow, Suricata eve.json, captures
    slips = args.data / "labeled/slips_dataset/dataset_HEAD"
    captures += sorted(p for p in slips.glob("test*") if p.is_file())
    rows = [evaluate(p, intel, args.data) for p in captures]
    table = pl.DataFrame(rows)
    with pl.Config(tbl_cols=-1, tbl_rows=-1, tbl_width_chars=220):
        print(table)
    totals = table.select(pl.exclude("capture").sum())
    print("totals:", totals.to_dicts()[0])


if __name__ == "__main__":
    main()
