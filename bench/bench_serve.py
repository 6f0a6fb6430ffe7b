"""Service benchmark: the input rate ``flowhawk serve`` sustains, nfcapd measured beside it.

The exporter is the demo network as the fault tests send it (``tests/serve/load.py``):
day one (learning) once, then day two again and again, each round one day later, as
IPFIX over 127.0.0.1 (about two records per flow: one per direction). The service runs
as a user runs it (``python -m flowhawk serve``, the demo's configuration, every default
detector), with ``--rollover`` and ``--checkpoint`` (default 1 s each, as the tests).

1. Capacity: a fresh service learns day one, then receives day-two rounds far faster
   than it detects (``--flood`` flows/s) for ``--seconds``; the flows detection got
   through per second while its queue never emptied is its capacity. Detection, not the
   collector, is the limit: the behavioral models retrain on a fixed grid of event time
   (the slowest once per event day, about 10 s here), and a replay crosses an event day
   every few seconds.
2. Sustained: a fresh service receives day-two rounds at ``--share`` (default 0.9) of
   that capacity for ``--seconds``; lossless means every datagram sent was received
   (no kernel drops), detection skipped nothing, and it caught up within
   ``--catch-up`` seconds after the sender stopped (its backlog did not build up).
3. Peer: nfcapd (``-B 32 MiB``) storing the same IPFIX exports: its highest lossless
   record rate (``bench_collect.py``'s method: 12 s of sending, doubling then
   bisecting), converted to flows/s. nfcapd only stores; flowhawk also normalizes,
   archives, detects and stores events, so the ratio says what detection costs.

Prints flows/s (and records/s), peak RSS, the catch-up time and the peer's figures.

Run:  .venv/bin/python bench/bench_serve.py [--seconds 45] [--flood 20000] [--share 0.9]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from bench_collect import highest_lossless, nfcapd_lossless, raise_rmem, write_feed  # noqa: E402
from tests.serve.load import DAY_US, Feed, RssSampler, Sender, metric_sum, metrics  # noqa: E402
from tests.serve.process import Served, wait_until  # noqa: E402

from flowhawk.collect.decode.base import ExporterState  # noqa: E402
from flowhawk.collect.decode.dispatch import ExportDecoder  # noqa: E402
from flowhawk.collect.replay import ExportSettings, ExportStream, shift_times  # noqa: E402


def service_config(rollover: float, checkpoint: float) -> dict[str, Any]:
    cfg = tomllib.loads(resources.files("flowhawk.demo").joinpath("demo.toml").read_text())
    cfg["collect"] = {
        "listen": ["127.0.0.1:0"],
        "rollover": f"{rollover}s",
        "checkpoint": f"{checkpoint}s",
    }
    cfg["serve"] = {"listen": "127.0.0.1:0"}
    return cfg


def _status(api: Any) -> dict[str, Any]:
    return api.get("/api/v1/status").json()


def _caught_up(api: Any) -> bool:
    st = _status(api)
    det = st["detection"]
    return det["queued_batches"] == 0 and det["flows"] >= st["collector"]["flows_archived"]


def trial(rate: float, seconds: float, args: argparse.Namespace) -> dict[str, Any]:
    """A fresh service learns day one, then gets day-two rounds at ``rate`` flows/s."""
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        served = Served(service_config(args.rollover, args.checkpoint), Path(tmp) / "data")
        served.start()
        feed = Feed()
        try:
            api = served.client()
            learn = Sender(feed, served.port, 40_000, 0, feed.learn_chunks - 1).start()
            learn.wait(120)
            wait_until(lambda: _caught_up(api), 300, "detection of the learning day", 0.5)
            detected0 = _status(api)["detection"]["flows"]
            sender = Sender(feed, served.port, rate, feed.learn_chunks, stream=learn.stream)
            behind = []  # (time, detected flows, waiting batches)
            with RssSampler(served.proc.pid) as rss:  # type: ignore[union-attr]
                began = time.monotonic()
                sender.start()
                while time.monotonic() - began < seconds:
                    time.sleep(1.0)
                    st = _status(api)["detection"]
                    behind.append((time.monotonic() - began, st["flows"], st["queued_batches"]))
                sent = sender.stop()
                ended = time.monotonic()
                try:
                    wait_until(lambda: _caught_up(api), args.catch_up, "catching up", 0.25)
                    caught = time.monotonic() - ended
                except AssertionError:
                    caught = None
            time.sleep(2.5)  # rollovers read the kernel's drop counters
            m = metrics(api.get("/api/v1/metrics").text)
            datagrams = learn.stats.datagrams + sent.datagrams
            received = metric_sum(m, "flowhawk_collector_datagrams_total")
            dropped = metric_sum(m, "flowhawk_collector_dropped_datagrams_total")
            skipped = metric_sum(m, "flowhawk_detection_skipped_flows")
            # still behind at the end: detection worked flat out the whole time
            capacity = (behind[-1][1] - detected0) / behind[-1][0] if behind[-1][2] else 0.0
            return {
                "rate": rate,
                "achieved": sent.rate,
                "records_per_flow": sent.records / sent.flows if sent.flows else 0.0,
                "flows": sent.flows,
                "datagrams": datagrams,
                "received": received,
                "dropped": dropped,
                "skipped": skipped,
                "caught_up": caught,
                "capacity": capacity,
                "rss_peak": rss.peak(),
                "lossless": (received, dropped, skipped) == (datagrams, 0, 0)
                and caught is not None,
            }
        finally:
            served.stop(timeout=300)


def nfcapd_peer(feed: Feed, rounds: int) -> tuple[float, float]:
    """nfcapd's highest lossless rate on the same IPFIX stream: (records/s, records/flow)."""
    stream = ExportStream(ExportSettings("ipfix"))
    datagrams: list[bytes] = []
    flows = 0
    for k in range(rounds):
        table = shift_times(feed.day2, k * DAY_US)
        datagrams += stream.encode(table).datagrams
        flows += table.num_rows
    decoder, state, counts = ExportDecoder(), ExporterState("x"), []
    for dg in datagrams:  # records per datagram, for the sender's pacing
        counts.append(decoder.decode([dg], [0], state).flows.num_rows)
    with tempfile.TemporaryDirectory(prefix="bench-serve-nfcapd-") as d:
        path = Path(d) / "feed"
        write_feed(datagrams, counts, path)
        rate = highest_lossless(nfcapd_lossless, path, 100_000)
    return rate, sum(counts) / flows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=45.0, help="sending time per trial")
    ap.add_argument("--flood", type=float, default=20_000, help="flows/s of the capacity trial")
    ap.add_argument("--share", type=float, default=0.9, help="sustained trial: share of capacity")
    ap.add_argument("--catch-up", type=float, default=15.0, help="seconds to catch up at most")
    ap.add_argument("--rollover", type=float, default=1.0)
    ap.add_argument("--checkpoint", type=float, default=1.0)
    ap.add_argument("--no-peer", action="store_true", help="skip nfcapd")
    args = ap.parse_args()
    print(raise_rmem())
    feed = Feed()
    print(
        f"demo network: day one {feed.day1.num_rows:,} flows (learning), day two "
        f"{feed.day2.num_rows:,} flows a round; rollover {args.rollover} s, checkpoint "
        f"{args.checkpoint} s",
        flush=True,
    )
    flood = trial(args.flood, args.seconds, args)
    print(f"capacity trial: {flood}", flush=True)
    capacity = flood["capacity"]
    if not capacity:
        sys.exit("detection never had a backlog: raise --flood")
    sustained = trial(round(args.share * capacity, -2), args.seconds, args)
    print(f"sustained trial: {sustained}", flush=True)
    peer, per_flow = (0.0, 2.0) if args.no_peer else nfcapd_peer(feed, 6)
    rpf = sustained["records_per_flow"] or per_flow

    def line(name: str, t: dict[str, Any]) -> str:
        caught = "no" if t["caught_up"] is None else f"{t['caught_up']:.1f} s"
        return (
            f"{name:<10} {t['rate']:>9,.0f} {t['achieved']:>10,.0f} {t['dropped']:>8,.0f} "
            f"{t['skipped']:>9,.0f} {caught:>10} {t['rss_peak']:>8,.0f}  "
            f"{'yes' if t['lossless'] else 'no'}"
        )

    print()
    print(
        f"{'trial':<10} {'target':>9} {'flows/s':>10} {'dropped':>8} {'skipped':>9} "
        f"{'caught up':>10} {'RSS MiB':>8}  lossless"
    )
    print(line("flood", flood))
    print(line("sustained", sustained))
    print()
    print(f"detection capacity (backlogged):    {capacity:>10,.0f} flows/s")
    if sustained["lossless"]:
        print(
            f"flowhawk serve, lossless:           {sustained['achieved']:>10,.0f} flows/s "
            f"({sustained['achieved'] * rpf:,.0f} records/s)"
        )
    else:
        print("flowhawk serve: the sustained trial lost data; lower --share")
    if peer:
        print(f"nfcapd lossless (receive + store):  {peer / per_flow:>10,.0f} flows/s "
              f"({peer:,.0f} records/s)")  # fmt: skip
        if sustained["lossless"]:
            print(
                f"ratio flowhawk serve / nfcapd:      {sustained['achieved'] * rpf / peer:>10.3f}"
            )


if __name__ == "__main__":
    main()
