"""A deterministic, vectorized simulator of a small network's flows.

Traffic is described as *streams*: a set of clients talking to a set of servers on
one service, at a rate per client per hour that follows a working-day profile, or
at a fixed period with jitter (heartbeats, beacons). Each stream becomes arrays of
flows with numpy in one go, so millions of flows take seconds. The same seed gives
the same flows, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.schema import RAW_FLOW_SCHEMA, conform

HOUR = 3600.0
#: Relative activity by hour of day for office traffic (peak 1.0).
OFFICE_DAY = np.array(
    [
        0.05,
        0.04,
        0.04,
        0.04,
        0.05,
        0.08,
        0.2,
        0.5,
        0.9,
        1.0,
        1.0,
        0.95,
        0.8,
        0.95,
        1.0,
        1.0,
        0.9,
        0.7,
        0.4,
        0.2,
        0.12,
        0.1,
        0.08,
        0.06,
    ]
)
ALWAYS = np.ones(24)


@dataclass
class Stream:
    """One kind of traffic between clients and servers.

    The fields after ``answered`` extend the model for longer, more realistic
    simulations (:mod:`flowhawk.sim`); left at their defaults they change nothing, so
    existing scenarios give the same flows, byte for byte.
    """

    name: str
    clients: list[str]
    servers: list[str]
    port: int
    proto: int  # 6 tcp, 17 udp, 1 icmp
    rate: float = 0.0  # flows per client per hour at peak (Poisson), or...
    period: float = 0.0  # ...a fixed period in seconds (heartbeats, beacons)
    jitter: float = 0.0  # period jitter, fraction of the period
    profile: np.ndarray = field(default_factory=lambda: OFFICE_DAY)
    zipf: float = 0.0  # >0: servers chosen with Zipf popularity (browsing)
    start: float = 0.0  # seconds from the scenario start
    stop: float | None = None
    req_bytes: tuple[float, float] = (6.0, 0.6)  # lognormal (mu, sigma) of client bytes
    resp_bytes: tuple[float, float] = (8.0, 1.0)
    duration: tuple[float, float] = (-1.0, 1.0)  # lognormal seconds
    service: str | None = None
    state: str = "SF"
    answered: float = 1.0  # fraction of flows the server answers
    # -- extensions ---------------------------------------------------------------
    #: clients x hours (from the scenario start) multiplier of ``rate``, replacing
    #: ``profile`` (per-user office hours, days off); periodic streams only send in
    #: hours where it is > 0 (a workstation's NTP while it is on).
    activity: np.ndarray | None = None
    #: ``rate`` is for the whole stream, each flow's client drawn with Zipf exponent
    #: ``client_zipf`` (0: uniform): many external clients of one public server.
    pooled: bool = False
    client_zipf: float = 0.0
    burst: float = 0.0  # mean extra flows per event (geometric): a page load's connections
    burst_span: float = 3.0  # mean seconds between an event's first flow and the others
    personal: int = 0  # >0: each client has this many servers of its own...
    personal_share: float = 0.0  # ...that get this share of its flows
    #: "simple": counters as the demo always made them; "real": req/resp are payload
    #: bytes, packets are segments plus handshake and delayed ACKs (TCP), one datagram
    #: per 1472 bytes (UDP, ICMP), and IP bytes include the headers.
    model: str = "simple"
    client_port: int | None = None  # fixed client port (NTP 123); None: ephemeral
    throughput: float = 0.0  # "real": bytes/s a transfer moves at (adds to durations)
    syn_tries: int = 2  # "real": packets of an unanswered TCP attempt
    #: periodic: first flow ``phase`` seconds after the stream starts, each client
    #: offset by a fixed uniform draw up to ``phase_spread`` (nightly jobs at 01:30);
    #: None: a random phase per client, as the demo always did.
    phase: float | None = None
    phase_spread: float = 0.0
    #: "simple": >0 sets the mean IP bytes per packet (Tor's cell-sized TLS records)
    #: instead of the default segment size.
    packet_bytes: float = 0.0


MSS = 1448  # TCP payload per segment (1500 MTU, timestamps option)
TCP_HDR = 52  # IP + TCP header bytes with timestamps
UDP_PAYLOAD = 1472
DGRAM_HDR = 28  # IP + UDP (or ICMP) header bytes


def _times(
    s: Stream, t0: float, t1: float, rng: np.random.Generator, n_clients: int
) -> tuple[np.ndarray, np.ndarray]:
    """(times, client index) of a stream's flows between t0 and t1 (seconds)."""
    if s.period > 0:
        if s.phase is None:
            base = np.arange(t0 + rng.uniform(0, s.period), t1, s.period)
            times = np.concatenate([base + rng.uniform(0, s.period, 1) for _ in range(n_clients)])
        else:
            base = np.arange(t0 + s.phase, t1, s.period)
            offsets = rng.uniform(0, s.phase_spread, n_clients)
            times = (offsets[:, None] + base[None, :]).ravel()
        who = np.repeat(np.arange(n_clients), len(base))
        times = times + rng.normal(0.0, s.jitter * s.period, len(times))
        keep = (times >= t0) & (times < t1)
        times, who = times[keep], who[keep]
        if s.activity is not None:
            on = s.activity[who, (times // HOUR).astype(np.int64)] > 0
            times, who = times[on], who[on]
        return times, who
    hours = np.arange(np.floor(t0 / HOUR), np.ceil(t1 / HOUR))
    if s.activity is not None:
        lam = s.rate * s.activity[: (1 if s.pooled else n_clients), hours.astype(np.int64)]
        counts = rng.poisson(lam)
    else:
        lam = s.rate * s.profile[(hours % 24).astype(int)]
        counts = rng.poisson(np.outer(np.ones(1 if s.pooled else n_clients), lam))
    rows = counts.shape[0]
    total = int(counts.sum())
    who = np.repeat(np.repeat(np.arange(rows), len(hours)), counts.ravel())
    hour_of = np.repeat(np.tile(hours, rows), counts.ravel())
    times = (hour_of + rng.random(total)) * HOUR
    if s.pooled:
        who = _zipf_pick(rng, n_clients, s.client_zipf, total)
    if s.burst > 0:
        extra = rng.geometric(1.0 / (1.0 + s.burst), total) - 1
        idx = np.repeat(np.arange(total), 1 + extra)
        first = np.ones(len(idx), dtype=bool)
        first[1:] = idx[1:] != idx[:-1]
        offsets = np.where(first, 0.0, rng.exponential(s.burst_span, len(idx)))
        times, who = times[idx] + offsets, who[idx]
    keep = (times >= t0) & (times < t1)
    return times[keep], who[keep]


def _zipf_pick(rng: np.random.Generator, n: int, exponent: float, size: int) -> np.ndarray:
    if exponent <= 0:
        return rng.integers(0, n, size)
    ranks = np.arange(1, n + 1, dtype=float) ** -exponent
    return rng.choice(n, size, p=ranks / ranks.sum())


def _counters(
    s: Stream, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(src_bytes, dst_bytes, src_pkts, dst_pkts, duration, answered) of n flows."""
    low = 1 if s.model == "real" else 40  # "real" sizes are payload, e.g. a 12-byte Modbus poll
    req = np.maximum(low, rng.lognormal(*s.req_bytes, n)).astype(np.int64)
    answered = rng.random(n) < s.answered
    resp = np.where(answered, np.maximum(low, rng.lognormal(*s.resp_bytes, n)), 0).astype(np.int64)
    dur = np.where(answered, rng.lognormal(*s.duration, n), 0.0)
    if s.model != "real":
        mtu = int(s.packet_bytes) or (1200 if s.proto == 6 else 512)
        src_pkts = req // mtu + (3 if s.proto == 6 else 1)
        dst_pkts = np.where(answered, resp // mtu + (2 if s.proto == 6 else 1), 0)
        return req, resp, src_pkts, dst_pkts, dur, answered
    src_bytes, dst_bytes, src_pkts, dst_pkts = packets(s.proto, req, resp, answered, s.syn_tries)
    if s.proto == 6:
        dur = np.where(answered, dur, float(2 ** (s.syn_tries - 1) - 1))
    if s.throughput > 0:
        dur = dur + np.where(answered, (req + resp) / s.throughput, 0.0)
    return src_bytes, dst_bytes, src_pkts, dst_pkts, dur, answered


def packets(
    proto: int, req: np.ndarray, resp: np.ndarray, answered: np.ndarray, syn_tries: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(src_bytes, dst_bytes, src_pkts, dst_pkts) of flows carrying ``req`` and ``resp``
    payload bytes: TCP segments plus handshake, FIN and delayed ACKs (an unanswered
    attempt is ``syn_tries`` SYNs), or one datagram per 1472 bytes; IP bytes."""
    req, resp = np.asarray(req, dtype=np.int64), np.asarray(resp, dtype=np.int64)
    if proto == 6:
        seg_c, seg_s = -(-req // MSS), np.where(answered, -(-resp // MSS), 0)
        src_pkts = np.where(answered, seg_c + (seg_s + 1) // 2 + 3, syn_tries)
        dst_pkts = np.where(answered, seg_s + (seg_c + 1) // 2 + 2, 0)
        src_bytes = np.where(answered, req + TCP_HDR * src_pkts, 60 * src_pkts)
        dst_bytes = np.where(answered, resp + TCP_HDR * dst_pkts, 0)
    else:
        src_pkts = np.maximum(1, -(-req // UDP_PAYLOAD))
        dst_pkts = np.where(answered, np.maximum(1, -(-resp // UDP_PAYLOAD)), 0)
        src_bytes = req + DGRAM_HDR * src_pkts
        dst_bytes = np.where(answered, resp + DGRAM_HDR * dst_pkts, 0)
    return src_bytes, dst_bytes, src_pkts, dst_pkts


def _stream_frame(s: Stream, hours: float, rng: np.random.Generator) -> pl.DataFrame | None:
    """The flows of one stream (times in seconds from the scenario start), or None."""
    t0 = max(0.0, s.start)
    t1 = hours * HOUR if s.stop is None else min(hours * HOUR, s.stop)
    if t1 <= t0:
        return None
    times, who = _times(s, t0, t1, rng, len(s.clients))
    n = len(times)
    if n == 0:
        return None
    if s.zipf > 0:
        ranks = np.arange(1, len(s.servers) + 1, dtype=float) ** -s.zipf
        server = rng.choice(len(s.servers), n, p=ranks / ranks.sum())
    else:
        server = rng.integers(0, len(s.servers), n)
    if s.personal > 0:
        own = rng.integers(0, len(s.servers), (len(s.clients), s.personal))
        mine = rng.random(n) < s.personal_share
        server = np.where(mine, own[who, rng.integers(0, s.personal, n)], server)
    src_bytes, dst_bytes, src_pkts, dst_pkts, dur, answered = _counters(s, rng, n)
    if s.proto == 1:
        src_port = np.zeros(n, int)
    elif s.client_port is not None:
        src_port = np.full(n, s.client_port)
    else:
        src_port = rng.integers(49152, 65536, n)
    return pl.DataFrame(
        {
            "t": times,
            "dur": dur,
            "src_ip": pl.Series(s.clients, dtype=pl.String).gather(who),
            "dst_ip": pl.Series(s.servers, dtype=pl.String).gather(server),
            "src_port": src_port,
            "dst_port": np.full(n, s.port),
            "proto": np.full(n, s.proto),
            "src_bytes": src_bytes,
            "dst_bytes": dst_bytes,
            "src_pkts": src_pkts,
            "dst_pkts": dst_pkts,
            "service": pl.repeat(s.service, n, dtype=pl.String, eager=True),
            "state": pl.Series(["S0", s.state]).gather(answered.astype(np.int64)),
        }
    )


def generate_frame(
    streams: list[Stream], start: datetime, hours: float, seed: int | np.random.Generator
) -> pl.DataFrame:
    """Like :func:`generate`, as a Polars frame that keeps each flow's ``stream`` name."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    frames = []
    for s in streams:
        df = _stream_frame(s, hours, rng)
        if df is not None:
            frames.append(df.with_columns(stream=pl.lit(s.name)))
    df = pl.concat(frames).sort("t", maintain_order=True)
    epoch_us = int(start.timestamp() * 1_000_000)
    start_us = (pl.col("t") * 1e6).cast(pl.Int64) + epoch_us
    return df.with_columns(
        ts_start=start_us.cast(pl.Datetime("us", "UTC")),
        ts_end=(start_us + (pl.col("dur") * 1e6).cast(pl.Int64)).cast(pl.Datetime("us", "UTC")),
        orient=pl.lit("start"),
        uni=pl.lit(False),
        sampling=pl.lit(1),
        input=pl.lit("simulator"),
        flow_id=pl.int_range(pl.len()).cast(pl.String),
    ).drop("t", "dur")


def generate(streams: list[Stream], start: datetime, hours: float, seed: int) -> pa.Table:
    """Raw flows (``RAW_FLOW_SCHEMA``) of all streams over ``hours`` from ``start``."""
    df = generate_frame(streams, start, hours, seed).drop("stream")
    return conform(df.to_arrow(), RAW_FLOW_SCHEMA)
